"""Write tests/fixtures/official/authors_mc_passes.json and authors_mc_logits.npz: the authors' own
Monte-Carlo evaluation of the two official P-SpikeSSM fixtures, computed by THEIR code (nothing of ours
runs here; tests/test_authors_passes.py checks our --mc-rng authors float passes against it).

This driver runs in a separate virtual environment outside the repository that holds the authors'
P-SpikeSSM code (`NeuroCompLab-psu/PSpikeSSMs` at 8f7a954852ae29f4ef961bac341321f7f9330c51, unchanged,
extracted to /work/authors-code) and their package versions (tests/fixtures/official/README.md,
"authors_mc_passes.json" says how that environment was built).  From the repository root:

    WANDB_MODE=disabled /work/authors-env/bin/python scripts/authors_mc_passes.py --code /work/authors-code

(about a minute on 2 CPU cores; the output is the same byte for byte on a rerun).

For each fixture it imports their ``train.py``, builds their ``SequenceLightningModule`` from the
checkpoint's ``hyper_parameters``, loads the ``state_dict`` strictly, calls ``.eval()`` and, for every
input set and pass s = 0..31, does ``torch.manual_seed(s)`` and ONE ``module.forward`` over the whole
set as one batch: their encoder, backbone (drawing its uniforms itself with ``torch.rand_like``) and
decoder.  Recorded in the JSON: argmax per sample and pass (one digit per sample), accuracy per pass,
the inputs' provenance and sha256, seeds, dtype, code commit, package versions; in the .npz their float32
logits, (passes, samples, classes) under '<fixture>.<set>'.

Dtype: float32, their evaluation as it runs (the checkpoint is float32, and ``rand_like`` of a float32
activation draws float32 uniforms from the generator; a float64 module would draw float64 uniforms, a
different stream, i.e. not their evaluation).  Our float model is float32 too.  As a diagnostic the same
passes also run a float64 copy of their module on the same uniforms (float32 draws widened, ``torch.rand_like``
wrapped, as the .expected.npz driver did; its seed-7 pass reproduces that file's logits within 1e-12).
The rows (pass, sample) where their float32 and float64 runs take different spikes are stored with their
float64 logits: there a uniform fell between their float32 probability and the exact one.

Input sets (each its own batch, as their evaluation of a split is):
* ``fixture``: the fixture's own ``x`` (labels: sample index mod classes, as before);
* ``fashion_mnist_test_first_128`` (the 784x1 unidirectional fixture): the first 128 Fashion-MNIST test
  images with their true labels, as exactly the float32 tensor our ``validate --data fashion-mnist``
  feeds the float model (raw k -> 0.0 + k * (1/255) in float64, then float32; pixel order as our loader
  reads it, no psMNIST bit-reversal: the model sees what our validate gives it); its sha256 is stored;
* ``random_tokens_64`` (the ListOps-style fixture, L=64, 18 tokens): our ``--data listops`` set does not
  fit this model (L=128, 16-token vocabulary), so: the fixture's 4 sequences followed by 60 rows of
  ``numpy.random.default_rng(15).integers(0, 18, (60, 64))``, labels index mod 10, lengths all 64.

Their dataset classes need files to build the module (the Embedding size comes from the ListOps vocabulary,
18 = 15 tokens + pad, unk, eos): tiny files are written to a temporary DATA_PATH (MNIST: 20/10 blank IDX
images; ListOps: four expressions that use every token); their data never reaches the forward.
"""
import argparse
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "official")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
NAMES = ("pspikessm_bidirectional_postnorm_bn", "pspikessm_unidirectional_prenorm_bn")
CODE_COMMIT = "8f7a954852ae29f4ef961bac341321f7f9330c51"
PACKAGES = ("torch", "torchvision", "torchaudio", "torchtext", "pytorch-lightning", "hydra-core", "omegaconf",
            "einops", "scipy", "numpy", "spikingjelly", "transformers", "datasets", "tonic", "pandas", "wandb", "rich")
RANDOM_TOKENS = dict(seed=15, n=60, vocab=18, length=64)
# A (pass, sample) row whose float32 and float64 logits differ by more than this took a different spike
# somewhere: with the same spikes the two differ by float32 rounding only (<= 1.2e-7 measured, logits
# below 0.6), while one flipped spike moves a logit by about 1e-4 (a decoder weight / L) or more.
SPIKES_DIFFER = 1e-6


