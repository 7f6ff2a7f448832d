"""`validate --html` without Lava: the resources as real tables (no flattened JSON paths), provenance
without an absent Lava version or Python dicts, and headings that name only the runs that ran."""
import os

from neurocompile.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")


def test_html_report_without_lava_reads_as_tables(tmp_path):
    art, page = tmp_path / "d.loihi2", tmp_path / "r.html"
    assert cli(["export", DIGITS, "-o", str(art)]) == 0
    assert cli(["validate", DIGITS, str(art), "--data", "digits", "--max-samples", "8", "--lava-samples", "0",
                "--activity-samples", "2", "--html", str(page)]) == 0
    text = page.read_text()
    assert "worst_case_per_step /" not in text and "per_sample / accumulates" not in text
    assert "<th>accumulates</th>" in text and "worst case per step" in text
    assert "Lava (lava-nc)</td><td class='l' data-field='Lava (lava-nc)'><code>None" not in text and "{&#x27;" not in text and "{'" not in text
    assert "vs Lava" not in text and "One sample: float vs integer<" in text
    assert "on Loihi 2</h2>" not in text and "45 nm estimate" in text
