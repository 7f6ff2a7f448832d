"""Our ``--mc-rng authors`` float passes against the authors' own Monte-Carlo evaluation.

``tests/fixtures/official/authors_mc_passes.json`` and ``authors_mc_logits.npz`` were computed by the
authors' P-SpikeSSM code, unchanged, in a separate environment (``scripts/authors_mc_passes.py``; the
fixtures README says how): for seeds s = 0..31, ``torch.manual_seed(s)`` then one float32 forward of
their module over a whole input set.  Nothing of theirs runs here: validate's ``authors_float_passes``
(``--mc-rng authors --mc-passes 32 --seed 0``) must predict what they predicted, pass by pass, sample
by sample, and give their logits.

Logits: their model's logits are a function of its spikes (every block ends in a spike mixer), so
two float32 runs that take the same spikes differ by summation order only (<= 1.2e-7 measured), while
one spike taken differently moves a logit by about 1e-4 or more.  A row (pass, sample) is therefore
"the same spikes" when the logits agree within 1e-6 (SPIKES_DIFFER, stored with the data).  Their
float32 kernels round p = out_a GELU(SSM) + out_b up to 5.9e-6 away from float64 (ours: 1e-6), so a
uniform can fall between their float32 p and the exact one; the driver lists those rows by running
their code in float64 on the same uniforms.  There, ours must give their float64 logits: we take the
spike exact arithmetic takes.  (One such row: Fashion-MNIST pass 10, sample 4, layer 1's SSM sampler
at channel 5, step 281: their float32 p 0.44848466, U 0.44848585, float64 p 0.448486126, ours
0.44848615; the prediction stays class 4 by a margin of 0.3.)
"""
import hashlib
import json
import os

import numpy as np
import pytest

from neurocompile.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "official")
STORED = json.load(open(os.path.join(FIXTURES, "authors_mc_passes.json")))
SETS = [(name, tag) for name, entry in STORED["fixtures"].items() for tag in entry["sets"]]


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    from neurocompile.artifact import load_program
    out = {}
    for name in STORED["fixtures"]:
        path = tmp_path_factory.mktemp(name) / "m.loihi2"
        assert cli(["export", os.path.join(FIXTURES, name + ".ckpt"), "-o", str(path)]) == 0
        out[name] = load_program(str(path))
    return out


def _inputs(name: str, tag: str, program):
    """The set's inputs rebuilt from offline data, and the values validate feeds the float model."""
    fixture_x = np.load(os.path.join(FIXTURES, name + ".expected.npz"))["x"]
    if tag == "fixture":
        return fixture_x, fixture_x
    if tag == "random_tokens_64":
        r = {"seed": 15, "n": 60, "vocab": 18, "length": 64}            # scripts/authors_mc_passes.RANDOM_TOKENS
        x = np.concatenate([fixture_x, np.random.default_rng(r["seed"]).integers(0, r["vocab"], (r["n"], r["length"]))])
        return x, x
    assert tag.startswith("fashion_mnist_test_first_")
    from neurocompile.api import load_data
    n = int(tag.rsplit("_", 1)[1])
    data, values, _ = load_data(program, "fashion-mnist", "test")            # what validate --data fashion-mnist reads
    assert data.y[:n].tolist() == STORED["fixtures"][name]["sets"][tag]["labels"]
    return values[:n].astype(np.float32), values[:n]                          # the float model runs in float32


@pytest.mark.parametrize("name,tag", SETS, ids=[f"{n.split('_')[1]}-{t}" for n, t in SETS])
def test_mc_rng_authors_float_passes_equal_the_authors_own(programs, name, tag):
    from neurocompile.models.checkpoint import build_model, load_checkpoint
    from neurocompile.validate import authors_float_passes
    stored = STORED["fixtures"][name]["sets"][tag]
    program = programs[name]
    hashed, values = _inputs(name, tag, program)
    assert hashlib.sha256(np.ascontiguousarray(hashed).tobytes()).hexdigest() == stored["input_sha256"]
    kind, cfg, sd, _ = load_checkpoint(os.path.join(FIXTURES, name + ".ckpt"), seq_len=program.seq_len)
    model = build_model(cfg, sd, kind).eval()
    seeds = STORED["seeds"]
    assert seeds == list(range(32))
    out = authors_float_passes(model, program, values, "cpu", seed=seeds[0], passes=len(seeds))

    ours = ["".join(str(int(c)) for c in row) for row in out["pred_float"]]
    for k, (mine, theirs) in enumerate(zip(ours, stored["predictions"])):
        assert mine == theirs, f"pass {k} (seed {seeds[k]}): ours {mine}, theirs {theirs}"
    labels = np.asarray(stored["labels"])
    assert (out["pred_float"] == labels[None]).mean(1).tolist() == stored["accuracy_per_pass"]

    theirs = np.load(os.path.join(FIXTURES, "authors_mc_logits.npz"))[f"{name}.{tag}"].astype(np.float64)
    gap = np.abs(out["logits_float"] - theirs).max(-1)                       # (passes, samples)
    tol = STORED["spikes_differ_above"]
    rounded = stored["float64"]["rows_spikes_differ"]
    for row in rounded:                # their float32 rounded p across a uniform: ours takes the float64 spike
        assert gap[row["pass"], row["sample"]] > tol
        assert np.abs(out["logits_float"][row["pass"], row["sample"]] - row["logits"]).max() <= tol
        gap[row["pass"], row["sample"]] = 0.0
    assert gap.max() <= tol, f"rows with other spikes than theirs: {np.argwhere(gap > tol).tolist()}"


def test_validate_cli_mc_rng_authors_reports_their_per_pass_accuracies(programs, tmp_path):
    """End to end: ``neurocompile validate --mc-rng authors --mc-passes 32 --seed 0`` on the 64 token
    sequences reports, pass by pass, the float accuracies their code measured (they vary per pass)."""
    name, tag = "pspikessm_bidirectional_postnorm_bn", "random_tokens_64"
    stored = STORED["fixtures"][name]["sets"][tag]
    x, _ = _inputs(name, tag, programs[name])
    data, art, report = tmp_path / "tokens.npz", tmp_path / "m.loihi2", tmp_path / "r.json"
    np.savez(data, x=x, y=np.asarray(stored["labels"]))
    ckpt = os.path.join(FIXTURES, name + ".ckpt")
    assert cli(["export", ckpt, "-o", str(art)]) == 0
    assert cli(["validate", ckpt, str(art), "--data", str(data), "--mc-rng", "authors", "--mc-passes", "32",
                "--seed", "0", "--lava-samples", "0", "--activity-samples", "0", "--json", str(report)]) == 0
    acc = json.loads(report.read_text())["accuracy"]
    assert len(set(stored["accuracy_per_pass"])) > 1
    assert acc["float_per_pass"] == stored["accuracy_per_pass"]