def fashion_values(n: int) -> tuple:
    """The first n Fashion-MNIST test images as our validate feeds them to the float model (float32)."""
    with gzip.open(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz"), "rb") as fh:
        raw = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784, 1)[:n]
    with gzip.open(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"), "rb") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)[:n].astype(np.int64)
    values = (0.0 + raw.astype(np.float64) * (1.0 / 255)).astype(np.float32)
    return values, labels


def random_tokens(fixture_x: np.ndarray) -> np.ndarray:
    r = RANDOM_TOKENS
    extra = np.random.default_rng(r["seed"]).integers(0, r["vocab"], (r["n"], r["length"]))
    return np.concatenate([fixture_x.astype(np.int64), extra])


def write_stub_data(root: str) -> None:
    """Files their dataset classes read while the module is built (never the forward's inputs)."""
    raw = os.path.join(root, "mnist", "MNIST", "raw")
    os.makedirs(raw)
    for stem, n in (("train", 20), ("t10k", 10)):
        with open(os.path.join(raw, f"{stem}-images-idx3-ubyte"), "wb") as fh:
            fh.write(struct.pack(">IIII", 2051, n, 28, 28) + bytes(n * 784))
        with open(os.path.join(raw, f"{stem}-labels-idx1-ubyte"), "wb") as fh:
            fh.write(struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n)))
    lo = os.path.join(root, "listops")
    os.makedirs(lo)
    rows = [("( ( ( ( ( ( [MAX 0 ) 1 ) 2 ) 3 ) 4 ) ] )", 4), ("( ( ( ( ( ( [MIN 5 ) 6 ) 7 ) 8 ) 9 ) ] )", 5),
            ("( ( ( [MED 1 ) 2 ) ] )", 1), ("( ( ( [SM 3 ) 4 ) ] )", 7)]
    for split in ("train", "val", "test"):
        with open(os.path.join(lo, f"basic_{split}.tsv"), "w") as fh:
            fh.write("Source\tTarget\n" + "".join(f"{s}\t{t}\n" for s, t in rows))


@contextlib.contextmanager
def widened_uniforms(torch):
    """torch.rand_like draws float32 and widens (float64 diagnostic: same uniforms as the float32 run)."""
    orig = torch.rand_like

    def rand_like(t, *a, **k):
        return orig(t, dtype=torch.float32).to(t.dtype)
    torch.rand_like = rand_like
    try:
        yield
    finally:
        torch.rand_like = orig


