"""The documentation site: `mkdocs build --strict` (a warning fails the build) and its API reference,
generated from the docstrings, lists every name `neurocompile` exports."""
from __future__ import annotations

import html as htmllib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import neurocompile

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("mkdocs", reason="the 'docs' extra is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_site_builds_strict(site):
    for page in ("index.html", "install/index.html", "commands/index.html", "api/index.html"):
        assert (site / page).is_file(), page


def test_api_reference_lists_every_export_from_docstrings(site):
    html = (site / "api" / "index.html").read_text()
    for name in neurocompile.__all__:
        if name == "__version__":
            continue
        # mkdocstrings gives each documented object an anchor with its dotted path
        assert re.search(r'id="neurocompile\.[a-z_.]*\b' + re.escape(name) + '"', html), name
        # and renders the first line of its docstring
        doc = (getattr(neurocompile, name).__doc__ or "").strip().splitlines()
        assert doc, f"{name} has no docstring"
        assert not doc[0].startswith(name + "("), f"{name}: only the dataclass's generated signature"
        text = " ".join(htmllib.unescape(re.sub(r"<[^>]+>", "", html)).split())
        first = " ".join(re.sub(r"`+", "", doc[0]).split()[:4])
        assert first in text, (name, first)


def test_no_export_shares_its_name_with_a_submodule():
    """Importing neurocompile.X binds the module X on the package, hiding an export named X (whose docs then
    show the module's): `layer_sensitivity` once was both."""
    import pkgutil
    assert not {m.name for m in pkgutil.iter_modules(neurocompile.__path__)} & set(neurocompile.__all__)


TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
EXPECT = re.compile(r"<!-- expect: (.*?) -->")   # a line the commands' output must carry


@pytest.mark.parametrize("page", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_commands_run(page, tmp_path):
    """Every ```bash block of a tutorial runs, in order, in a temp dir holding the repository's
    examples and the authors' fixture files, with this Python's `neurocompile` first on PATH (a block
    whose first line is `# lava` or `# lava ray` needs those packages: the Python 3.10 suite runs it)."""
    blocks = BASH_BLOCK.findall(page.read_text())
    assert blocks, page
    needs = {word for b in blocks if b.lstrip().startswith("# lava") for word in b.lstrip().splitlines()[0][1:].split()}
    for package in sorted(needs):
        pytest.importorskip(package)
    shutil.copytree(ROOT / "examples" / "digits", tmp_path / "examples" / "digits")
    shutil.copytree(ROOT / "tests" / "fixtures" / "official", tmp_path / "tests" / "fixtures" / "official")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + "\n".join(blocks)
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{page.name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    expected = EXPECT.findall(page.read_text())
    assert expected, f"{page.name} states no expected output"
    for text in expected:
        assert text in proc.stdout + proc.stderr, (page.name, text)
