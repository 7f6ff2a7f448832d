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
from neurocompile.ir import (GLU, LIF, Affine, ChannelScale, Input, MeanOverTime, ResidualAdd, SSMConv, add,
                             new_graph)
from neurocompile.options import CompileOptions
from neurocompile.pipeline import to_program


def float_graph(H=12, L=20, n_layers=2, d_out=4, levels=16, seed=0, kernel_gain=1.0):
    rng = np.random.default_rng(seed)
    cfg = dict(d_input=1, d_output=d_out, d_model=H, n_layers=n_layers, d_state=8, l_max=L, input_levels=levels,
               tau=0.125)
    g = new_graph({"config": cfg, "source": "synthetic"})
    x = add(g, "input", Input(1, L, levels))
    x = add(g, "encoder", Affine(rng.normal(0, 1.0, (H, 1)), rng.normal(0, 0.3, H)), [x])
    for i in range(n_layers):
        decay = np.exp(-np.arange(L)[None] * rng.uniform(0.05, 0.5, (H, 1)))
        kernel = kernel_gain * rng.normal(0, 0.6, (H, L)) * decay
        c = add(g, f"layer{i}.ssm", SSMConv(kernel), [x], layer=i)
        s = add(g, f"layer{i}.vth", ChannelScale(np.exp(-rng.normal(0, 0.2, H))), [c], layer=i)
        s = add(g, f"layer{i}.neuron", LIF(0.125), [s], layer=i)
        m = add(g, f"layer{i}.mixer", Affine(rng.normal(0, 0.4, (2 * H, H)), rng.normal(0, 0.2, 2 * H)), [s], layer=i)
        gl = add(g, f"layer{i}.glu", GLU(), [m], layer=i)
        x = add(g, f"layer{i}.residual", ResidualAdd(), [x, gl], layer=i, ports=["skip", "main"])
    p = add(g, "pool", MeanOverTime(), [x])
    add(g, "decoder", Affine(rng.normal(0, 0.5, (d_out, H)), rng.normal(0, 0.1, d_out)), [p])
    return g


def compile_float_graph(g, options=CompileOptions()):
    g = passes.fold_thresholds(g)
    g = passes.quantize(g, options)
    g = passes.analyze_ranges(g)
    g = passes.align_time_steps(g)
    return to_program(g, {"checkpoint": "synthetic"})


def float_reference(g, levels):
    """The float network (exact LIF, float GLU) in plain numpy, from the float graph."""
    g = passes.fold_thresholds(g)
    cfg = g.meta["config"]
    enc = g.op("encoder")
    x = levels[..., 0:1] / cfg["input_levels"] @ enc.weight.T + enc.bias      # (n, L, H)
    spikes_all = []
    for i in range(cfg["n_layers"]):
        k = g.op(f"layer{i}.ssm").kernel
        L = x.shape[1]
        y = np.zeros_like(x)
        for t in range(L):
            y[:, t] = np.einsum("nlh,hl->nh", x[:, t::-1][:, :L], k[:, :t + 1])
        u = np.zeros_like(y[:, 0])
        spikes = np.zeros_like(y)
        for t in range(L):
            u = 0.125 * u + y[:, t]
            spikes[:, t] = u >= 1
            u = u * (1 - spikes[:, t])
        mix = g.op(f"layer{i}.mixer")
        z = spikes @ mix.weight.T + mix.bias
        H = k.shape[0]
        x = x + z[..., :H] / (1 + np.exp(-z[..., H:]))
        spikes_all.append(spikes.transpose(0, 2, 1).astype(bool))
    dec = g.op("decoder")
    return x.mean(1) @ dec.weight.T + dec.bias, spikes_all


@pytest.fixture(scope="module")
def program():
    return compile_float_graph(float_graph())


def test_integer_network_tracks_the_float_network(program):
    g = float_graph()
    levels = np.random.default_rng(5).integers(0, 17, size=(64, 20, 1))
    f_logits, f_spikes = float_reference(g, levels)
    emu = emulate(program, levels, record=True, device="cpu")
    for i in range(2):
        agreement = (emu["spikes"][i] == f_spikes[i]).mean()
        # quantization moves the LIF input by ~2**-8 of its range; only near-threshold steps flip
        assert agreement > 0.97, (i, agreement)
    scale = 2.0 ** program.readout.logit_frac_bits * program.seq_len
    assert (emu["logits"].argmax(1) == f_logits.argmax(1)).mean() > 0.85
    assert np.corrcoef(emu["logits"].ravel() / scale, f_logits.ravel())[0, 1] > 0.95


