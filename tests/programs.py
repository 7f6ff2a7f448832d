"""Test helpers: hand-made integer Programs with plausible scales, and oracles written apart from
the code under test -- a per-sample numpy walk over the graph that calls neurocompile.arith with the
bit-serial convolution (the chip's form, not the emulator's FFT), and a float walk that repeats the
floating_pt Lava models' operations in the same order."""
import numpy as np

from neurocompile import arith
from neurocompile.ir import (IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU,
                             IntGELUResidual, IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv)
from neurocompile.passes.align import node_delays
from neurocompile.program import Program, ProgramNode
from neurocompile.target import get_target

i64 = lambda a: np.asarray(a, dtype=np.int64)


def random_program(seed=0, H=8, L=12, n_layers=2, d_in=1, d_out=3, two_sided=(), bias=(), tokens=0) -> Program:
    """Spike rates of roughly 10-40 % per layer.  ``two_sided``: layers with a 2L-1-tap kernel read
    L-1 steps late; ``bias``: layers with a per-step SSM bias; ``tokens``: a vocabulary (embedding)."""
    rng = np.random.default_rng(seed)
    nodes, edges = [], []

    def add(name, op, ins=(), layer=None):
        nodes.append(ProgramNode(name, op, layer))
        edges.extend((src, name, port) for port, src in ins)
        return name

    if tokens:
        x = add("input", IntInput(1, tokens - 1, True))
        x = add("encoder", IntEmbedding(i64(rng.integers(-8000, 8001, (tokens, H))), rng.normal(size=(tokens, H))),
                [("main", x)])
    else:
        x = add("input", IntInput(d_in, 255, False))
        x = add("encoder", IntEncoder(i64(rng.integers(-40, 41, (H, d_in))), i64(rng.integers(-200, 201, H)),
                                      i64(np.arange(H) % 3 - 1), 8,        # shifts -1, 0, 1: both directions
                                      rng.normal(size=(H, d_in)) * 0.01, rng.normal(size=H)), [("main", x)])
    for i in range(n_layers):
        K, lag = (2 * L - 1, L - 1) if i in two_sided else (L, 0)
        b = i64(rng.integers(-300, 301, (H, L))) if i in bias else np.zeros((H, 0), np.int64)
        conv = IntSSMConv(i64(rng.integers(-127, 128, (H, K))) // (2 if K > L else 1), i64(rng.integers(9, 12, H)), b,
                          16, int(rng.integers(0, 6)), lag, rng.normal(size=(H, K)) * 0.5 / (2 if K > L else 1),
                          rng.normal(size=b.shape) * 0.3)
        c = add(f"layer{i}.ssm", conv, [("main", x)], i)
        s = add(f"layer{i}.neuron", IntLIF(int(rng.integers(200, 2000)), int(rng.integers(300, 900)), 0.8),
                [("main", c)], i)
        d = add(f"layer{i}.mixer", IntDense(i64(2 * rng.integers(-127, 128, (2 * H, H))),
                                            rng.normal(size=(2 * H, H)) * 0.3), [("main", s)], i)
        lut = i64(np.round(255 / (1 + np.exp(-np.arange(-32, 32) / 8.0))))          # 64 entries, odd centre
        glu = IntGLUResidual(i64(rng.integers(-300, 301, 2 * H)), i64(rng.integers(2, 5, H)), i64(rng.integers(4, 7, H)),
                             i64(rng.integers(5, 8, H)), lut, rng.normal(size=2 * H) * 0.1)
        x = add(f"layer{i}.residual", glu, [("skip", x), ("main", d)], i)
    add("decoder", IntReadout(i64(rng.integers(-2000, 2001, (d_out, H))), i64(rng.integers(-999, 1000, d_out)),
                              i64(rng.integers(0, 3, H)), 4, rng.normal(size=(d_out, H)), rng.normal(size=d_out)),
        [("main", x)])
    fmt = {"kind": "tokens", "vocab": tokens} if tokens else {"kind": "levels", "low": 0.0, "high": 1.0, "levels": 255}
    model = dict(kind="spikingssm", d_input=d_in, d_output=d_out, d_model=H, n_layers=n_layers, l_max=L, input=fmt)
    program = Program(tuple(nodes), tuple(edges), model)
    return Program(program.nodes, program.edges, model, node_delays(program, get_target()))


def random_raw(program: Program, n: int, seed: int) -> np.ndarray:
    """(n, L, C) raw inputs for the program's input node."""
    top = program.op(program.input_node).levels
    return np.random.default_rng(seed).integers(0, top + 1, (n, program.seq_len, program.input_channels))


def _conv_bit_serial(op: IntSSMConv, x: np.ndarray) -> np.ndarray:
    """x (L, H) -> output current (L, H), one step at a time as the Lava process forms it."""
    L, K = len(x), op.kernel.shape[1]
    out = np.zeros_like(x)
    for t in range(L):
        c = t + op.lag
        rows = np.arange(max(0, c - K + 1), min(c, L - 1) + 1)
        hi, lo = arith.conv_taps_bit_serial(x[rows], op.kernel[:, c - rows], op.stream_bits, op.split)
        out[t] = arith.ssm_current(hi, lo, op.split, op.shift, op.bias[:, t] if op.bias.shape[1] else 0)
    return out


