"""Compiler passes, quantization, range proof, artifact and emulator on synthetic float graphs.

The graphs here are built directly in the IR (no checkpoint), so each pass is tested alone; the
checkpoint path end to end is covered in test_end_to_end.py.
"""
import io
import os
import zipfile

import numpy as np
import pytest

from neurocompile import passes
from neurocompile.artifact import load_program, save_program
from neurocompile.emulator import emulate
from neurocompile.errors import ArtifactError, RangeError
from neurocompile.ir import (LIF, ChannelAffine, Dense, GLUResidual, Input, LinearEncoder, Readout, SSMConv, add,
                             new_graph)
from neurocompile.options import CompileOptions
from neurocompile.pipeline import to_program


def float_graph(H=12, L=20, n_layers=2, d_out=4, levels=16, seed=0, two_sided=(), prenorm=()):
    """A SpikingSSM-shaped float graph built directly in the IR.  ``two_sided``: layers whose
    kernel is streamed as 2L-1 taps read L-1 steps late; ``prenorm``: layers with a BatchNorm-like
    affine before the SSM (folded into kernel and per-step bias)."""
    rng = np.random.default_rng(seed)
    cfg = dict(d_input=1, d_output=d_out, d_model=H, n_layers=n_layers, d_state=8, l_max=L, tau=0.125)
    g = new_graph({"config": cfg, "source": "synthetic", "kind": "spikingssm",
                   "input_format": {"kind": "levels", "low": 0.0, "high": 1.0, "levels": levels}})
    x = add(g, "input", Input(1, L, g.meta["input_format"]))
    x = add(g, "encoder", LinearEncoder(rng.normal(0, 1.0, (H, 1)), rng.normal(0, 0.3, H)), [x])
    for i in range(n_layers):
        K, lag = (2 * L - 1, L - 1) if i in two_sided else (L, 0)
        decay = np.exp(-np.abs(np.arange(K) - lag)[None] * rng.uniform(0.05, 0.5, (H, 1)))
        kernel = rng.normal(0, 0.6, (H, K)) * decay
        z = x
        if i in prenorm:
            z = add(g, f"layer{i}.norm", ChannelAffine(rng.uniform(0.5, 1.5, H), rng.normal(0, 0.5, H)), [x], layer=i)
        c = add(g, f"layer{i}.ssm", SSMConv(kernel, lag, np.zeros((H, 0))), [z], layer=i)
        s = add(g, f"layer{i}.vth", ChannelAffine(np.exp(-rng.normal(0, 0.2, H)), np.zeros(H)), [c], layer=i)
        s = add(g, f"layer{i}.neuron", LIF(0.125), [s], layer=i)
        m = add(g, f"layer{i}.mixer", Dense(rng.normal(0, 0.4, (2 * H, H))), [s], layer=i)
        x = add(g, f"layer{i}.residual", GLUResidual(rng.normal(0, 0.2, 2 * H)), [x, m], layer=i,
                ports=["skip", "main"])
    add(g, "decoder", Readout(rng.normal(0, 0.5, (d_out, H)), rng.normal(0, 0.1, d_out)), [x])
    return g


def compile_float_graph(g, options=CompileOptions()):
    g = passes.fold_channel_affines(g)
    g = passes.quantize(g, options)
    g = passes.analyze_ranges(g)
    g = passes.align_time_steps(g)
    return to_program(g, {})   # compiled from a graph: no checkpoint to pair with


