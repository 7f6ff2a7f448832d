"""`plan`'s text says what it does not count and does not write "1 bytes"."""
import os

from neurocompile.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plan_text_grammar_and_omissions(tmp_path, capsys):
    art = tmp_path / "d.loihi2"
    assert cli(["export", os.path.join(ROOT, "examples", "digits", "ckpt.pt"), "-o", str(art)]) == 0
    capsys.readouterr()
    assert cli(["plan", str(art)]) == 0
    out = capsys.readouterr().out
    assert "1 bytes" not in out and "host traffic: 1 byte per step across the chip boundary" in out
    assert "no published figure for the host <-> chip link" in out
    assert "microcode, synapse index and routing tables (which share a core's memory) are not" in out