def oracle(program: Program, raw, seed: int = 0, first_sample: int = 0) -> dict:
    """Per sample, node by node, time-major numpy over arith: {node: (n, C, L)} and logits."""
    res = {}
    for index, sample in enumerate(np.asarray(raw, dtype=np.int64), first_sample):   # (L, C)
        val = {}
        for name in program.topo():
            op, ins = program.op(name), {p: val[s] for p, s in program.inputs(name).items()}
            if isinstance(op, IntInput):
                out = sample
            elif isinstance(op, IntEncoder):
                out = np.stack([arith.encode(v, op.weight, op.bias, op.shift) for v in ins["main"]])
            elif isinstance(op, IntEmbedding):
                out = arith.embed(ins["main"][:, 0], op.table)
            elif isinstance(op, IntSSMConv):
                out = _conv_bit_serial(op, ins["main"].astype(np.int64))
            elif isinstance(op, IntLIF):
                v, out, volts = np.zeros(ins["main"].shape[1], np.int64), [], []
                for a in ins["main"]:
                    v, s = arith.lif_step(v, a, op.dv, op.vth)
                    out.append(s)
                    volts.append(v)
                out = np.stack(out)
                res.setdefault(f"{name}.v", []).append(np.stack(volts).T)
            elif isinstance(op, IntDense):
                out = ins["main"].astype(np.int64) @ op.weight.T
            elif isinstance(op, IntGLUResidual):
                out = arith.glu_residual(ins["skip"], ins["main"], op.bias, op.value_shift, op.gate_shift,
                                         op.out_shift, op.lut)
            elif isinstance(op, IntReadout):
                total = arith.readout_accumulate(0, ins["main"], op.pre_shift).sum(0)
                res.setdefault("logits", []).append(arith.readout_logits(total, op.weight, op.bias))
                continue
            elif isinstance(op, IntSampler):                   # one step at a time, as the Lava process draws
                p_all, out = [], []
                for t, v in enumerate(ins["main"]):
                    u = arith.uniform_bits(seed, op.stream, index, np.arange(len(v)), t, op.prob_bits)
                    p, s = arith.sample(v, op.in_shift, op.lo, op.hi, op.mult, op.offset, op.out_shift, op.prob_bits, u)
                    p_all.append(p)
                    out.append(s)
                out = np.stack(out)
                res.setdefault(f"{name}.p", []).append(np.stack(p_all).T)
            elif isinstance(op, IntGELUResidual):
                out = arith.gelu_residual(ins["skip"], ins["main"] + op.bias, op.value_shift, op.gate_shift,
                                          op.out_shift, op.lut)
            elif isinstance(op, IntGELU):
                out = arith.gelu(ins["main"] + op.bias, op.value_shift, op.gate_shift, op.out_shift, op.lut)
            elif isinstance(op, IntChannelAffine):
                out = arith.channel_affine(ins["main"], op.in_shift, op.mult, op.offset, op.out_shift)
            elif isinstance(op, IntConcat):
                out = np.concatenate([ins["main"], ins["rest"]], axis=1)
            val[name] = out
            if name != program.input_node:
                res.setdefault(name, []).append(out.T)
    return {k: np.stack(v) for k, v in res.items()}


def float_oracle(program: Program, raw) -> dict:
    """The floating_pt network: the float copies, in the operations and order of the Lava models."""
    res = {"logits": []}
    for sample in np.asarray(raw, dtype=np.float64):
        val = {}
        for name in program.topo():
            op, ins = program.op(name), {p: val[s] for p, s in program.inputs(name).items()}
            if isinstance(op, IntInput):
                out = sample
            elif isinstance(op, IntEncoder):
                out = np.stack([op.weight_float @ v + op.bias_float for v in ins["main"]])
            elif isinstance(op, IntEmbedding):
                out = op.table_float[ins["main"][:, 0].astype(int)]
            elif isinstance(op, IntSSMConv):
                x, L, K = ins["main"], len(ins["main"]), op.kernel.shape[1]
                out = np.zeros_like(x)
                for t in range(L):
                    c = t + op.lag
                    rows = np.arange(max(0, c - K + 1), min(c, L - 1) + 1)
                    out[t] = (op.kernel_float[:, c - rows] * x[rows].T).sum(1) + (
                        op.bias_float[:, t] if op.bias_float.shape[1] else 0.0)
            elif isinstance(op, IntLIF):
                v, out = np.zeros(ins["main"].shape[1]), []
                for a in ins["main"]:
                    v = v * (1 - (1.0 - op.tau)) + a + 0.0
                    s = v > 1.0
                    v[s] = 0
                    out.append(s)
                out = np.stack(out)
            elif isinstance(op, IntDense):
                out = np.stack([op.weight_float[:, s].sum(axis=1) for s in ins["main"]])
            elif isinstance(op, IntGLUResidual):
                H = ins["skip"].shape[1]
                z = ins["main"] + op.bias_float
                out = ins["skip"] + z[:, :H] / (1.0 + np.exp(-z[:, H:]))
            elif isinstance(op, IntReadout):
                res["logits"].append(op.weight_float @ (ins["main"].sum(0) / len(ins["main"])) + op.bias_float)
                continue
            val[name] = out
            if isinstance(op, IntLIF):
                res.setdefault(name, []).append(out.T)
    return {k: np.stack(v) for k, v in res.items()}


def assert_same(got: dict, want: dict, samples=slice(None), keys=None):
    """Every trace in ``keys`` (default: those both have) identical, dtype included."""
    keys = keys or sorted(set(got) & set(want) - {"seconds"})
    assert "logits" in keys and len(keys) > 1, keys
    for key in keys:
        g, w = np.asarray(got[key]), np.asarray(want[key])[samples]
        assert g.dtype == w.dtype, (key, g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w, err_msg=key)
