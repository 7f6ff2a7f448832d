"""The Loihi 2 plan (placement against the budgets), the ``plan`` command, and measured activity /
energy counted from the integer run's traces, checked against counts written apart from the code."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from neurocompile.activity import activity_and_energy, bits_set, fft_conv_macs, float_macs, measure_activity
from neurocompile.emulator import emulate
from neurocompile.errors import PlacementError
from neurocompile.program import raw_inputs
from neurocompile.targets.loihi2.plan import plan_program
from neurocompile.targets.loihi2.target import BUDGETS, LOIHI2
from programs import random_program, random_raw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "neurocompile", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "digits.loihi2"
    res = _cli("export", DIGITS, "-o", str(path))
    assert res.returncode == 0, res.stderr
    return path


def test_digits_plan_numbers(digits, tmp_path):
    """The digits SpikingSSM (H=64, 2 layers, L=64): every count is integer arithmetic on its shapes."""
    out = tmp_path / "plan.json"
    res = _cli("plan", str(digits), "--json", str(out))
    assert res.returncode == 0, res.stderr
    plan = json.loads(out.read_text())
    procs = {p["name"]: p for p in plan["processes"]}
    assert (plan["chips"], plan["cores"], plan["system"]) == (1, 8, "oheo-gulch")
    assert {p["placement"] for p in plan["processes"]} <= {"neurocore", "host"}
    assert {k: procs["layer0.neuron"][k] for k in ("placement", "lowering", "neurons", "cores")} == \
        {"placement": "neurocore", "lowering": "lif", "neurons": 64, "cores": 1}
    assert procs["layer0.neuron"]["state_bytes"] == 64 * 2 * 3                     # u and v, 24 bits each
    assert procs["layer0.mixer"]["synapse_bytes"] == 128 * 64                      # 8-bit mantissas
    assert procs["layer0.mixer"]["cores"] == 0 and procs["layer0.mixer"]["unit"] == "layer0.residual"
    # 64 taps fit the 0..63 synaptic delays: the convolution is placed on neurocores
    assert procs["layer0.ssm"]["placement"] == "neurocore" and procs["layer0.ssm"]["lowering"] == "conv"
    assert procs["input"]["placement"] == "host" and procs["input"]["host_bytes_per_step"] == 1   # one 5-bit level
    assert plan["host_bytes_per_step"] == 1
    assert sum(p["cores"] for p in plan["processes"]) == plan["cores"]
    assert plan["latency_steps"] == 2 and plan["window_steps"] == 66
    assert "8,192 neurons and 128 KiB per core" in res.stdout and plan["estimate"].startswith("an estimate")


def test_long_convolution_on_delay_lines_or_on_the_host():
    """L = 80 > 64 taps over a 16-bit stream: on neurocores one delayed synapse per tap and bit plane,
    one relay stage (ceil(80 / 64) - 1) of H x 16 neurons and H x 16 bit-plane splitters; when that
    does not fit one chip's planned cores it stays on the host, which then lists its bytes per step:
    H graded 24-bit values in (the stream) and H currents out."""
    program = random_program(seed=1, H=8, L=80)
    ssm = plan_program(program).process("layer0.ssm")
    assert ssm.placement.where == "neurocore" and "relay neurons" in ssm.placement.program
    assert ssm.placement.synapse_bytes == 2 * 8 * 80 * 16
    assert ssm.placement.neurons == 8 + 8 * 16 + 8 * 16 * 1
    assert ssm.cores == 1
    small = dataclasses.replace(LOIHI2, budgets=dataclasses.replace(BUDGETS, memory_per_core_bytes=4096,
                                                                     cores_planned_per_chip=4))
    plan = plan_program(program, target=small)
    ssm = plan.process("layer0.ssm")
    assert ssm.placement.where == "host" and "more than one chip's 4 planned cores" in ssm.placement.reason
    assert ssm.placement.host_bytes_per_step == 8 * 3 + 8 * 3
    assert ssm.cores == 0
    assert plan.to_dict()["host_bytes_per_step"] == 2 * 48 + 1            # two layers, plus the 8-bit input


def test_unplaceable_names_process_resource_need_and_have():
    program = random_program(seed=0, H=8, L=12)
    tiny = dataclasses.replace(LOIHI2, budgets=dataclasses.replace(BUDGETS, memory_per_core_bytes=16))
    with pytest.raises(PlacementError) as err:
        plan_program(program, target=tiny)
    msg = str(err.value)
    assert msg.startswith("cannot place ") and "core memory" in msg and "a neurocore has 16" in msg
    small = dataclasses.replace(LOIHI2, budgets=dataclasses.replace(BUDGETS, cores_planned_per_chip=2))
    with pytest.raises(PlacementError, match=r"on oheo-gulch: it needs \d+ chips .* oheo-gulch has 1"):
        plan_program(program, system="oheo-gulch", target=small)
    assert plan_program(program, target=small).system == "kapoho-point"           # the smallest that holds it


def test_plan_cli_refuses_in_one_line(digits, tmp_path):
    res = _cli("plan", str(tmp_path / "missing.loihi2"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("neurocompile: error:")


# ------------------------------------------------------------------------------------ activity
def _independent_counts(program, traces, raw):
    """Synaptic events by brute force from the definitions (loops, not the per-type rules)."""
    out = {**traces, program.input_node: raw}
    L = program.seq_len
    events = {}
    for name in program.topo():
        op = program.op(name)
        kind = type(op).__name__
        if kind == "IntEncoder":
            x = out[program.inputs(name)["main"]]                      # (n, C, L)
            events[name] = sum(bin(int(x[b, c, t])).count("1") * int(op.weight[h, c] != 0)
                               for b in range(x.shape[0]) for c in range(x.shape[1]) for t in range(L)
                               for h in range(op.weight.shape[0]))
        elif kind == "IntSSMConv":
            x = out[program.inputs(name)["main"]]
            H, K = op.kernel.shape
            total = 0
            for h in range(H):
                for tp in range(L):                                     # out[tp] = sum_j k[j] x[tp + lag - j]
                    for j in range(K):
                        t = tp + op.lag - j
                        if 0 <= t < L and op.kernel[h, j]:
                            v = int(x[:, h, t].astype(np.int64).sum()) if x.dtype == bool else \
                                sum(bin(int(v) & ((1 << op.stream_bits) - 1)).count("1") for v in x[:, h, t])
                            total += v
            events[name] = total
        elif kind == "IntDense":
            s = out[program.inputs(name)["main"]].astype(np.int64)      # (n, N, L)
            events[name] = int(((op.weight != 0).astype(np.int64) @ s).sum())
    return events


def test_activity_matches_an_independent_count():
    program = random_program(seed=2, H=6, L=10, two_sided=(1,))
    raw_levels = random_raw(program, 3, seed=5)
    traces = emulate(program, raw_levels, record=True, device="cpu")
    raw = raw_inputs(program, raw_levels)
    counts, density = measure_activity(program, traces, raw)
    for name, want in _independent_counts(program, traces, raw).items():
        assert counts[name].synaptic_events == want, name
    for lif in program.spike_nodes:
        assert counts[lif].messages == int(traces[lif].sum())
        assert counts[lif].neuron_updates == 3 * 6 * 10
    assert bits_set(np.array([-1, 5, 0]), 4).tolist() == [4, 2, 0]
    section = activity_and_energy(program, traces, raw_levels)
    e = section["energy"]["paper_45nm"]
    per = section["activity"]["per_sample"]
    assert e["snn_pJ"] == pytest.approx(per["accumulates"] * 0.9 + per["multiplies"] * 4.6)
    assert e["ann_pJ"] == pytest.approx(section["activity"]["float_macs_per_sample"] * 4.6)
    assert e["ratio"] == pytest.approx(e["ann_pJ"] / e["snn_pJ"])
    fft = section["energy"]["fft_baseline"]
    assert fft["ann_pJ"] == pytest.approx(float_macs(program, ssm="fft") * 4.6)
    assert fft["snn_pJ"] == e["snn_pJ"] and float_macs(program, ssm="fft") <= float_macs(program)
    mix = section["energy"]["paper_formula"]
    dens = mix["mixer_input_density"]["layer0.mixer"]
    assert dens == pytest.approx(traces["layer0.neuron"].mean())


def test_validate_json_has_activity_and_energy(digits, tmp_path):
    out = tmp_path / "v.json"
    res = _cli("validate", DIGITS, str(digits), "--data", "digits", "--max-samples", "40", "--lava-samples", "0",
               "--activity-samples", "20", "--json", str(out))
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    assert rep["activity"]["samples"] == 20 and rep["activity"]["per_sample"]["synaptic_events"] > 0
    assert set(rep["energy"]["paper_45nm"]) >= {"snn_pJ", "ann_pJ", "ratio"}
    assert "energy ESTIMATE" in res.stdout


def test_fft_baseline_counts_radix2_real_multiplies():
    # n = 2048 >= 784 + 784 - 1: two real FFTs of 2 * 4 * (n/4) * log2(n/2) real multiplies, n/2 + 1 products
    assert fft_conv_macs(1, 784, 784) == 2 * 4 * 512 * 10 + 4 * 1025 == 45060
    assert fft_conv_macs(3, 64, 64) == 3 * (2 * 4 * 32 * 6 + 4 * 65)
    # at L = 784 the FFT needs ~6.8x fewer multiplies than the direct L(L+1)/2 per channel
    assert 784 * 785 // 2 / fft_conv_macs(1, 784, 784) == pytest.approx(6.83, abs=0.01)


def test_stochastic_activity_is_the_same_whatever_the_batches():
    """P-SpikeSSM spikes are random: the counts over N samples in batches must be those of one run over
    all N (each batch draws its own samples' numbers, ``first_sample``), not batch 0's draws again."""
    from neurocompile.activity import measured
    from neurocompile.api import load_data
    from neurocompile.pipeline import compile_checkpoint
    program = compile_checkpoint("examples/pspikessm-digits/ckpt.pt", warn=lambda _: None)
    levels = np.repeat(load_data(program, "digits")[2][:1], 8, axis=0)          # one image 8 times
    one = measured(program, levels, seed=3, batch_size=8)
    batched = measured(program, levels, seed=3, batch_size=2)
    assert batched["activity"] == one["activity"] and batched["energy"] == one["energy"]
