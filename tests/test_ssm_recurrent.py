"""The SSM as an integer diagonal recurrence (IntSSMRecurrent, ``--ssm-lowering recurrent``).

* arith's mode step against a restatement in Python integers of the stated rule (complex product
  exact, each component rounded once, half up), and the numba back end against it;
* the any-length state bound: the worst-case input driven for 20,000 steps stays inside the proven
  bound and comes close to it; a decay that rounds onto the unit circle is refused, naming the mode;
* the modes reproduce the materialized kernel (S4D and trainable-B), and folding norms into the
  recurrence equals applying them around it;
* both emulator back ends equal a plain numpy loop over arith; on real digits samples Lava fixed_pt
  equals the emulator and the fused model equals the three pieces bit for bit (floating_pt too), and
  Lava's compiler picks the fused model in the simulator, the pieces when asked or on the chip; the report names each layer's lowering, its reason and both kernel errors;
  two-sided and DPLR layers keep the convolution.
"""
import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from neurocompile import arith
from neurocompile.errors import RangeError
from neurocompile.intervals import Context, mode_state_bound, node_interval
from neurocompile.ir import ChannelAffine, Input, IntSSMRecurrent, SSMRecurrent, add, new_graph
from neurocompile.options import CompileOptions
from neurocompile.pipeline import compile_checkpoint
from neurocompile.target import get_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
OFFICIAL = os.path.join(ROOT, "tests", "fixtures", "official")
RECURRENT = CompileOptions(ssm_lowering="recurrent")


def _round_half_up(v: int, k: int) -> int:
    return math.floor(v / 2 ** k + 0.5) if k > 0 else v * 2 ** -k


def test_mode_step_is_the_stated_rule():
    rng = np.random.default_rng(0)
    n, k = 5000, 17
    s_re, s_im, x_re, x_im, e_re, e_im = (rng.integers(-2 ** 23, 2 ** 23, n) for _ in range(6))
    a_re, a_im = rng.integers(-2 ** 17, 2 ** 17, n), rng.integers(-2 ** 17, 2 ** 17, n)
    re, im = arith.ssm_mode_step(s_re, s_im, x_re, x_im, a_re, a_im, k, e_re, e_im)
    for i in range(0, n, 37):
        pr = int(a_re[i]) * int(s_re[i]) - int(a_im[i]) * int(s_im[i])
        pi = int(a_re[i]) * int(s_im[i]) + int(a_im[i]) * int(s_re[i])
        assert re[i] == _round_half_up(pr, k) + x_re[i] + e_re[i]
        assert im[i] == _round_half_up(pi, k) + x_im[i] + e_im[i]


def _drive_worst_case(a_re, a_im, k, X, steps):
    """Feed x = X * (a s / |a s|) (rounded): the input that always pushes the state outward."""
    s_re = s_im = 0
    peak = 0
    for _ in range(steps):
        r_re, r_im = a_re * s_re - a_im * s_im, a_re * s_im + a_im * s_re
        norm = math.hypot(r_re, r_im)
        x_re, x_im = (X, 0) if norm == 0 else (round(X * r_re / norm), round(X * r_im / norm))
        # keep the drive inside the bound the proof was given (rounding the direction can exceed X)
        while x_re * x_re + x_im * x_im > X * X:
            x_re, x_im = x_re - np.sign(x_re), x_im - np.sign(x_im)
        s_re, s_im = (int(v) for v in arith.ssm_mode_step(s_re, s_im, x_re, x_im, a_re, a_im, k, 0, 0))
        peak = max(peak, abs(s_re), abs(s_im), math.hypot(s_re, s_im))
    return peak


