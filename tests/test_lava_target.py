"""Loihi 2 target on real Lava runs (Loihi2SimCfg): bit-exact with a plain numpy oracle that calls
neurocompile.arith, no state leak between samples run back to back, stock LIF == arith.lif_step,
errors and timeouts surface as LavaRunError without hanging, and the floating_pt models."""
import time

import numpy as np
import pytest

from neurocompile import arith
from neurocompile.errors import LavaRunError
from neurocompile.program import EncoderParams, LayerParams, Program, ReadoutParams
from neurocompile.targets.loihi2 import lowering, runner
from neurocompile.targets.loihi2.processes import glu_residual, ssm_conv

H, L, D_IN, D_OUT, N_LAYERS = 8, 12, 1, 3, 2


def random_program(seed=0, H=H, L=L, n_layers=N_LAYERS, d_in=D_IN, d_out=D_OUT) -> Program:
    """A hand-made Program with plausible scales: spike rates of roughly 10-40 % per layer."""
    rng = np.random.default_rng(seed)
    i64 = lambda a: np.asarray(a, dtype=np.int64)
    enc = EncoderParams(weight=i64(rng.integers(-40, 41, (H, d_in))), bias=i64(rng.integers(-200, 201, H)),
                        input_bits=8, weight_float=rng.normal(size=(H, d_in)) * 0.01, bias_float=rng.normal(size=H))
    layers = []
    for _ in range(n_layers):
        layers.append(LayerParams(
            kernel=i64(rng.integers(-127, 128, (H, L))), kernel_shift=i64(rng.integers(9, 12, H)), stream_bits=16,
            dv=int(rng.integers(200, 2000)), vth=int(rng.integers(300, 900)),
            mix_weight=i64(2 * rng.integers(-127, 128, (2 * H, H))), mix_bias=i64(rng.integers(-300, 301, 2 * H)),
            value_shift=i64(rng.integers(2, 5, H)), gate_shift=i64(rng.integers(4, 7, H)),
            out_shift=i64(rng.integers(5, 8, H)),
            kernel_float=rng.normal(size=(H, L)) * 0.5, mix_weight_float=rng.normal(size=(2 * H, H)) * 0.3,
            mix_bias_float=rng.normal(size=2 * H) * 0.1, tau=0.8, acc_split=int(rng.integers(0, 6))))
    ro = ReadoutParams(weight=i64(rng.integers(-2000, 2001, (d_out, H))), bias=i64(rng.integers(-999, 1000, d_out)),
                       logit_frac_bits=4, pre_shift=i64(rng.integers(0, 3, H)), weight_float=rng.normal(size=(d_out, H)), bias_float=rng.normal(size=d_out))
    lut = i64(np.round(255 / (1 + np.exp(-np.arange(-32, 32) / 8.0))))          # 64 entries, odd centre
    model = dict(kind="spiking_ssm", d_input=d_in, d_output=d_out, d_model=H, n_layers=n_layers, l_max=L,
                 input_levels=256)
    return Program(model=model, stream_frac_bits=i64(np.full(H, 4)), encoder=enc, layers=tuple(layers),
                   readout=ro, sigmoid_lut=lut, sigmoid_in_frac_bits=3, sigmoid_out_frac_bits=8)


def oracle(program: Program, levels) -> dict:
    """Whole-sequence numpy loop over the arith rule, one sample at a time, in logical time."""
    res = {"logits": [], "stream_in": [], "ssm": [[] for _ in program.layers],
           "spikes": [[] for _ in program.layers], "stream": [[] for _ in program.layers]}
    e = program.encoder
    for p in np.asarray(levels, dtype=np.int64):
        x = np.stack([arith.encode(p[t], e.weight, e.bias) for t in range(len(p))])        # (L, H)
        res["stream_in"].append(x.T)
        for i, layer in enumerate(program.layers):
            n = len(x)
            a = np.zeros_like(x)
            for t in range(n):
                hist = np.zeros_like(x)
                hist[:t + 1] = x[t::-1]
                hi, lo = arith.conv_taps_bit_serial(hist, layer.kernel, layer.stream_bits, layer.acc_split)
                a[t] = arith.ssm_current(hi, lo, layer.acc_split, layer.kernel_shift)
            v = np.zeros(x.shape[1], dtype=np.int64)
            s = np.zeros(x.shape, dtype=bool)
            for t in range(n):
                v, s[t] = arith.lif_step(v, a[t], layer.dv, layer.vth)
            dense = s.astype(np.int64) @ layer.mix_weight.T
            x = arith.glu_residual(x, dense, layer.mix_bias, layer.value_shift, layer.gate_shift, layer.out_shift,
                                   program.sigmoid_lut)
            res["ssm"][i].append(a.T)
            res["spikes"][i].append(s.T)
            res["stream"][i].append(x.T)
        total = arith.readout_accumulate(0, x, program.readout.pre_shift).sum(0)
        res["logits"].append(arith.readout_logits(total, program.readout.weight, program.readout.bias))
    out = {"logits": np.stack(res["logits"]), "stream_in": np.stack(res["stream_in"])}
    for k in ("ssm", "spikes", "stream"):
        out[k] = [np.stack(v) for v in res[k]]
    return out


