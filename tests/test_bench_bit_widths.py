"""The bit-width benchmark's hook: ``measure`` takes any list of checkpoints (the deep examples and
fine-tuned checkpoints join it later); a small real sweep on the digits example."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_bit_widths as bench  # noqa: E402


def test_measure_sweeps_a_checkpoint_list():
    ex = bench.Example("digits-32", os.path.join(ROOT, "examples", "digits", "ckpt.pt"), "digits", samples=32)
    result = bench.measure([ex], quantities=("weight_bits",), energy_samples=32, log=lambda line: None)
    rows = {r["bits"]: r for r in result["rows"]}
    assert [r["quantity"] for r in result["rows"]] == ["default"] + ["weight_bits"] * len(bench.WIDTHS)
    assert result["examples"][0]["samples"] == 32 and rows[None]["samples"] == 32
    assert {k: v for k, v in rows[8].items() if k not in ("quantity", "bits", "options")} == \
        {k: v for k, v in rows[None].items() if k not in ("quantity", "bits", "options")}   # 8 bits: the default
    synapses = [rows[b]["synapse_bytes"] for b in bench.WIDTHS]
    assert synapses == sorted(synapses, reverse=True) and len(set(synapses)) == len(synapses)
    cores = [rows[b]["cores"] for b in bench.WIDTHS]
    assert cores == sorted(cores, reverse=True)
    assert all(0 <= r["accuracy"] <= 1 and r["energy_nJ"] > 0 for r in rows.values())
    assert "| digits-32 | weight_bits | 4 | 32 |" in bench.table(result)


def test_the_fine_tuned_curve_compiles_its_own_checkpoint_at_each_width():
    """A fine-tuned row compiles the checkpoint it names at kernel+weight = its bits: given the example's own
    checkpoint it is the PTQ kernel+weight row of that width, under its own quantity and checkpoint."""
    digits = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
    ex = bench.Example("digits-24", digits, "digits", samples=24, finetuned=((4, digits),))
    result = bench.measure([ex], quantities=("kernel+weight", "fine-tuned"), energy_samples=24, log=lambda line: None)
    ptq = next(r for r in result["rows"] if r["quantity"] == "kernel+weight" and r["bits"] == 4)
    (ft,) = [r for r in result["rows"] if r["quantity"] == bench.FINETUNED]
    assert ft["bits"] == 4 and ft["checkpoint"] == "examples/digits/ckpt.pt"
    same = lambda r: {k: v for k, v in r.items() if k not in ("quantity", "checkpoint", "seconds")}   # noqa: E731
    assert same(ft) == same(ptq)
    assert "| digits-24 | kernel+weight, fine-tuned | 4 | 24 |" in bench.table(result)


def test_a_fine_tuned_run_merges_with_the_run_of_the_other_quantities(tmp_path):
    """One example measured by two runs (its quantities; later its fine-tuned curve) is one example in the
    merged table, its default row once (the first run's), every row of both runs otherwise."""
    digits = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
    ex = bench.Example("digits-16", digits, "digits", samples=16)
    first = bench.measure([ex], quantities=("weight_bits",), energy_samples=16, log=lambda line: None)
    second = bench.measure([bench.Example("digits-16", digits, "digits", samples=16, finetuned=((4, digits),))],
                           quantities=("fine-tuned",), energy_samples=16, log=lambda line: None)
    paths = []
    for i, r in enumerate((first, second)):
        r["runs"] = [{"command": f"run {i}", "examples": ["digits-16"], "machine": "m", "date": "d", "seconds": 1,
                      "energy_samples": 16}]
        paths.append(str(tmp_path / f"run{i}.json"))
        with open(paths[-1], "w") as f:
            bench.json.dump(r, f)
    assert bench.main(["--merge", *paths, "--out", str(tmp_path / "merged")]) in (0, None)
    merged = bench.json.load(open(tmp_path / "merged.json"))
    assert [m["name"] for m in merged["examples"]] == ["digits-16"]
    assert [list(f) for f in merged["examples"][0]["finetuned"]] == [[4, digits]]
    assert [(r["quantity"], r["bits"]) for r in merged["rows"]] == \
        [(r["quantity"], r["bits"]) for r in first["rows"]] + [(bench.FINETUNED, 4)]
    assert merged["rows"][0] == first["rows"][0]
