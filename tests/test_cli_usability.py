"""What a new user meets: --version, defaults in every --help, a default output that cannot replace
another checkpoint's artifact, options of the other model family refused with the reason, --seq-len
for files that store no length, the warning when the input format is assumed, one line naming the
'lava' extra when Lava is missing, and train's per-epoch state with a bit-exact --resume."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import neurocompile
from neurocompile.artifact import load_program
from neurocompile.cli import HelpFormatter, build_parser, main as cli
from neurocompile.input_format import InputFormat
from neurocompile.models import torchzip, train as train_module
from neurocompile.models.checkpoint import build_model, load_checkpoint
from interrupt import run_stopped_after_epoch, run_stopped_mid_epoch
from test_hostile_input import one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
PSPIKE = os.path.join(ROOT, "examples", "pspikessm-digits", "ckpt.pt")
OFFICIAL = os.path.join(ROOT, "tests", "fixtures", "official")
# the authors' SpikingSSM files this compiler lowers (the prenorm LayerNorm one is refused by design)
OFFICIAL_SPIKINGSSM = ("spikingssm_causal_s4d_linear", "spikingssm_bidir_prenorm_batchnorm",
                       "spikingssm_bidir_diagb_embedding_sharedvth")


def usage_error(capsys, argv, *words):
    """argparse's refusal: exit 2, the reason on the last line."""
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    for w in words:
        assert w in err.splitlines()[-1], (w, err)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"neurocompile {neurocompile.__version__}"


def _parsers():
    top = build_parser()
    sub = next(a for a in top._actions if a.dest == "command")
    yield "neurocompile", top
    for name, parser in sub.choices.items():
        yield name, train_module.build_parser() if name == "train" else parser


