"""What validate says about the accuracies: the --max-drop gate (exit 1 and one line when integer
accuracy falls more than POINTS below float; Monte-Carlo: on the 95 % interval of the difference of
the means) and the near-chance hint; train's time per epoch and its near-chance warning."""
import json
import math
import os

import pytest

from neurocompile.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
PSPIKE = os.path.join(ROOT, "examples", "pspikessm-digits", "ckpt.pt")
FAST = ["--data", "digits", "--max-samples", "64", "--activity-samples", "0", "--lava-samples", "0"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("verdict")
    exact, coarse, pspike = str(out / "d8.loihi2"), str(out / "d2.loihi2"), str(out / "p.loihi2")
    assert cli(["export", DIGITS, "-o", exact]) == 0
    assert cli(["export", DIGITS, "-o", coarse, "--kernel-bits", "2", "--weight-bits", "3"]) == 0   # 81 points lost
    assert cli(["export", PSPIKE, "-o", pspike]) == 0
    return exact, coarse, pspike


def test_max_drop_passes_when_the_integers_keep_the_accuracy(artifacts, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "r.json"
    assert cli(["validate", DIGITS, artifacts[0], *FAST, "--max-drop", "2", "--json", str(out)]) == 0
    gate = json.loads(out.read_text())["accuracy_gate"]
    assert gate["passed"] is True and gate["max_drop_points"] == 2 and gate["drop_points"] <= 2
    assert "--max-drop 2: passed: integer" in capsys.readouterr().out


def test_max_drop_fails_with_one_line_when_the_integers_lose_accuracy(artifacts, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "r.json"
    assert cli(["validate", DIGITS, artifacts[1], *FAST, "--max-drop", "2", "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    gate, acc = report["accuracy_gate"], report["accuracy"]
    assert gate["passed"] is False and gate["drop_points"] == pytest.approx(100 * (acc["float"] - acc["integer"]))
    assert gate["drop_points"] > 50
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("neurocompile")]
    assert len(err) == 1 and err[0].startswith("neurocompile: --max-drop 2: failed: integer "), err
    assert cli(["validate", DIGITS, artifacts[1], *FAST, "--max-drop", "100"]) == 0     # a limit it meets


def test_max_drop_monte_carlo_is_judged_on_the_interval_of_the_difference(artifacts, tmp_path):
    out = tmp_path / "r.json"
    assert cli(["validate", PSPIKE, artifacts[2], *FAST[:3], "32", *FAST[4:], "--mc-passes", "3",
                "--max-drop", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    gate, acc = report["accuracy_gate"], report["accuracy"]
    f, i = acc["float_per_pass"], acc["integer_per_pass"]
    var = lambda a: sum((v - sum(a) / len(a)) ** 2 for v in a) / (len(a) - 1)          # noqa: E731
    half = 100 * 1.96 * math.sqrt(var(f) / 3 + var(i) / 3)
    drop = 100 * (sum(f) / 3 - sum(i) / 3)
    assert gate["drop_points"] == pytest.approx(drop)
    assert gate["drop_interval_points"] == pytest.approx([drop - half, drop + half])
    assert gate["passed"] is (drop - half <= 5) and "low end" in gate["rule"]


def test_max_drop_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        cli(["validate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-drop POINTS" in text and "95 % interval of the difference of the per-pass means" in text


# ------------------------------------------------------------------------- near chance: train, validate
TINY = ["--dataset", "digits", "--d-model", "8", "--d-state", "4", "--n-layers", "1", "--epochs", "1",
        "--max-train", "64", "--max-test", "96", "--batch-size", "32", "--no-progress", "--device", "cpu"]


def test_a_model_near_chance_is_told_by_train_and_validate(tmp_path, capsys):
    """One epoch at learning rate 0 leaves the model at its random start: train prints its measured
    epoch time and expected total, then warns; validate hints that the float model is the problem."""
    from neurocompile.models.checkpoint import load_checkpoint
    out = str(tmp_path / "run")
    assert cli(["train", *TINY, "--lr", "0", "--out", out]) == 0
    printed = capsys.readouterr()
    assert "first epoch: " in printed.out and "s (measured here); expected for the 1 epoch(s) of this run: ~" \
        in printed.out and "(estimate: first epoch x epochs)" in printed.out
    acc = load_checkpoint(os.path.join(out, "ckpt.pt"))[3]["metrics"]["test_acc_lif"]
    assert acc <= 0.15, acc                        # chance 10 %: the rule's 5 points above it
    assert printed.err.count("neurocompile: warning: the final test accuracy") == 1
    assert f"{100 * acc:.2f} % is near chance (10.0 % with 10 classes) after 1 epoch(s): train longer" in printed.err
    art = str(tmp_path / "a.loihi2")
    assert cli(["export", os.path.join(out, "ckpt.pt"), "-o", art]) == 0
    capsys.readouterr()
    assert cli(["validate", os.path.join(out, "ckpt.pt"), art, *FAST]) == 0
    hints = [line for line in capsys.readouterr().err.splitlines() if "near chance" in line]
    assert len(hints) == 1 and hints[0].startswith("neurocompile: hint: the float model itself is near chance (")
    assert hints[0].endswith("with 10 classes): train it longer")


def test_a_trained_model_gets_no_hint(artifacts, capsys):
    capsys.readouterr()
    assert cli(["validate", DIGITS, artifacts[0], *FAST]) == 0
    assert "near chance" not in capsys.readouterr().err


def test_train_help_says_what_the_default_epochs_cost_and_reach(capsys):
    with pytest.raises(SystemExit):
        cli(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "digits, 40 epochs, 72 s, 97.8 % (exact LIF)" in text and "examples/*/TRAINING.md" in text