@pytest.mark.parametrize("a", [0.9995, 0.97 * np.exp(0.3j), 0.999 * np.exp(2.5j), -0.8])
def test_worst_case_input_stays_within_the_proven_bound(a):
    k, X = 17, 3000
    a_re, a_im = int(round(np.real(a) * 2 ** k)), int(round(np.imag(a) * 2 ** k))
    # the proof takes component bounds of the drive: give it X on both (|x| <= X holds)
    bound = int(mode_state_bound(np.array([[a_re, a_im]]), np.array([[X, X]]), k)[0])
    tight = int(mode_state_bound(np.array([[a_re, a_im]]), np.array([[X, 0]]), k)[0])
    peak = _drive_worst_case(a_re, a_im, k, X, 20000)
    assert peak <= tight <= bound
    assert peak >= 0.97 * tight, (peak, tight)          # the proof is nearly reached: not loose


def test_decay_on_the_unit_circle_is_refused_naming_the_mode():
    k = 10
    decay = np.array([[[1000, 10], [1023, 50]]])        # mode 1: |a| = sqrt(1023**2 + 50**2) / 1024 > 1
    with pytest.raises(RangeError, match="channel 0 mode 1"):
        mode_state_bound(decay, np.ones_like(decay), k)


def test_digits_with_too_few_decay_bits_is_refused_naming_layer_and_mode(tmp_path, capsys):
    from neurocompile.cli import main
    out = tmp_path / "x.loihi2"
    assert main(["export", DIGITS, "--ssm-lowering", "recurrent", "--decay-bits", "8", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and not out.exists()
    assert err.startswith(f"neurocompile: error: {DIGITS}: layer0.ssm: channel 0 mode 0: decay |a| = 1.0")


@pytest.mark.parametrize("variant", ["s4d", "diag_b"])
def test_modes_reproduce_the_materialized_kernel(variant):
    from neurocompile.models.ssm_kernel import init_kernel_params
    from neurocompile.ir import S4DKernelParams
    from neurocompile.passes.materialize import s4d_kernel, s4d_modes
    from neurocompile.ssm_kernels import modal_kernel
    params = init_kernel_params(variant, 6, 16, generator=torch.Generator().manual_seed(1))
    params = {k: v.to(torch.float64) for k, v in params.items()}
    if variant == "diag_b":
        params["B"] = params["B"] * (1 + 0.3 * torch.randn(params["B"].shape, generator=torch.Generator().manual_seed(2),
                                                           dtype=torch.float64))
    op = S4DKernelParams({k: v.numpy() for k, v in params.items()}, variant, False, np.linspace(-1, 1, 6))
    m = s4d_modes(op, params)
    want = s4d_kernel(op, params, 50)[0]
    want[:, 0] += op.D
    np.testing.assert_allclose(modal_kernel(m.a, m.b, m.c, m.D, 50), want, rtol=1e-9, atol=1e-12)


def _float_recurrence(r: SSMRecurrent, u):
    s = np.zeros(r.a.shape, complex)
    out = []
    for x in u.T:
        s = r.a * s + r.b * x[:, None] + r.e
        out.append(2 * (r.c * s).sum(1).real + r.D * x + r.d0)
    return np.stack(out, 1)


def test_folding_norms_into_the_recurrence_equals_applying_them():
    from neurocompile.passes.fold import fold_channel_affines
    rng = np.random.default_rng(3)
    H, M, L = 4, 3, 40
    r = SSMRecurrent(a=0.9 * np.exp(1j * rng.uniform(0, 3, (H, M))), b=rng.normal(size=(H, M)) + 1j,
                     c=rng.normal(size=(H, M)) - 0.5j, D=rng.normal(size=H), e=np.zeros((H, M), complex), d0=np.zeros(H))
    pre = ChannelAffine(rng.uniform(0.5, 2, H), rng.normal(size=H))
    post = ChannelAffine(rng.uniform(0.5, 2, H), rng.normal(size=H))
    g = new_graph({"config": {"l_max": L}})
    x = add(g, "input", Input(H, L, {}))
    z = add(g, "norm", pre, [x])
    y = add(g, "ssm", r, [z])
    add(g, "vth", post, [y])
    folded = fold_channel_affines(g)
    assert set(folded.g.nodes) == {"input", "ssm"}
    u = rng.normal(size=(H, L))
    want = post.scale[:, None] * _float_recurrence(r, pre.scale[:, None] * u + pre.shift[:, None]) + post.shift[:, None]
    np.testing.assert_allclose(_float_recurrence(folded.op("ssm"), u), want, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ a real model: digits
@pytest.fixture(scope="module")
def digits_program():
    return compile_checkpoint(DIGITS, RECURRENT)


@pytest.fixture(scope="module")
def digits_levels():
    from neurocompile.datasets import load_dataset
    return load_dataset("digits", "test").x[:6]


def _numpy_recurrence(op, x):
    """A plain numpy loop over arith, one time step at a time: x (H, L) -> output current (H, L)."""
    s_re = np.zeros(op.decay.shape[:2], np.int64)
    s_im = np.zeros_like(s_re)
    out = []
    for u in x.T:
        d = arith.ssm_fan_out(u[:, None, None], op.gain_in, op.in_shift[:, None, None])
        s_re, s_im = arith.ssm_mode_step(s_re, s_im, d[..., 0], d[..., 1], op.decay[..., 0], op.decay[..., 1],
                                         op.decay_shift, op.state_bias[..., 0], op.state_bias[..., 1])
        m_re, m_im = arith.ssm_message(s_re, op.send_shift[:, None]), arith.ssm_message(s_im, op.send_shift[:, None])
        acc = arith.ssm_reduce_term(m_re, m_im, op.gain_out[..., 0], op.gain_out[..., 1]).sum(1)
        out.append(arith.ssm_recurrent_output(acc, op.out_shift, arith.ssm_fan_out(u, op.direct, op.direct_shift),
                                              op.out_bias))
    return np.stack(out, 1)


def test_both_emulator_backends_equal_a_numpy_loop_over_arith(digits_program, digits_levels):
    from neurocompile.emulator import emulate
    traces = {b: emulate(digits_program, digits_levels, record=True, device="cpu", backend=b)
              for b in ("torch", "compiled")}
    for name in ("layer0.ssm", "layer1.ssm"):
        op = digits_program.op(name)
        src = digits_program.inputs(name)["main"]
        x = traces["torch"][src]
        want = np.stack([_numpy_recurrence(op, xi) for xi in x])
        assert np.array_equal(traces["torch"][name], want)
        assert np.array_equal(traces["compiled"][name], want)
        assert np.abs(want).max() > 200 and np.count_nonzero(want) > want.size // 2     # real activity
    assert np.array_equal(traces["torch"]["logits"], traces["compiled"]["logits"])


def test_state_of_real_input_stays_within_the_proof(digits_program, digits_levels):
    from neurocompile.emulator import emulate
    from neurocompile.intervals import recurrent_ranges, register_table
    out = emulate(digits_program, digits_levels, record=True, device="cpu")
    _, intervals = register_table(digits_program, Context(digits_program.seq_len, get_target()))
    for name in ("layer0.ssm", "layer1.ssm"):
        op, src = digits_program.op(name), digits_program.inputs(name)["main"]
        ranges, _ = recurrent_ranges(op, *intervals[src])
        x = out[src]
        s_re = np.zeros((len(x),) + op.decay.shape[:2], np.int64)
        s_im = np.zeros_like(s_re)
        peak = 0
        for t in range(x.shape[2]):
            d = arith.ssm_fan_out(x[:, :, t, None, None], op.gain_in, op.in_shift[:, None, None])
            s_re, s_im = arith.ssm_mode_step(s_re, s_im, d[..., 0], d[..., 1], op.decay[..., 0], op.decay[..., 1],
                                             op.decay_shift, op.state_bias[..., 0], op.state_bias[..., 1])
            assert np.all(np.abs(s_re) <= ranges["state"]) and np.all(np.abs(s_im) <= ranges["state"])
            peak = max(peak, int(np.abs(s_re).max()))
        assert peak > 2 ** 16                                   # the states use their registers


LAVA_SAMPLES = 3


@pytest.fixture(scope="module")
def lava_runs(digits_program, digits_levels):
    """(mode, pieces, cluster) -> the recorded Lava run of the first samples: the fused model (in the
    simulator's Cluster, or one Lava process per node) and the three pieces (one process each)."""
    from neurocompile.targets.loihi2.runner import run_lava
    runs = {}

    def get(mode, pieces, cluster=None):
        if (mode, pieces, cluster) not in runs:
            runs[mode, pieces, cluster] = run_lava(digits_program, digits_levels[:LAVA_SAMPLES], mode=mode, record=True,
                                                   timeout_s=300, pieces=pieces, cluster=cluster)
        return runs[mode, pieces, cluster]
    return get


def _same_traces(a: dict, b: dict):
    assert set(a) == set(b)
    for name in a:
        if name != "seconds":
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


@pytest.mark.lava
def test_lava_picks_the_fused_model_in_the_simulator_and_the_pieces_on_the_chip(digits_program, digits_levels):
    """Which model runs the layer: the fused PyLoihiProcessModel under Loihi2SimCfg, the SubProcessModel's
    three pieces when asked for and under Loihi2HwCfg (its model map: compiling for the chip needs
    lava-loihi, not installed here); the simulator's picks as Lava's compiler resolves them."""
    from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel

    from neurocompile.targets.loihi2.lowering import build_network, run_config
    from neurocompile.targets.loihi2.processes import ssm_recurrent as sr
    for mode, fused in (("fixed_pt", sr.SSMRecurrentFixed), ("floating_pt", sr.SSMRecurrentFloat)):
        sim, hw = run_config(mode), run_config(mode, "hw")
        assert type(sim) is Loihi2SimCfg and type(hw) is Loihi2HwCfg
        assert sim.exception_proc_model_map[sr.SSMRecurrent] is fused
        assert hw.exception_proc_model_map[sr.SSMRecurrent] is sr.SSMRecurrentPieces
        assert run_config(mode, pieces=True).exception_proc_model_map[sr.SSMRecurrent] is sr.SSMRecurrentPieces
        assert run_config(mode, "hw", pieces=False).exception_proc_model_map[sr.SSMRecurrent] is fused
    fused = {sr.SSMRecurrent: sr.SSMRecurrentFixed}
    pieces3 = {sr.SSMFanOut: sr.SSMFanOutFixed, sr.SSMModes: sr.SSMModesFixed, sr.SSMReduce: sr.SSMReduceFixed}
    # ours (the map given to the RunConfig), and Lava's own rule agreeing: a leaf model with the tag
    # unless select_sub_proc_model asks for the SubProcessModel (the Extractor has no tagged model)
    lava = lambda sub: Loihi2SimCfg(select_tag="fixed_pt", select_sub_proc_model=sub,
                                    exception_proc_model_map={Extractor: PyLoihiExtractorModel})
    for cfg, pieces, want in ((run_config("fixed_pt"), None, fused), (run_config("fixed_pt", pieces=True), True, pieces3),
                              (lava(False), None, fused), (lava(True), True, pieces3)):
        net = build_network(digits_program, record=False, levels=digits_levels[:1])
        exe = net.source.compile(cfg)
        picked = {type(p): exe.proc_builders[p].proc_model for p in exe.process_list}
        ours = {k: v for k, v in picked.items() if k.__module__ == sr.__name__}
        assert ours == want
        recurrent = len(list(digits_program.nodes_of(IntSSMRecurrent)))       # one process, or three pieces each
        assert len(exe.process_list) == len(digits_program.nodes) + 1 + (0 if pieces is None else 2 * recurrent)


@pytest.mark.lava
def test_lava_fixed_pt_fused_equals_the_pieces_and_the_emulator(lava_runs, digits_program, digits_levels):
    from neurocompile.emulator import emulate
    from neurocompile.validate import compare_traces
    fused, pieces = lava_runs("fixed_pt", None), lava_runs("fixed_pt", True)
    _same_traces(fused, pieces)
    _same_traces(fused, lava_runs("fixed_pt", False, cluster=False))      # one Lava process per node
    emu = emulate(digits_program, digits_levels[:LAVA_SAMPLES], record=True, device="cpu")
    assert compare_traces(fused, emu) == []
    for name in ("layer0.ssm", "layer1.ssm", "logits"):
        assert np.array_equal(fused[name], emu[name]) and np.array_equal(pieces[name], emu[name])
    assert np.abs(fused["layer1.ssm"]).max() > 200                       # real activity


@pytest.mark.lava
def test_lava_floating_pt_fused_equals_the_pieces(lava_runs):
    """The same float operations in the same order on the same float64 values (the pieces' ports
    carry float64 unchanged): equal, not merely close."""
    _same_traces(lava_runs("floating_pt", None), lava_runs("floating_pt", True))
    _same_traces(lava_runs("floating_pt", None), lava_runs("floating_pt", False, cluster=False))


def test_report_names_lowering_reason_and_both_kernel_errors(digits_program):
    from neurocompile.cli import export_summary
    table = digits_program.report["ssm_lowering"]
    assert set(table) == {"layer0.ssm", "layer1.ssm"}
    for row in table.values():
        assert row["lowering"] == "recurrent" and "causal diagonal" in row["reason"]
        assert set(row["kernel_error"]) == {"recurrent", "conv"}
        assert 0 < row["kernel_error"]["recurrent"]["taps"] < 0.05
    ops = {r["stage"]: r for r in digits_program.report["operations"]}
    H, M = digits_program.op("layer0.ssm").decay.shape[:2]
    assert ops["layer0.ssm"]["ac_only"] is False and ops["layer0.ssm"]["per_step"]["multiplies"] == 8 * H * M + H
    assert "8 multiplies per mode and step" in ops["layer0.ssm"]["how"]
    text = export_summary(digits_program, "x.loihi2")
    assert "layer0.ssm        recurrent  causal diagonal" in text and "kernel error recurrent" in text


def test_artifact_round_trip_and_deterministic_bytes(digits_program, tmp_path):
    from neurocompile.artifact import load_program, save_program
    a, b = tmp_path / "a.loihi2", tmp_path / "b.loihi2"
    save_program(digits_program, str(a))
    save_program(compile_checkpoint(DIGITS, RECURRENT), str(b))
    assert a.read_bytes() == b.read_bytes()
    loaded = load_program(str(a))                         # the loader re-proves the recurrence
    assert np.array_equal(loaded.op("layer0.ssm").decay, digits_program.op("layer0.ssm").decay)


def test_tampered_decay_is_refused_by_the_loader(digits_program, tmp_path):
    import dataclasses

    from neurocompile.artifact import load_program, save_program
    from neurocompile.errors import ArtifactError
    from neurocompile.program import Program, ProgramNode
    op = digits_program.op("layer1.ssm")
    decay = op.decay.copy()
    decay[3, 2] = [1 << op.decay_shift, 0]                # |a| = 1: an integrator, no bound
    nodes = tuple(ProgramNode(n.name, dataclasses.replace(n.op, decay=decay), n.layer) if n.name == "layer1.ssm"
                  else n for n in digits_program.nodes)
    bad = Program(nodes, digits_program.edges, digits_program.model, digits_program.delays, digits_program.report)
    path = tmp_path / "bad.loihi2"
    save_program(bad, str(path))
    with pytest.raises(ArtifactError, match="layer1.ssm.*channel 3 mode 2"):
        load_program(str(path))


@pytest.mark.parametrize("fixture, reason", [("spikingssm_bidir_prenorm_batchnorm.ckpt", "two-sided"),
                                             ("pspikessm_unidirectional_prenorm_bn.ckpt", "DPLR")])
def test_two_sided_and_dplr_layers_keep_the_convolution_with_the_reason(fixture, reason):
    from neurocompile.ir import IntSSMConv
    program = compile_checkpoint(os.path.join(OFFICIAL, fixture), RECURRENT)
    table = program.report["ssm_lowering"]
    assert table and all(row["lowering"] == "conv" and reason in row["reason"] for row in table.values())
    assert all(isinstance(program.op(n), IntSSMConv) for n in table)


@pytest.mark.lava
def test_lava_floating_pt_runs_the_float_recurrence(lava_runs, digits_program):
    """The floating_pt model (fused; the pieces equal it, above) computes the float recurrence on its float input."""
    out = lava_runs("floating_pt", None)
    op = digits_program.op("layer0.ssm")
    pair = lambda a: a[..., 0] + 1j * a[..., 1]
    r = SSMRecurrent(a=pair(op.decay_float), b=pair(op.gain_in_float), c=pair(op.gain_out_float) / 2,
                     D=op.direct_float, e=pair(op.state_bias_float), d0=op.out_bias_float)
    for x, y in zip(out["encoder"], out["layer0.ssm"]):
        np.testing.assert_allclose(y, _float_recurrence(r, x), rtol=1e-9, atol=1e-9)
    assert np.abs(out["layer0.ssm"]).max() > 0.1


@pytest.mark.parametrize("ckpt, want", [
    (os.path.join(OFFICIAL, "spikingssm_causal_s4d_linear.ckpt"), "auto: both fit neurocores"),
    (DIGITS, "auto: both fit neurocores"),
    (os.path.join(OFFICIAL, "spikingssm_bidir_prenorm_batchnorm.ckpt"), "two-sided")])
def test_auto_chooses_per_layer_from_the_plans_and_says_why(ckpt, want):
    """L = 784 and L = 64: both lowerings fit neurocores (the convolution as delay lines), the
    recurrence needs less core memory at a smaller kernel error; two-sided kernels keep the convolution."""
    from neurocompile.ir import IntSSMConv, IntSSMRecurrent
    program = compile_checkpoint(ckpt, CompileOptions(ssm_lowering="auto"))
    table = program.report["ssm_lowering"]
    assert table and all(want in row["reason"] for row in table.values())
    kind = IntSSMConv if want == "two-sided" else IntSSMRecurrent
    assert all(isinstance(program.op(n), kind) for n in table)
    plan = get_target().load("planner")(program)
    assert all(plan.process(n).placement.where == "neurocore" for n in table if kind is IntSSMRecurrent)


def test_auto_takes_the_recurrence_where_the_convolution_cannot_be_placed():
    """On a target whose chip plans 4 cores of 4 KiB (the budgets are the target's, and auto plans
    against the target it compiles for), the L = 784 convolution's delay lines do not fit one chip and
    go to the host; the recurrence fits neurocores, so auto takes it, saying why."""
    from neurocompile.ir import IntSSMConv, IntSSMRecurrent
    from neurocompile.targets.loihi2.target import BUDGETS, LOIHI2
    small = dataclasses.replace(LOIHI2, budgets=dataclasses.replace(BUDGETS, memory_per_core_bytes=4096,
                                                                     cores_planned_per_chip=4))
    ckpt = os.path.join(OFFICIAL, "spikingssm_causal_s4d_linear.ckpt")
    plan = small.load("planner")
    conv = compile_checkpoint(ckpt, CompileOptions(ssm_lowering="conv"), target=small)
    program = compile_checkpoint(ckpt, CompileOptions(ssm_lowering="auto"), target=small)
    table = program.report["ssm_lowering"]
    assert set(table) == {"layer0.ssm", "layer1.ssm"}
    for name, row in table.items():
        assert isinstance(conv.op(name), IntSSMConv) and isinstance(program.op(name), IntSSMRecurrent)
        assert plan(conv, target=small).process(name).placement.where == "host"
        assert plan(program, target=small).process(name).placement.where == "neurocore"
        assert row["lowering"] == "recurrent"
        assert row["reason"].startswith("auto: the convolution goes to the host (SSMConv (Python)); the recurrence "
                                        "fits neurocores (stock Sparse fan-out")
    # on Loihi 2's own budgets both fit, and the choice is made on memory and kernel error
    assert "auto: both fit neurocores" in compile_checkpoint(ckpt, CompileOptions(ssm_lowering="auto")) \
        .report["ssm_lowering"]["layer0.ssm"]["reason"]
