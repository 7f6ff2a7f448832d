"""The authors'-checkpoint path on ListOps: an authors' ListOps-layout file stores L = 64, the built-in
``listops`` data is L = 128.  ``--seq-len`` generates the built-in data at the model's length; the
length-mismatch error says how (``--data listops --seq-len 64``, or an .npz of the model's length);
the .npz recipe gives the same samples."""
import json
import os

import numpy as np
import pytest

from neurocompile.cli import main as cli
from neurocompile.listops import LISTOPS_SMALL, PAD_ID, listops_small, load_listops
from test_hostile_input import one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTOPS_L64 = os.path.join(ROOT, "tests", "fixtures", "official", "spikingssm_bidir_diagb_embedding_sharedvth.ckpt")
EMULATOR = ["--engine", "emulator"]                   # no "--engine auto" line beside the one-line errors


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("listops") / "l64.loihi2")
    assert cli(["export", LISTOPS_L64, "-o", out]) == 0
    return out


def test_the_preset_at_another_length():
    assert listops_small() == LISTOPS_SMALL and listops_small(128) == LISTOPS_SMALL
    x, y = load_listops("test", **listops_small(64))
    assert x.shape == (1000, 64) and y.shape == (1000,) and set(np.unique(y)) <= set(range(10))
    assert (x != PAD_ID).sum(1).max() == 64                        # trees fill the length, none cut
    x128, _ = load_listops("test", **LISTOPS_SMALL)
    assert (x128 != PAD_ID).sum(1).max() > 64                      # at 128 some would not fit in 64
    with pytest.raises(ValueError, match=r"seq_len must be 32\.\.2048, got 16"):
        listops_small(16)


def test_length_mismatch_says_how_to_fix_it(artifact, capsys):
    one_line_error(capsys, cli(["simulate", artifact, "--data", "listops", *EMULATOR]),
                   "listops: samples have shape (128, 1), the model expects (64, 1)", "--data listops --seq-len 64")
    one_line_error(capsys, cli(["simulate", artifact, "--data", "digits", "--seq-len", "64", *EMULATOR]),
                   "digits: a sequence length (--seq-len) applies to the built-in listops data only")
    with pytest.raises(SystemExit) as exc:
        cli(["simulate", artifact, "--data", "listops", "--seq-len", "16", *EMULATOR])
    one_line_error(capsys, exc.value.code, "argument --seq-len: must be in 32..2048, got 16")


def test_seq_len_makes_listops_data_the_model_runs(artifact, tmp_path, capsys):
    assert cli(["simulate", artifact, "--data", "listops", "--seq-len", "64", "--index", "2", *EMULATOR]) == 0
    by_flag = capsys.readouterr().out.splitlines()[0]
    report = tmp_path / "r.json"
    assert cli(["validate", LISTOPS_L64, artifact, "--data", "listops", "--seq-len", "64", "--max-samples", "16",
                "--lava-samples", "0", "--activity-samples", "0", "--json", str(report)]) == 0
    saved = json.loads(report.read_text())
    assert saved["dataset"] == {"name": "listops", "split": "test", "seq_len": 64} and saved["samples"] == 16
    # the .npz recipe: the same test split written at L = 64 gives the same sample
    x, y = load_listops("test", **listops_small(64))
    npz = tmp_path / "listops64.npz"
    np.savez(npz, x=x, y=y)
    capsys.readouterr()
    assert cli(["simulate", artifact, "--data", str(npz), "--index", "2", *EMULATOR]) == 0
    assert capsys.readouterr().out.splitlines()[0] == by_flag
    x128, y128 = load_listops("test", **LISTOPS_SMALL)
    np.savez(npz, x=x128, y=y128)
    one_line_error(capsys, cli(["simulate", artifact, "--data", str(npz), *EMULATOR]),
                   "samples have shape (128, 1), the model expects (64, 1)", "write the .npz with x of shape (n, 64)")
