"""Errors that say the real problem: a mistyped option is refused (no abbreviations) with the closest
option and the subcommand's own --help; export given an artifact says so; validate given another
checkpoint says that the pairing fails before any length it stores."""
import os

import pytest

from neurocompile.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
FASHION = os.path.join(ROOT, "examples", "fashion-mnist", "ckpt.pt")


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    path = tmp_path_factory.mktemp("msg") / "digits.loihi2"
    assert cli(["export", DIGITS, "-o", str(path)]) == 0
    return str(path)


@pytest.mark.parametrize("argv, closest", [
    (["simulate", "a.loihi2", "--data", "digits", "--engin", "emulator"], "--engine"),      # once an abbreviation
    (["validate", "a.pt", "a.loihi2", "--data", "digits", "--ray-adress", "x"], "--ray-address"),
    (["export", "a.pt", "--kernel-bit", "4"], "--kernel-bits"),
    (["inspect", "a.loihi2", "--bogus"], None),
    (["plan", "a.loihi2", "--jsn", "x"], "--json"),
    (["train", "--dataset", "digits", "--out", "o.pt", "--epoch", "1"], "--epochs"),
])
def test_a_mistyped_option_names_the_closest_and_the_subcommands_help(argv, closest, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("neurocompile: error: unrecognized arguments: "), err
    assert err[0].endswith(f"(see `neurocompile {argv[0]} --help`)"), err
    assert (f"(did you mean {closest}?)" in err[0]) if closest else "did you mean" not in err[0], err
    assert os.listdir(tmp_path) == []


def test_export_given_an_artifact_says_it_is_not_a_checkpoint(art, capsys, tmp_path):
    """Was "the default output exists and is not digits.loihi2's artifact"."""
    before = open(art, "rb").read()
    for extra in ([], ["-o", str(tmp_path / "again.loihi2")]):
        assert cli(["export", art, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"neurocompile: error: {art}: this is a .loihi2 artifact (written by export), not a checkpoint; "
                       "export the checkpoint it came from, or read it with `neurocompile inspect`"], err
    assert open(art, "rb").read() == before and os.listdir(tmp_path) == []


def test_validate_with_another_checkpoint_of_another_length_fails_on_the_pairing(art, capsys):
    """Fashion stores sequence length 784, the digits artifact 64: was "stores sequence length 784; 64 was
    asked for"; the pairing is what is wrong."""
    assert cli(["validate", FASHION, art, "--data", "digits", "--lava-samples", "0", "--max-samples", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"neurocompile: error: {art}: was not compiled from the weights in {FASHION} (their digests "
                   "differ)"], err