def float_reference(g, levels):
    """The float network (exact LIF, float GLU) in plain numpy from the UNFOLDED float graph: norm
    affine on the stream, then the two-sided sum written as in the model (past taps k0, future taps
    k1), then the threshold scale, so folding and streaming are checked, not assumed."""
    cfg = g.meta["config"]
    enc = g.op("encoder")
    x = levels[..., 0:1] / g.meta["input_format"]["levels"] @ enc.weight.T + enc.bias      # (n, L, H)
    spikes_all = {}
    for i in range(cfg["n_layers"]):
        conv = g.op(f"layer{i}.ssm")
        z = x
        if f"layer{i}.norm" in g.g:
            aff = g.op(f"layer{i}.norm")
            z = x * aff.scale + aff.shift
        L, lag = x.shape[1], conv.lag
        k0, k1 = conv.kernel[:, lag:], conv.kernel[:, :lag][:, ::-1]      # k0[d] for s = t - d, k1[d] for s = t + 1 + d
        y = np.zeros_like(z)
        for t in range(L):
            for s_ in range(L):
                d = t - s_
                if 0 <= d < k0.shape[1]:
                    y[:, t] += k0[:, d] * z[:, s_]
                elif d < 0 and -d - 1 < k1.shape[1]:
                    y[:, t] += k1[:, -d - 1] * z[:, s_]
        y = y * g.op(f"layer{i}.vth").scale
        u = np.zeros_like(y[:, 0])
        spikes = np.zeros_like(y)
        for t in range(L):
            u = 0.125 * u + y[:, t]
            spikes[:, t] = u >= 1
            u = u * (1 - spikes[:, t])
        z = spikes @ g.op(f"layer{i}.mixer").weight.T + g.op(f"layer{i}.residual").bias
        H = x.shape[2]
        x = x + z[..., :H] / (1 + np.exp(-z[..., H:]))
        spikes_all[f"layer{i}.neuron"] = spikes.transpose(0, 2, 1).astype(bool)
    dec = g.op("decoder")
    return x.mean(1) @ dec.weight.T + dec.bias, spikes_all


@pytest.fixture(scope="module")
def program():
    return compile_float_graph(float_graph())