def float_oracle(program: Program, levels) -> dict:
    """The floating_pt network in numpy, written with the same float operations in the same order
    as the Lava models (ours and stock float LIFReset / Dense)."""
    spikes = [[] for _ in program.layers]
    logits = []
    e = program.encoder
    for p in np.asarray(levels, dtype=np.float64):
        x = np.stack([e.weight_float @ p[t] + e.bias_float for t in range(len(p))])
        for i, layer in enumerate(program.layers):
            n = len(x)
            v = np.zeros(x.shape[1])
            s = np.zeros(x.shape, dtype=bool)
            for t in range(n):
                u = (layer.kernel_float[:, t::-1] * x[:t + 1].T).sum(1)
                v = v * (1 - (1.0 - layer.tau)) + u + 0.0
                s[t] = v > 1.0
                v[s[t]] = 0
            nxt = np.empty_like(x)
            for t in range(n):
                z = layer.mix_weight_float[:, s[t]].sum(axis=1) + layer.mix_bias_float
                nxt[t] = x[t] + z[:x.shape[1]] / (1.0 + np.exp(-z[x.shape[1]:]))
            x = nxt
            spikes[i].append(s.T)
        logits.append(program.readout.weight_float @ (x.sum(0) / len(x)) + program.readout.bias_float)
    return {"logits": np.stack(logits), "spikes": [np.stack(s) for s in spikes]}


def assert_same(got: dict, want: dict, samples=slice(None)):
    np.testing.assert_array_equal(got["logits"], want["logits"][samples])
    np.testing.assert_array_equal(got["stream_in"], want["stream_in"][samples])
    for key in ("ssm", "spikes", "stream"):
        assert len(got[key]) == len(want[key])
        for i, (g, w) in enumerate(zip(got[key], want[key])):
            assert g.dtype == w.dtype, (key, i, g.dtype, w.dtype)
            np.testing.assert_array_equal(g, w[samples], err_msg=f"{key}[{i}]")


@pytest.fixture(scope="module")
def program():
    return random_program(seed=0)


@pytest.fixture(scope="module")
def levels():
    return np.random.default_rng(1).integers(0, 256, (4, L, D_IN))


@pytest.fixture(scope="module")
def lava_run(program, levels):
    seen = []
    out = runner.run_lava(program, levels, mode="fixed_pt", record=True, timeout_s=120,
                          progress=lambda done, total: seen.append((done, total)))
    return out, seen


def test_fixed_pt_is_bit_exact_with_the_arith_oracle(program, levels, lava_run):
    out, seen = lava_run
    want = oracle(program, levels)
    rates = [s.mean() for s in want["spikes"]]
    assert all(0.05 < r < 0.5 for r in rates), rates              # the comparison is over real activity
    assert out["logits"].dtype == np.int64 and out["stream_in"].dtype == np.int64
    assert_same(out, want)
    assert seen == [(k, len(levels)) for k in range(1, len(levels) + 1)]


def test_oracle_agrees_with_the_batched_emulator(program, levels):
    emulator = pytest.importorskip("neurocompile.emulator")
    emu = emulator.emulate(program, levels, record=True, device="cpu")
    assert_same(emu, oracle(program, levels))


def test_back_to_back_samples_equal_single_sample_runs(program, levels, lava_run):
    out, _ = lava_run
    for k in (0, len(levels) - 1):                         # the first sample, and one after others ran
        alone = runner.run_lava(program, levels[k:k + 1], record=True, timeout_s=120)
        assert_same(alone, {key: ([v[k:k + 1] for v in val] if isinstance(val, list) else val[k:k + 1])
                            for key, val in out.items() if key != "seconds"})