@pytest.mark.parametrize("name,parser", list(_parsers()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_help_states_every_default(name, parser):
    assert parser.formatter_class is HelpFormatter, name
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        d = action.default
        if not action.option_strings or d is None or d is False or d == "==SUPPRESS==" or action.dest == "help":
            continue
        assert re.search(rf"default:? {re.escape(str(d))}\b", text), (name, action.dest, d)


def test_default_output_sits_next_to_its_checkpoint_and_never_replaces_another(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(DIGITS, tmp_path / folder / "ckpt.pt")
        assert cli(["export", str(tmp_path / folder / "ckpt.pt")]) == 0
        assert f"wrote {tmp_path / folder / 'ckpt.loihi2'}" in capsys.readouterr().out
    first = (tmp_path / "a" / "ckpt.loihi2").read_bytes()
    assert first == (tmp_path / "b" / "ckpt.loihi2").read_bytes()
    # another checkpoint whose default output is the same file: refused, the artifact untouched
    shutil.copy(DIGITS, tmp_path / "a" / "ckpt.ckpt")
    one_line_error(capsys, cli(["export", str(tmp_path / "a" / "ckpt.ckpt")]), "ckpt.loihi2",
                   "is not ckpt.ckpt's artifact (from ckpt.pt)", "-o")
    assert (tmp_path / "a" / "ckpt.loihi2").read_bytes() == first
    # the same checkpoint exported again replaces its own artifact
    assert cli(["export", str(tmp_path / "a" / "ckpt.pt")]) == 0
    # a file that is no artifact at all is not replaced either
    (tmp_path / "c").mkdir()
    shutil.copy(DIGITS, tmp_path / "c" / "ckpt.pt")
    (tmp_path / "c" / "ckpt.loihi2").write_bytes(b"notes")
    one_line_error(capsys, cli(["export", str(tmp_path / "c" / "ckpt.pt")]), "unreadable")
    assert (tmp_path / "c" / "ckpt.loihi2").read_bytes() == b"notes"


@pytest.mark.parametrize("argv,words", [
    (["--model", "pspikessm", "--shared-vth"], ["--shared-vth applies to --model spikingssm only"]),
    (["--model", "pspikessm", "--kernel", "diag_b"], ["--kernel applies to --model spikingssm only"]),
    (["--model", "pspikessm", "--kernel", "s4d"], ["--kernel applies to --model spikingssm only"]),
    (["--model", "pspikessm", "--neuron", "lif"], ["--neuron applies to --model spikingssm only"]),
    (["--n-ssm", "2"], ["--n-ssm applies to --model pspikessm only"]),
    (["--mc-passes", "4"], ["--mc-passes applies to --model pspikessm only"]),
    (["--causal"], ["--causal applies to --model pspikessm only"]),
])
def test_train_refuses_options_of_the_other_family(argv, words, tmp_path, capsys):
    usage_error(capsys, ["train", "--dataset", "digits", "--out", str(tmp_path), *argv], *words)
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def digits_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("usability") / "digits.loihi2"
    assert cli(["export", DIGITS, "-o", str(out)]) == 0
    return str(out)


def test_options_that_do_not_apply_are_refused(digits_artifact, capsys):
    one_line_error(capsys, cli(["simulate", digits_artifact, "--data", "digits", "--engine", "emulator",
                                "--backend", "hw"]), "--backend applies to --engine lava only")
    one_line_error(capsys, cli(["simulate", digits_artifact, "--data", "digits", "--engine", "emulator",
                                "--backend", "sim"]), "--backend applies to --engine lava only")
    for extra in (["--mc-passes", "8"], ["--seed", "3"]):
        one_line_error(capsys, cli(["validate", DIGITS, digits_artifact, "--data", "digits", "--lava-samples", "0",
                                    *extra]), f"{extra[0]} applies to stochastic spikes (P-SpikeSSM) only", "spikingssm")


# ------------------------------------------------------------------------------ sequence length
@pytest.mark.parametrize("name", OFFICIAL_SPIKINGSSM)
def test_the_authors_files_export_with_seq_len_64(name, tmp_path, capsys):
    out = tmp_path / f"{name}.loihi2"
    assert cli(["export", os.path.join(OFFICIAL, name + ".ckpt"), "--seq-len", "64", "-o", str(out)]) == 0
    assert load_program(str(out)).seq_len == 64


def test_a_stored_length_must_agree_with_seq_len(tmp_path, capsys):
    path = os.path.join(OFFICIAL, "spikingssm_bidir_diagb_embedding_sharedvth.ckpt")    # stores L = 64
    one_line_error(capsys, cli(["export", path, "--seq-len", "65", "-o", str(tmp_path / "x.loihi2")]),
                   "stores sequence length 64; 65 was asked for")
    one_line_error(capsys, cli(["export", DIGITS, "--seq-len", "32", "-o", str(tmp_path / "x.loihi2")]),
                   "stores sequence length 64; 32 was asked for")
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def no_length_file(tmp_path_factory):
    """The authors' causal S4D fixture re-saved in their layout under a dataset of no known length,
    without __l_max (what their s4 trainer saves for any dataset but sMNIST / sCIFAR)."""
    from official_layout import write_official

    kind, config, sd, _ = load_checkpoint(os.path.join(OFFICIAL, "spikingssm_causal_s4d_linear.ckpt"))
    path = tmp_path_factory.mktemp("nolength") / "digits_official.ckpt"
    write_official(str(path), build_model(config, sd, kind), dataset={"_name_": "digits"})
    return str(path)


def test_a_file_without_a_length_is_refused_with_the_option_named(no_length_file, tmp_path, capsys):
    one_line_error(capsys, cli(["export", no_length_file, "-o", str(tmp_path / "x.loihi2")]),
                   "cannot tell the sequence length", "s4 trainer drops __l_max", "--seq-len L")
    assert not os.listdir(tmp_path)


def test_seq_len_exports_it_and_validate_reads_the_length_from_the_artifact(no_length_file, tmp_path, capsys):
    out = str(tmp_path / "x.loihi2")
    assert cli(["export", no_length_file, "--seq-len", "64", "-o", out]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("neurocompile: warning: "), captured.err
    program = load_program(out)
    assumed = InputFormat.from_dict(program.model["input"]).describe()
    assert f"does not say how its inputs were scaled (dataset 'digits'): assumed {assumed}" in warning[0]
    assert "--input-range" in warning[0] and "--input-levels" in warning[0]
    assert program.seq_len == 64
    assert cli(["validate", no_length_file, out, "--data", "digits", "--lava-samples", "0", "--max-samples", "40"]) == 0
    assert "Parity on 40 samples" in capsys.readouterr().out


def test_no_warning_when_the_format_is_stated_or_known(no_length_file, tmp_path, capsys):
    assert cli(["export", no_length_file, "--seq-len", "64", "--input-levels", "16", "-o", str(tmp_path / "a")]) == 0
    assert cli(["export", DIGITS, "-o", str(tmp_path / "b")]) == 0                        # ours: levels recorded
    assert cli(["export", os.path.join(OFFICIAL, "spikingssm_causal_s4d_linear.ckpt"),    # sMNIST: 8-bit pixels
                "-o", str(tmp_path / "c")]) == 0
    assert "warning" not in capsys.readouterr().err


# --------------------------------------------------------------------------------- Lava missing
def test_lava_commands_name_the_extra_when_lava_is_missing(digits_artifact, tmp_path):
    """Lava made unimportable (as on Python 3.12+): the defaults choose the emulator and no Lava parity,
    each in one stderr line saying why; an explicit Lava request is one line naming the extra and Python
    3.10; the emulator and float-vs-integer validation still work."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "lava.py").write_text("raise ImportError('lava blocked for this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    run = lambda *a: subprocess.run([sys.executable, "-m", "neurocompile", *a], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    why = "Lava is not installed; it needs Python 3.10 and the 'lava' extra" + ("" if here == "3.10" else
                                                                              f", and this is Python {here}")
    for args, option in ((["simulate", digits_artifact, "--data", "digits", "--engine", "lava"], "simulate --engine lava"),
                         (["validate", DIGITS, digits_artifact, "--data", "digits", "--lava-samples", "16"],
                          "Lava parity on 16 samples")):
        r = run(*args)
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"neurocompile: error: {option}: "), r.stderr
        assert "Lava runs need the 'lava' extra: pip install 'neurocompile[lava]' (Python 3.10 only" in r.stderr
        assert ("extra installs nothing of Lava" in r.stderr) == (here != "3.10"), r.stderr
    r = run("simulate", digits_artifact, "--data", "digits")
    assert r.returncode == 0 and "sample 0: label 0, predicted 0" in r.stdout, r.stderr
    assert r.stderr == f"neurocompile: --engine auto: emulator ({why})\n", r.stderr
    r = run("simulate", digits_artifact, "--data", "digits", "--backend", "hw")
    assert r.returncode == 2 and "--engine auto chose the emulator (Lava is not installed" in r.stderr, r.stderr
    report = tmp_path / "r.json"
    r = run("validate", DIGITS, digits_artifact, "--data", "digits", "--max-samples", "32", "--activity-samples", "0",
            "--json", str(report))
    assert r.returncode == 0 and "integer" in r.stdout, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("neurocompile")]      # beside progress bars
    assert lines == [f"neurocompile: --lava-samples auto: 0 ({why})"], r.stderr
    saved = json.loads(report.read_text())
    assert saved["lava_samples"] == 0 and saved["lava_samples_auto"] == f"--lava-samples auto: 0 ({why})"
    r = run("simulate", digits_artifact, "--data", "digits", "--engine", "emulator")
    assert r.returncode == 0 and "sample 0: label 0, predicted 0" in r.stdout and r.stderr == "", r.stderr


@pytest.mark.lava
def test_with_lava_the_defaults_are_lava(digits_artifact, tmp_path, capsys):
    """Where Lava imports, simulate runs on Lava and validate compares 16 samples (here all 4) on it,
    each saying so in one stderr line."""
    assert cli(["simulate", digits_artifact, "--data", "digits"]) == 0
    out = capsys.readouterr()
    assert "sample 0: label 0, predicted 0" in out.out
    assert out.err.splitlines()[0] == "neurocompile: --engine auto: lava (Lava runs here)", out.err
    report = tmp_path / "r.json"
    assert cli(["validate", DIGITS, digits_artifact, "--data", "digits", "--max-samples", "4", "--activity-samples", "0",
                "--json", str(report)]) == 0
    assert capsys.readouterr().err.splitlines()[0] == "neurocompile: --lava-samples auto: 16 (Lava runs here)"
    saved = json.loads(report.read_text())
    assert saved["lava_samples"] == 4 and saved["lava_bit_exact"] is True


# -------------------------------------------------------------------------------- train --resume
TINY = ["--dataset", "digits", "--d-model", "8", "--d-state", "4", "--n-layers", "1", "--epochs", "3",
        "--max-train", "96", "--max-test", "16", "--batch-size", "32", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("family", ["spikingssm", "pspikessm"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(family, tmp_path, monkeypatch, capsys):
    """P-SpikeSSM samples its spikes from torch's RNG and SpikingSSM shuffles with a generator:
    both must be restored for the resumed run to end on the same weights, bit for bit."""
    argv = TINY + (["--model", "pspikessm", "--mc-passes", "2"] if family == "pspikessm" else [])
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert cli(["train", *argv, "--out", whole]) == 0
    run_stopped_after_epoch(monkeypatch, 2, lambda: cli(["train", *argv, "--out", part]))
    assert sorted(os.listdir(part)) == [train_module.STATE_FILE]         # no checkpoint yet, no temp file
    assert cli(["train", *argv, "--out", part, "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    (_, _, a, meta_a), (_, _, b, meta_b) = (load_checkpoint(os.path.join(d, "ckpt.pt")) for d in (whole, part))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert meta_a["metrics"]["train_loss"] == meta_b["metrics"]["train_loss"]


@pytest.mark.parametrize("family", ["spikingssm", "pspikessm"])
def test_resume_mid_epoch_gives_the_weights_of_an_uninterrupted_run(family, tmp_path, monkeypatch, capsys):
    """An epoch of a deep model takes hours on a CPU, so the state is also saved within an epoch:
    resumed after 2 of epoch 2's 3 batches, the run ends on the uninterrupted run's weights and loss."""
    argv = TINY + (["--model", "pspikessm", "--mc-passes", "2"] if family == "pspikessm" else [])
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert cli(["train", *argv, "--out", whole]) == 0
    run_stopped_mid_epoch(monkeypatch, 2, 2, lambda: cli(["train", *argv, "--out", part]))
    state = torchzip.plain(torchzip.load(os.path.join(part, train_module.STATE_FILE)))
    assert (state["epoch"], state["step"], state["partial_count"]) == (1, 2, 64)
    assert cli(["train", *argv, "--out", part, "--resume"]) == 0
    assert "after epoch 1/3 and 2/3 batches of epoch 2" in capsys.readouterr().out
    (_, _, a, meta_a), (_, _, b, meta_b) = (load_checkpoint(os.path.join(d, "ckpt.pt")) for d in (whole, part))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert meta_a["metrics"]["train_loss"] == meta_b["metrics"]["train_loss"]


def test_resume_refuses_other_options_and_a_missing_state(tmp_path, capsys):
    out = str(tmp_path / "run")
    one_line_error(capsys, cli(["train", *TINY, "--out", out, "--resume"]), "train-state.pt",
                   "no saved training state")
    assert cli(["train", *TINY, "--epochs", "1", "--out", out]) == 0
    capsys.readouterr()
    one_line_error(capsys, cli(["train", *TINY, "--epochs", "1", "--lr", "0.02", "--out", out, "--resume"]),
                   "saved by a run with --lr 0.01, not 0.02")


@pytest.mark.parametrize("option, value, bound", [
    ("--seed", "4294967296", "0..4294967295"),          # numpy's global seed takes 32 bits
    ("--seed", "-1", "0..4294967295"),
    ("--epochs", "0", "1..100000"),
    ("--mc-passes", "0", "1..1000"),
    ("--lr", "nan", "0..10"),
    ("--dropout", "1", "0..0.99"),
    ("--d-model", "0", "1..4096"),
])
def test_train_counts_have_stated_bounds(tmp_path, capsys, option, value, bound):
    """Every number train takes is refused outside its stated range with one line, before any work
    (no folder made); the bound is in --help too."""
    out = str(tmp_path / "run")
    extra = ["--model", "pspikessm"] if option == "--mc-passes" else []
    with pytest.raises(SystemExit) as exc:              # argparse's usage error, as for every command
        cli(["train", *TINY, *extra, option, value, "--out", out])
    err = one_line_error(capsys, exc.value.code, option, bound)
    assert "neurocompile train --help" in err and not os.path.exists(out)
    stated = "0..2**32-1" if option == "--seed" else bound
    assert stated in " ".join(train_module.build_parser().format_help().split())


def test_train_largest_seed_trains(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli(["train", *TINY, "--epochs", "1", "--seed", str(2 ** 32 - 1), "--out", out]) == 0
    assert os.path.exists(os.path.join(out, "ckpt.pt"))


def test_ctrl_c_before_the_handlers_hold_is_one_line(monkeypatch, capsys):
    """A Ctrl-C that lands before the command's own handlers are set (the very first instructions of
    main) still ends as 'neurocompile: interrupted', exit 130, not a traceback."""
    import neurocompile.cli as cli_module

    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_module, "_main", interrupted)
    assert cli_module.main(["inspect", "x"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["neurocompile: interrupted"]
