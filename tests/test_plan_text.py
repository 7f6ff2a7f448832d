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
    assert "(1 chip): fits; needs" in out                      # every layer on chip: the input source alone is on the host
    assert "1 bytes" not in out and "host traffic: 1 byte per step across the chip boundary" in out
    assert "no published figure for the host <-> chip link" in out
    assert "microcode, synapse index and routing tables (which share a core's memory) are not" in out


def test_plan_says_which_layers_run_on_the_host(tmp_path, capsys):
    """A convolution too long for the chip's delays and memory stays on the host: 'fits' says so."""
    import dataclasses

    from neurocompile.plan_report import plan_dict, plan_text
    from neurocompile.targets.loihi2.plan import plan_program
    from neurocompile.targets.loihi2.target import BUDGETS, LOIHI2
    from neurocompile import load_program
    art = tmp_path / "d.loihi2"
    assert cli(["export", os.path.join(ROOT, "examples", "digits", "ckpt.pt"), "-o", str(art)]) == 0
    program = load_program(str(art))
    tiny = dataclasses.replace(BUDGETS, memory_per_core_bytes=1024)     # no SSM convolution fits a core
    plan = plan_program(program, target=dataclasses.replace(LOIHI2, budgets=tiny)).to_dict()
    host = [p["name"] for p in plan["processes"] if p["placement"] == "host" and p["layer"] is not None]
    assert host, plan["processes"]
    text = plan_text(plan, "d.loihi2")
    assert f"fits, with {len({p['layer'] for p in plan['processes'] if p['name'] in host})} layer" in text
    assert all(name in text.splitlines()[1] for name in host)
    assert plan_dict(program)["processes"]            # the default budgets still plan it