def test_stock_lif_equals_arith_lif_step():
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    rng = np.random.default_rng(5)
    n, T, dv, vth = 16, 40, 700, 120
    th = vth << arith.LIF_VTH_SHIFT >> arith.LIF_ACT_SHIFT            # a_in that lands exactly on threshold
    a = rng.integers(-th, th + 1, (n, T))
    a[:4] = th + rng.integers(-2, 3, (4, T))                          # at / just around the threshold
    a[4:6] = rng.integers(0, 4, (2, T))                               # slow integration up to it
    a[6:8] = rng.integers(-(1 << 18), 1 << 18, (2, T))                # u wraps and v saturates at 24 bits
    a[8:10] = rng.integers(-3, 1, (2, T)) - th // 3                   # negative drift: decay rounds to zero
    src = Source(data=a.astype(np.int64))
    lif = lowering._stock(LIF, shape=(n,), du=arith.LIF_DU_NO_MEMORY, dv=dv, vth=vth, bias_mant=0, bias_exp=0)
    sink = Sink(shape=(n,), buffer=T)
    src.s_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)
    volts = np.zeros((n, T), dtype=np.int64)
    lif.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    try:
        volts[:, 0] = lif.v.get()
        for t in range(1, T):
            lif.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            volts[:, t] = lif.v.get()
        spikes = sink.data.get() != 0
    finally:
        lif.stop()
    v = np.zeros(n, dtype=np.int64)
    want_s = np.zeros((n, T), dtype=bool)
    want_v = np.zeros((n, T), dtype=np.int64)
    for t in range(T):
        v, want_s[:, t] = arith.lif_step(v, a[:, t], dv, vth)
        want_v[:, t] = v
    np.testing.assert_array_equal(volts, want_v)
    np.testing.assert_array_equal(spikes, want_s)
    assert want_s.any() and (~want_s).any()
    assert (np.abs(want_v) == arith.REGISTER_MAX).any() or (np.abs(a << 6) > arith.REGISTER_MAX).any()


def test_a_raising_process_gives_lava_run_error_quickly(program, levels, monkeypatch):
    def boom(self, skip, dense):
        raise ValueError("injected failure in GLU")
    monkeypatch.setattr(glu_residual.GLUResidualFixed, "mix", boom)
    t0 = time.monotonic()
    with pytest.raises(LavaRunError, match="injected failure in GLU"):
        runner.run_lava(program, levels[:1], timeout_s=60)
    assert time.monotonic() - t0 < 30


def test_timeout_stops_a_hanging_run(program, levels, monkeypatch):
    monkeypatch.setattr(ssm_conv.SSMConvFixed, "convolve", lambda self, tau: time.sleep(3600))
    t0 = time.monotonic()
    with pytest.raises(LavaRunError, match="timeout"):
        runner.run_lava(program, levels[:1], timeout_s=4)
    assert time.monotonic() - t0 < 15


def test_hw_backend_and_bad_arguments_are_one_line_errors(program, levels):
    with pytest.raises(LavaRunError, match="lava-loihi"):
        runner.run_lava(program, levels, backend="hw")
    with pytest.raises(LavaRunError, match="mode"):
        runner.run_lava(program, levels, mode="bit_accurate")
    with pytest.raises(LavaRunError, match="levels must be"):
        runner.run_lava(program, levels[:, :5], timeout_s=60)


def test_unknown_stock_keyword_is_refused():
    from lava.proc.lif.process import LIFReset
    with pytest.raises(TypeError, match="bias"):
        lowering._stock(LIFReset, shape=(2,), bias=1000)


def test_floating_pt_runs_and_matches_a_float_reference(program, levels):
    out = runner.run_lava(program, levels, mode="floating_pt", record=True, timeout_s=120)
    want = float_oracle(program, levels)
    assert out["logits"].dtype == np.float64
    # The reference repeats Lava's float operations in the same order, so the values are expected
    # to be identical; the tolerance only allows for a different BLAS / summation order across
    # numpy builds (last-bit differences that could flip a spike lying within ~1e-12 of threshold).
    for got, ref in zip(out["spikes"], want["spikes"]):
        assert ref.mean() > 0.02
        assert np.mean(got != ref) <= 0.01
    np.testing.assert_allclose(out["logits"], want["logits"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["fixed_pt", "floating_pt"])
def test_fused_lowering_equals_the_hardware_shaped_graph(program, levels, lava_run, mode):
    fused = runner.run_lava(program, levels, mode=mode, record=True, timeout_s=120, lowering="fused")
    if mode == "fixed_pt":
        assert_same(fused, {k: v for k, v in lava_run[0].items() if k != "seconds"})
    else:                                   # the same float operations in the same order as float_oracle
        want = float_oracle(program, levels)
        for got, ref in zip(fused["spikes"], want["spikes"]):
            assert np.mean(got != ref) <= 0.01
        np.testing.assert_allclose(fused["logits"], want["logits"], rtol=1e-9, atol=1e-9)