def test_range_analysis_bounds_hold_on_extreme_inputs(program):
    """Every observed register value lies inside the proven bound, for all-zero, all-max, random inputs."""
    L, lv = program.seq_len, int(program.model["input_levels"])
    rng = np.random.default_rng(9)
    levels = np.concatenate([np.zeros((1, L, 1), int), np.full((1, L, 1), lv), rng.integers(0, lv + 1, (200, L, 1)),
                             (rng.random((50, L, 1)) < 0.5) * lv])
    emu = emulate(program, levels, record=True, device="cpu")
    worst = {(r["node"], r["register"]): r["worst"] for r in program.report["ranges"]}
    assert np.abs(emu["stream_in"]).max() <= worst[("encoder", "stream")]
    for i in range(program.n_layers):
        assert np.abs(emu["ssm"][i]).max() <= worst[(f"layer{i}.ssm", "LIF input")]
        assert np.abs(emu["voltage"][i]).max() <= worst[(f"layer{i}.neuron", "LIF voltage v")]
        assert np.abs(emu["stream"][i]).max() <= worst[(f"layer{i}.residual", "stream")]
    assert all(r["worst"] <= r["limit"] for r in program.report["ranges"])


def test_kernel_is_8_bit_and_dense_weights_survive_lava_truncation(program):
    for layer in program.layers:
        assert np.abs(layer.kernel).max() <= 127
        assert np.abs(layer.kernel).max(1).min() >= 64          # per-channel exponent uses the range
        assert np.all(layer.mix_weight % 2 == 0) and np.abs(layer.mix_weight).max() <= 254
        assert layer.dv == 3584 and 0 < layer.vth <= 2 ** 16


def test_explicit_act_bits_that_overflow_are_refused():
    # a flat 64-tap kernel sums 64 x 127 = 2**13 per unit of input: a 24-bit stream cannot fit in
    # two 24-bit accumulators (2**13 * 2**13 * 2**23 > 2**46)
    g = float_graph(L=64)
    for i in range(2):
        g.set_op(f"layer{i}.ssm", SSMConv(np.full((12, 64), 0.3)))
    with pytest.raises(RangeError, match=r"layer\d\.ssm accumulators .* beyond the 24-bit register limit"):
        compile_float_graph(g, CompileOptions(act_bits=24))
    compile_float_graph(g)          # automatic scaling finds a stream width that fits


def test_automatic_act_bits_refuses_a_model_that_cannot_fit():
    g = float_graph(L=20)
    # a threshold of 1e-9 makes every LIF input astronomically large relative to the threshold
    for name in list(g.nodes_of(ChannelScale)):
        g.set_op(name, ChannelScale(np.full(12, 1e9)))
    with pytest.raises(RangeError, match="LIF"):
        compile_float_graph(g)


def test_artifact_is_deterministic_and_round_trips(program, tmp_path):
    a, b = tmp_path / "a.loihi2", tmp_path / "b.loihi2"
    save_program(program, str(a))
    save_program(compile_float_graph(float_graph()), str(b))
    assert a.read_bytes() == b.read_bytes()
    loaded = load_program(str(a))
    levels = np.random.default_rng(2).integers(0, 17, size=(8, 20, 1))
    assert np.array_equal(emulate(loaded, levels)["logits"], emulate(program, levels)["logits"])


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
    # a newer version
    newer = tmp_path / "newer.loihi2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.namelist():
            blob = src.read(item)
            if item == "manifest.json":
                blob = blob.replace(b'"version": 1', b'"version": 99')
            dst.writestr(item, blob)
    with pytest.raises(ArtifactError, match="version 99"):
        load_program(str(newer))
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
    assert any(isinstance(g.op(n), ChannelScale) for n in g.g.nodes)


def test_time_alignment_counts_one_step_per_dense(program):
    delays = program.report["delays"]
    assert delays["layer0.ssm"] == 0 and delays["layer0.residual"] == 1
    assert delays["layer1.ssm"] == 1 and delays["layer1.residual"] == 2 and delays["decoder"] == 2
    assert program.window == program.seq_len + 2


def test_operation_summary_marks_ac_only_stages(program):
    ops = {r["stage"]: r for r in program.report["operations"]}
    assert ops["layer0.ssm"]["ac_only"] and ops["layer0.dense"]["ac_only"] and ops["encoder"]["ac_only"]
    assert not ops["layer0.glu"]["ac_only"]
