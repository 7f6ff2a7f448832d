"""The HTML report in a real headless browser (Debian's `chromium`): it renders with no console
message and no request leaving the file.

Chromium's own background traffic (updates, accounts) is told apart from the page's by the
network-isolation key of each request in Chromium's net log: the page's requests carry the
`file://` key of the page.  A control page with a console error and a remote image checks that
the detector sees both, so the report's clean result cannot come from a blind detector."""
import json
import os
import shutil
import subprocess

import pytest

from neurocompile.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000"]


def render(page, tmp_path) -> tuple[list, list, str]:
    """(console lines, URLs the page requested beyond the file, rendered DOM) of ``page``."""
    net = tmp_path / f"{page.stem}.net.json"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / (page.stem + '.profile')}",
                           f"--log-net-log={net}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    requests = set()
    for event in json.loads(net.read_text())["events"]:
        params = event.get("params") or {}
        if "file://" in str(params.get("network_isolation_key", "")) and "url" in params:
            requests.add(params["url"])
    beyond = sorted(u for u in requests if not u.startswith(("file:", "data:")))
    return console, beyond, proc.stdout


def test_the_detector_sees_a_console_error_and_a_remote_request(tmp_path):
    bad = tmp_path / "control.html"
    bad.write_text('<html><body><img src="http://192.0.2.1/x.png">'
                   '<script>console.error("control-marker")</script></body></html>')
    console, beyond, _ = render(bad, tmp_path)
    assert any("control-marker" in line for line in console), console
    assert beyond == ["http://192.0.2.1/x.png"], beyond


def test_the_html_report_renders_clean_in_chromium(tmp_path):
    art, page = tmp_path / "d.loihi2", tmp_path / "report.html"
    assert cli(["export", DIGITS, "-o", str(art)]) == 0
    assert cli(["validate", DIGITS, str(art), "--data", "digits", "--max-samples", "8", "--lava-samples", "0",
                "--activity-samples", "2", "--html", str(page)]) == 0
    console, beyond, dom = render(page, tmp_path)
    assert console == [], console
    assert beyond == [], beyond
    # it rendered: the parity table and an embedded figure are in the live DOM
    assert "integer emulator" in dom and "<img" in dom and "data:image/png;base64," in dom