def build(train, torch, name: str):
    """Their module from the checkpoint's hyper_parameters, state_dict loaded strictly, in eval mode.
    A float64 copy must be cast before its first forward: their DPLR kernel caches its FFT nodes
    (``omega``, ``z``) as plain complex attributes on the first call, which ``.double()`` would not widen."""
    ckpt = torch.load(os.path.join(FIXTURES, name + ".ckpt"), map_location="cpu")
    module = train.SequenceLightningModule(ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"], strict=True)
    return module.eval()


def passes_of(module, torch, x, labels, lengths, seeds, dtype) -> dict:
    xt = torch.as_tensor(x) if x.dtype == np.int64 else torch.as_tensor(x, dtype=dtype)
    batch = (xt, torch.as_tensor(labels)) + (({"lengths": torch.as_tensor(lengths)},) if lengths is not None else ())
    preds, logits = [], []
    for s in seeds:
        torch.manual_seed(s)
        with torch.no_grad():
            out = module.forward(batch)[0]
        logits.append(out.double().numpy())
        preds.append(out.argmax(-1).numpy())
    return {"pred": np.stack(preds), "logits": np.stack(logits)}


def margins(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, -1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", required=True, help="the extracted PSpikeSSMs tree (holds train.py)")
    ap.add_argument("--passes", type=int, default=32)
    ap.add_argument("--fashion-samples", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(FIXTURES, "authors_mc_passes.json"))
    ap.add_argument("--logits", default=os.path.join(FIXTURES, "authors_mc_logits.npz"),
                    help="their float32 logits, (passes, samples, classes) per '<fixture>.<set>'")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="authors-data-")         # removed at the end
    write_stub_data(tmp)
    os.environ["DATA_PATH"] = tmp
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.insert(0, os.path.abspath(args.code))
    sys.argv = sys.argv[:1]
    import importlib.metadata as md

    import torch
    import torchtext.vocab  # noqa: F401  torchtext 0.18 no longer imports it on `import torchtext`
    import train

    seeds = list(range(args.passes))
    out = {"code": f"NeuroCompLab-psu/PSpikeSSMs@{CODE_COMMIT}", "python": sys.version.split()[0],
           "packages": {p: md.version(p) for p in PACKAGES}, "torch_threads": torch.get_num_threads(),
           "seeds": seeds, "dtype": "float32",
           "procedure": "per input set and seed s: torch.manual_seed(s); module.forward((x, y[, {lengths}])) over "
                        "the whole set as one batch, their SequenceLightningModule built from the checkpoint's "
                        "hyper_parameters, state_dict loaded strictly, .eval(), float32; prediction = argmax",
           "spikes_differ_above": SPIKES_DIFFER, "fixtures": {}}
    logits = {}
    for name in NAMES:
        module = build(train, torch, name)
        module64 = build(train, torch, name).double()      # before its first forward (see build)
        before = {k: v.clone() for k, v in module.state_dict().items()}
        want = np.load(os.path.join(FIXTURES, name + ".expected.npz"))
        classes = want["logits"].shape[1]
        sets = {"fixture": (want["x"], np.arange(len(want["x"])) % classes,
                            f"{name}.expected.npz x; labels: sample index mod {classes}")}
        if want["x"].dtype == np.int64:
            x = random_tokens(want["x"])
            sets["random_tokens_64"] = (x, np.arange(len(x)) % classes,
                                        "the fixture's x, then numpy.random.default_rng({seed}).integers(0, {vocab}, "
                                        "({n}, {length})); labels: index mod 10; lengths all {length}"
                                        .format(**RANDOM_TOKENS))
        else:
            x, y = fashion_values(args.fashion_samples)
            sets[f"fashion_mnist_test_first_{args.fashion_samples}"] = (
                x, y, f"the first {args.fashion_samples} Fashion-MNIST test images ({FASHION_DIR}/t10k-*), true "
                      "labels, float32 of 0.0 + k * (1/255) (float64), our loader's pixel order (no psMNIST permutation)")
        entry = {"sets": {}}
        for tag, (x, y, source) in sets.items():
            lengths = np.full(len(x), x.shape[1]) if x.dtype == np.int64 else None
            f32 = passes_of(module, torch, x, y, lengths, seeds, torch.float32)
            with widened_uniforms(torch):
                f64 = passes_of(module64, torch, x, y, lengths, seeds, torch.float64)
            if tag == "fixture":         # the .expected.npz pass (seed 7, float64): same logits
                assert np.abs(f64["logits"][seeds.index(7)] - want["logits"]).max() < 1e-12, "seed-7 pass differs"
            acc = (f32["pred"] == y[None]).mean(1)
            gap = np.abs(f32["logits"] - f64["logits"]).max(-1)              # (passes, samples)
            rows = np.argwhere(gap > SPIKES_DIFFER)
            entry["sets"][tag] = {
                "source": source, "samples": int(len(x)), "labels": y.tolist(),
                "input_sha256": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
                "input_dtype": str(x.dtype), "input_shape": list(x.shape),
                "predictions": ["".join(str(int(c)) for c in row) for row in f32["pred"]],
                "accuracy_per_pass": [float(a) for a in acc],
                "min_top2_margin": float(margins(f32["logits"]).min()),
                "float64": {
                    "accuracy_per_pass": [float(a) for a in (f64["pred"] == y[None]).mean(1)],
                    "predictions_differing": [[int(p), int(i)] for p, i in np.argwhere(f32["pred"] != f64["pred"])],
                    "max_abs_logit_difference_same_spikes": float(np.where(gap > SPIKES_DIFFER, 0, gap).max()),
                    "rows_spikes_differ": [{"pass": int(p), "sample": int(i), "logits": f64["logits"][p, i].tolist()}
                                           for p, i in rows]},
            }
            logits[f"{name}.{tag}"] = f32["logits"].astype(np.float32)
            if tag == "fixture":
                k = seeds.index(7)
                entry.update({"predictions_seed_7": f32["pred"][k].tolist(), "labels": y.tolist(),
                              "float_accuracy_seed_7": float(acc[k])})
            print(f"{name} {tag}: accuracy per pass {np.round(acc, 4).tolist()}; float64 differs at "
                  f"{int((f32['pred'] != f64['pred']).sum())} predictions, spikes differ in rows {rows.tolist()}",
                  flush=True)
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "the forward changed the module's state"
        out["fixtures"][name] = entry
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    np.savez_compressed(args.logits, **logits)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