@pytest.mark.parametrize("kw", [{}, {"two_sided": (0, 1)}, {"two_sided": (1,), "prenorm": (0, 1)}])
def test_integer_network_tracks_the_float_network(kw):
    g = float_graph(seed=3, **kw)
    program = compile_float_graph(g)
    levels = np.random.default_rng(5).integers(0, 17, size=(64, 20, 1))
    f_logits, f_spikes = float_reference(g, levels)
    emu = emulate(program, levels, record=True, device="cpu")
    for name, spikes in f_spikes.items():
        agreement = (emu[name] == spikes).mean()
        # quantization moves the LIF input by ~2**-8 of its range; only near-threshold steps flip
        assert agreement > 0.97 and 0.02 < spikes.mean() < 0.7, (name, agreement, spikes.mean())
    scale = 2.0 ** program.op("decoder").logit_frac_bits * program.seq_len
    assert (emu["logits"].argmax(1) == f_logits.argmax(1)).mean() > 0.85
    assert np.corrcoef(emu["logits"].ravel() / scale, f_logits.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("kw", [{}, {"two_sided": (0,), "prenorm": (1,)}])
def test_range_analysis_bounds_hold_on_extreme_inputs(kw):
    """Every observed register value lies inside the proven bound, for all-zero, all-max, random inputs."""
    program = compile_float_graph(float_graph(**kw))
    L, lv = program.seq_len, program.op("input").levels
    rng = np.random.default_rng(9)
    levels = np.concatenate([np.zeros((1, L, 1), int), np.full((1, L, 1), lv), rng.integers(0, lv + 1, (200, L, 1)),
                             (rng.random((50, L, 1)) < 0.5) * lv])
    emu = emulate(program, levels, record=True, device="cpu")
    worst = {(r["node"], r["register"]): r["worst"] for r in program.report["ranges"]}
    assert np.abs(emu["encoder"]).max() <= worst[("encoder", "stream")]
    for i in range(2):
        assert np.abs(emu[f"layer{i}.ssm"]).max() <= worst[(f"layer{i}.ssm", "output current")]
        assert np.abs(emu[f"layer{i}.neuron.v"]).max() <= worst[(f"layer{i}.neuron", "LIF voltage v")]
        assert np.abs(emu[f"layer{i}.mixer"]).max() <= worst[(f"layer{i}.mixer", "dendritic accumulator")]
        assert np.abs(emu[f"layer{i}.residual"]).max() <= worst[(f"layer{i}.residual", "stream")]
    assert all(r["worst"] <= r["limit"] for r in program.report["ranges"])


def test_kernel_is_8_bit_and_dense_weights_survive_lava_truncation(program):
    for i in range(2):
        kernel, w, lif = (program.op(f"layer{i}.{p}").__dict__ for p in ("ssm", "mixer", "neuron"))
        assert np.abs(kernel["kernel"]).max() <= 127
        assert np.abs(kernel["kernel"]).max(1).min() >= 64          # per-channel exponent uses the range
        assert np.all(w["weight"] % 2 == 0) and np.abs(w["weight"]).max() <= 254
        assert lif["dv"] == 3584 and 0 < lif["vth"] <= 2 ** 16


def test_explicit_act_bits_that_overflow_are_refused():
    # a flat 64-tap kernel sums 64 x 127 = 2**13 per unit of input: a 24-bit stream cannot fit in
    # two 24-bit accumulators (2**13 * 2**13 * 2**23 > 2**46)
    g = float_graph(L=64)
    for i in range(2):
        g.set_op(f"layer{i}.ssm", SSMConv(np.full((12, 64), 0.3), 0, np.zeros((12, 0))))
    with pytest.raises(RangeError, match=r"layer\d\.ssm accumulators .* beyond the 24-bit register limit"):
        compile_float_graph(g, CompileOptions(act_bits=24))
    compile_float_graph(g)          # automatic scaling finds a stream width that fits


def test_automatic_act_bits_refuses_a_model_that_cannot_fit():
    g = float_graph(L=20)
    # a threshold of 1e-9 makes every LIF input astronomically large relative to the threshold
    for name in list(g.nodes_of(ChannelAffine)):
        g.set_op(name, ChannelAffine(np.full(12, 1e9), np.zeros(12)))
    with pytest.raises(RangeError, match=r"layer0.ssm output current can reach \d+, beyond the 24-bit"):
        compile_float_graph(g)


def test_artifact_is_deterministic_and_round_trips(program, tmp_path):
    a, b = tmp_path / "a.loihi2", tmp_path / "b.loihi2"
    save_program(program, str(a))
    save_program(compile_float_graph(float_graph()), str(b))
    assert a.read_bytes() == b.read_bytes()
    loaded = load_program(str(a))
    levels = np.random.default_rng(2).integers(0, 17, size=(8, 20, 1))
    assert np.array_equal(emulate(loaded, levels)["logits"], emulate(program, levels)["logits"])


@pytest.mark.parametrize("example", ["fashion-mnist", "pspikessm-fashion-mnist"])
def test_artifact_bytes_do_not_depend_on_the_thread_count(example, tmp_path):
    """BLAS splits a dot product by the thread count: the report's weight and kernel errors, summed that way,
    once differed in their last bits between a 1-thread and a multi-thread export of the same checkpoint."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {}
    for threads in ("1", "4"):
        out[threads] = tmp_path / f"{threads}.loihi2"
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-m", "neurocompile", "export", f"examples/{example}/ckpt.pt", "-o",
                        str(out[threads])], cwd=root, env=env, check=True, capture_output=True)
    assert out["1"].read_bytes() == out["4"].read_bytes()


def test_artifact_load_rejects_bad_files(program, tmp_path):
    good = tmp_path / "good.loihi2"
    save_program(program, str(good))
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "text": b"hello, not an artifact\n",
        "empty": b"",
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.loihi2"
        p.write_bytes(blob)
        with pytest.raises(ArtifactError, match=str(p.name)):
            load_program(str(p))
    # a zip with a foreign manifest
    foreign = tmp_path / "foreign.loihi2"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("manifest.json", '{"format": "something-else", "version": 1}')
    with pytest.raises(ArtifactError, match="format"):
        load_program(str(foreign))
    # a newer version, and the version-1 layout of earlier releases: both say to re-export
    for version in (99, 4, 3, 2, 1):
        other = tmp_path / f"v{version}.loihi2"
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(other, "w") as dst:
            for item in src.namelist():
                blob = src.read(item)
                if item == "manifest.json":
                    blob = blob.replace(b'"version": 5', f'"version": {version}'.encode())
                dst.writestr(item, blob)
        with pytest.raises(ArtifactError, match=f"version {version} is not supported.*re-export"):
            load_program(str(other))
    with pytest.raises(ArtifactError, match="no such"):
        load_program(str(tmp_path / "missing.loihi2"))


def test_failed_save_leaves_nothing(program, tmp_path, monkeypatch):
    import neurocompile.artifact as artifact

    def boom(_):
        raise OSError("disk full")
    monkeypatch.setattr(artifact, "_npy_bytes", boom)
    with pytest.raises(OSError):
        save_program(program, str(tmp_path / "x.loihi2"))
    assert os.listdir(tmp_path) == []


def test_passes_do_not_mutate_their_input():
    g = float_graph()
    before = g.summary()
    compile_float_graph(g)
    assert g.summary() == before
    assert any(isinstance(g.op(n), ChannelAffine) for n in g.g.nodes)


def test_time_alignment_counts_one_step_per_dense_and_lag_per_two_sided_kernel(program):
    delays = program.delays
    assert delays["layer0.ssm"] == 0 and delays["layer0.residual"] == 1
    assert delays["layer1.ssm"] == 1 and delays["layer1.residual"] == 2 and delays["decoder"] == 2
    assert program.window == program.seq_len + 2
    two = compile_float_graph(float_graph(two_sided=(0, 1)))
    assert two.delays["layer0.ssm"] == 19 and two.delays["layer0.residual"] == 20
    assert two.delays["layer1.ssm"] == 39 and two.delays["decoder"] == 40
    assert two.report["latency_steps"] == 40 and two.window == 60


def test_operation_summary_marks_ac_only_stages(program):
    ops = {r["stage"]: r for r in program.report["operations"]}
    assert ops["layer0.ssm"]["ac_only"] and ops["layer0.mixer"]["ac_only"] and ops["encoder"]["ac_only"]
    assert not ops["layer0.residual"]["ac_only"]


def test_operation_costs_are_numbers_that_add_up(program):
    """Worst case per step, from the node's arrays and proven widths: bit planes x non-zero taps."""
    from neurocompile.operations import Costs, operations, total
    ops = operations(program, program.seq_len)
    enc, ssm, mixer = program.op("encoder"), program.op("layer0.ssm"), program.op("layer0.mixer")
    assert ops["encoder"].per_step.synaptic_events == enc.input_bits * np.count_nonzero(enc.weight) == 5 * 12
    assert ops["layer0.ssm"].per_step.synaptic_events == ssm.stream_bits * np.count_nonzero(ssm.kernel) == 14 * 186
    assert ops["layer0.mixer"].per_step == Costs(accumulates=288, synaptic_events=288,
                                                 synapse_bytes=mixer.weight.size)      # 8-bit weights
    assert ops["layer0.residual"].per_step.multiplies == 12 and not ops["layer0.residual"].ac_only
    assert ops["decoder"].per_sample.multiplies == 4 * 12 and not ops["decoder"].ac_only
    step = total(op.per_step for op in ops.values())
    assert step.accumulates == sum(r["per_step"]["accumulates"] for r in program.report["operations"]) == 6616      # 72 + 2616 + 12 + 288 + 36 + 3244 + 12 + 288 + 36 + 12
    assert step.multiplies == 24
    assert (Costs(accumulates=1, state_bytes=3) + Costs(accumulates=2)).scaled(10) == Costs(accumulates=30, state_bytes=3)
