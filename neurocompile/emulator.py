"""Batched integer emulator: the target's fixed-point arithmetic over whole sequences and batches.

It walks the Program's graph and runs each node through its rule (``EMULATE``, one per integer node
type), every rule calling the ``neurocompile.arith`` functions the Lava process models call:

* ``torch`` (the default on CUDA; also runs on CPU): node by node, each rule on a whole batch of
  tensors.  This is the reference the fast path is tested against.
* ``compiled`` (CPU, the default there): one sample per worker thread; wherever the graph holds the
  pattern SSMConv -> LIF -> Dense -> GLUResidual (a SpikingSSM layer), that layer runs as one
  compiled pass over time (``compiled_layer.run_layer``, numba over the same arith functions) after
  its FFT convolution; pointwise nodes (samplers, GELU, affines) run compiled loops
  (``compiled_pointwise``) and the rest their torch rules.  A graph without the layer pattern
  (P-SpikeSSM has no sequential scan at all) runs over whole batches instead.

The one place the emulator computes differently from the chip is the SSM convolution: an FFT in
float64 instead of bit-serial accumulation.  Both are the exact integer sum of kernel x stream: the
range analysis bounds every sum below 2**23, far inside float64's exact range, and every result is
checked to sit within OFF_INTEGER_LIMIT (0.25) of an integer before it is rounded.

Traces are keyed by node name, each (n, channels, L) in logical time, plus ``<lif>.v`` (the LIF
voltage after reset) and ``logits`` (n, d_out).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import arith
from .errors import EmulatorError
from .ir import (IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU, IntGELUResidual,
                 IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv, IntSSMRecurrent)
from .program import Program, raw_inputs

BACKENDS = ("compiled", "torch")
FFT_SIGNALS_PER_CHUNK = 256      # 256 signals x 2048 float64 = 4 MB per FFT buffer: stays in cache
WORKER_THREADS = os.cpu_count() or 1   # compiled back end: one sample per thread at a time
TIME_CHUNK = 64                  # LIF scan: steps per chunk


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_backend(device: str) -> str:
    return "torch" if str(device).startswith("cuda") else "compiled"


def check_device(device: str) -> str:
    """A torch device the emulator can use, or a one-line error."""
    device = str(device or default_device())
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine (use cpu)")
        return device
    raise ValueError(f"--device {device!r}: unknown device (cpu, cuda or cuda:N)")


# --------------------------------------------------------------------------------------------
# The SSM convolution: exact integer results through a float64 FFT.
# --------------------------------------------------------------------------------------------
def fft_size(L: int, K: int, lag: int = 0) -> int:
    """Power-of-two transform length N whose circular convolution of L inputs with K taps is exact
    at the outputs read, t in [lag, lag + L): the linear result ends at L + K - 2, so what wraps onto
    t (from t + N) is zero once N >= L + K - 1 - lag, and t itself must be < N.  A two-sided kernel
    (K = 2L - 1, lag = L - 1) needs 2L - 1, not 3L - 2: half the transform."""
    n = 1
    while n < max(L + K - 1 - lag, lag + L):
        n *= 2
    return n


def fft_error_bound(n: int, taps: int, kernel_max: int, stream_bits: int) -> float:
    """A priori bound on the float64 FFT convolution's error (Higham-style, generously padded):
    5 * eps * log2(n) * n * taps * max|k| * max|x| for transform length n.
    For L = 1024 causal (n = 2048), 8-bit taps and 16-bit streams it is ~0.1, below the 0.5 that
    rounding allows."""
    return 5 * 2.0 ** -53 * np.log2(n) * n * taps * kernel_max * 2.0 ** (stream_bits - 1)


def kernel_spectrum(kernel, n: int, device) -> torch.Tensor:
    """rfft of the integer taps (H, K), zero-padded to n."""
    taps = kernel if isinstance(kernel, torch.Tensor) else torch.as_tensor(np.asarray(kernel))
    return torch.fft.rfft(taps.to(device=device, dtype=torch.float64), n=n, dim=-1)


def fft_conv(padded: torch.Tensor, spectrum: torch.Tensor, work: torch.Tensor = None,
             out: torch.Tensor = None) -> torch.Tensor:
    """Causal convolution of float64 signals zero-padded to n (..., H, n) with the kernels behind
    ``spectrum``: the unrounded float64 result (..., H, n).  ``work`` and ``out`` are optional
    reused buffers."""
    spec = torch.fft.rfft(padded, dim=-1, out=work)
    spec.mul_(spectrum)
    return torch.fft.irfft(spec, n=padded.shape[-1], dim=-1, out=out)


OFF_INTEGER_LIMIT = 0.25         # an exact result lies on an integer; further away means bounds exceeded


def check_on_integers(worst: float, where: str = "") -> None:
    """Refuse convolution results whose largest distance to an integer is ``worst``."""
    if not worst <= OFF_INTEGER_LIMIT:
        raise EmulatorError(f"{where}FFT convolution left the integers: bounds exceeded")


def rounded(y: torch.Tensor) -> torch.Tensor:
    """The integers an exact convolution result stands for; refuses results that left them."""
    r = torch.round(y)
    if y.numel():
        check_on_integers((y - r).abs().max().item())
    return r.to(torch.int64)


def streamed_conv_exact(x: torch.Tensor, kernel, lag: int) -> torch.Tensor:
    """out[b, h, t] = sum_j kernel[h, j] * x[b, h, t + lag - j] for integer x (B, H, L), taps (H, K),
    in chunks of samples whose FFT buffers stay in cache."""
    B, H, L = x.shape
    n = fft_size(L, kernel.shape[-1], lag)
    spectrum = kernel_spectrum(kernel, n, x.device)
    out = torch.empty_like(x, dtype=torch.int64)
    step = max(1, FFT_SIGNALS_PER_CHUNK // max(H, 1))
    for b in range(0, B, step):
        padded = torch.nn.functional.pad(x[b:b + step].to(torch.float64), (0, n - L))
        out[b:b + step] = rounded(fft_conv(padded, spectrum)[..., lag:lag + L])
    return out


# --------------------------------------------------------------------------------------------
# One rule per integer node: torch tensors, (B, channels, L) in logical time.
# --------------------------------------------------------------------------------------------
def _t(a, device, dtype=torch.int64):
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def lif_scan(a: torch.Tensor, dv: int, vth: int, v: torch.Tensor = None):
    """arith.lif_step over time. a (B, T, H) -> spikes (B, T, H) bool, voltages (B, T, H), last v.

    The current u does not depend on v, so it is computed for the whole chunk at once; the loop
    runs over time-major contiguous slices and does only the voltage update.
    """
    u = arith.lif_current(a).transpose(0, 1).contiguous()              # (T, B, H)
    v = torch.zeros_like(u[0]) if v is None else v
    spikes = torch.empty(u.shape, dtype=torch.bool, device=a.device)
    volts = torch.empty_like(u)
    for t in range(u.shape[0]):
        v, s = arith.lif_voltage_step(v, u[t], dv, vth)
        spikes[t] = s
        volts[t] = v
    return spikes.transpose(0, 1), volts.transpose(0, 1), v


def _exact_float(weight: np.ndarray):
    """float32 when every partial sum of a spike GEMM stays below 2**24 (exact), else float64."""
    return torch.float32 if np.abs(weight).sum(1).max(initial=0) < 2 ** 24 else torch.float64


def emulate_input(op: IntInput, ins, run, name):
    return run.raw


def emulate_encoder(op: IntEncoder, ins, run, name):
    x = ins["main"].transpose(1, 2)                                          # (B, L, C)
    return arith.encode(x, _t(op.weight, x.device), _t(op.bias, x.device), _t(op.shift, x.device)).transpose(1, 2)


def emulate_embedding(op: IntEmbedding, ins, run, name):
    return arith.embed(ins["main"][:, 0, :], _t(op.table, run.device)).transpose(1, 2)


def emulate_ssm_conv(op: IntSSMConv, ins, run, name):
    x = ins["main"].to(torch.int64)                                       # spikes arrive as bool
    hi, lo = arith.split_stream(x, op.split)
    kernel = _t(op.kernel, x.device)
    acc_hi = streamed_conv_exact(hi, kernel, op.lag)
    acc_lo = streamed_conv_exact(lo, kernel, op.lag) if op.split else torch.zeros_like(x)
    bias = _t(op.bias, x.device) if op.bias.shape[1] else 0
    return arith.ssm_current(acc_hi, acc_lo, op.split, _t(op.shift, x.device)[:, None], bias)


def recurrence_sums(op: IntSSMRecurrent, x: torch.Tensor) -> torch.Tensor:
    """The recurrent SSM's reduction sums (B, H, L) for integer input x (B, H, L): arith's fan-out,
    mode step, message and reduction term, one time step at a time over all samples, channels and modes."""
    d = x.device
    dec, gin, bias, gout = (_t(a, d) for a in (op.decay, op.gain_in, op.state_bias, op.gain_out))
    in_shift, send = _t(op.in_shift, d)[:, None, None], _t(op.send_shift, d)[:, None]
    B, H, L = x.shape
    s_re = torch.zeros((B,) + dec.shape[:2], dtype=torch.int64, device=d)
    s_im = torch.zeros_like(s_re)
    acc = torch.empty((B, H, L), dtype=torch.int64, device=d)
    for t in range(L):
        drive = arith.ssm_fan_out(x[:, :, t, None, None], gin, in_shift)              # (B, H, M, 2)
        s_re, s_im = arith.ssm_mode_step(s_re, s_im, drive[..., 0], drive[..., 1], dec[..., 0], dec[..., 1],
                                         int(op.decay_shift), bias[..., 0], bias[..., 1])
        acc[:, :, t] = arith.ssm_reduce_term(arith.ssm_message(s_re, send), arith.ssm_message(s_im, send),
                                             gout[..., 0], gout[..., 1]).sum(-1)
    return acc


def scan_recurrence(op: IntSSMRecurrent, x: torch.Tensor) -> torch.Tensor:
    """The recurrent SSM's output current (B, H, L) for integer input x (B, H, L)."""
    d = x.device
    direct = arith.ssm_fan_out(x, _t(op.direct, d)[:, None], _t(op.direct_shift, d)[:, None])
    return arith.ssm_recurrent_output(recurrence_sums(op, x), _t(op.out_shift, d)[:, None], direct,
                                      _t(op.out_bias, d)[:, None])


def emulate_ssm_recurrent(op: IntSSMRecurrent, ins, run, name):
    return scan_recurrence(op, ins["main"].to(torch.int64))


def emulate_lif(op: IntLIF, ins, run, name):
    a = ins["main"].transpose(1, 2)                                          # (B, L, H)
    spikes, volts, v = [], [], None
    for t0 in range(0, a.shape[1], TIME_CHUNK):
        s, vv, v = lif_scan(a[:, t0:t0 + TIME_CHUNK], op.dv, op.vth, v)
        spikes.append(s)
        volts.append(vv)
    if run.record:
        run.extra[f"{name}.v"] = torch.cat(volts, 1).transpose(1, 2)
    return torch.cat(spikes, 1).transpose(1, 2)


def emulate_dense(op: IntDense, ins, run, name):
    """Binary spikes: weight sums are integers below 2**24 (or 2**53), exact in a float GEMM."""
    s = ins["main"]
    dtype = _exact_float(op.weight)
    w = torch.as_tensor(op.weight, dtype=dtype, device=s.device)
    return torch.matmul(w, s.to(dtype)).to(torch.int64)     # integer sums, exact: no rounding needed


def emulate_glu_residual(op: IntGLUResidual, ins, run, name):
    skip, main = ins["skip"].transpose(1, 2), ins["main"].transpose(1, 2)    # channels last
    d = skip.device
    out = arith.glu_residual(skip, main, _t(op.bias, d), _t(op.value_shift, d), _t(op.gate_shift, d),
                             _t(op.out_shift, d), _t(op.lut, d))
    return out.transpose(1, 2)


def emulate_readout(op: IntReadout, ins, run, name):
    x = ins["main"]
    total = arith.readout_accumulate(0, x, _t(op.pre_shift, x.device)[:, None]).sum(-1)
    return arith.readout_logits(total, _t(op.weight, x.device), _t(op.bias, x.device))


def _channels_last(fn, x, *params, device):
    """Apply an elementwise arith rule with per-channel parameters (H,) to x (B, H, L)."""
    return fn(x.transpose(1, 2), *(p if isinstance(p, int) else _t(p, device) for p in params)).transpose(1, 2)


def emulate_channel_affine(op: IntChannelAffine, ins, run, name):
    return _channels_last(arith.channel_affine, ins["main"], op.in_shift, op.mult, op.offset, op.out_shift,
                          device=run.device)


def uniforms(op: IntSampler, samples: torch.Tensor, H: int, L: int, seed: int, device) -> torch.Tensor:
    """(B, H, L) uniform integers of the sampler's stream for the samples with data-file indices
    ``samples`` (B,)."""
    neuron = torch.arange(H, device=device, dtype=torch.int64)[None, :, None]
    step = torch.arange(L, device=device, dtype=torch.int64)[None, None, :]
    return arith.uniform_bits(int(seed), int(op.stream), samples.to(device)[:, None, None], neuron, step,
                              int(op.prob_bits))


def emulate_sampler(op: IntSampler, ins, run, name):
    x = ins["main"]
    u = uniforms(op, run.samples, x.shape[1], x.shape[2], run.seed, x.device).transpose(1, 2)   # (B, L, H)
    p, spikes = arith.sample(x.transpose(1, 2), *(_t(a, x.device) for a in (op.in_shift, op.lo, op.hi, op.mult,
                                                                                op.offset, op.out_shift)),
                             int(op.prob_bits), u)
    if run.record:
        run.extra[f"{name}.p"] = p.transpose(1, 2)
    return spikes.transpose(1, 2)


def emulate_gelu(op: IntGELU, ins, run, name):
    z = ins["main"] + _t(op.bias, run.device)[:, None]
    return _channels_last(arith.gelu, z, op.value_shift, op.gate_shift, op.out_shift, op.lut, device=run.device)


def emulate_gelu_residual(op: IntGELUResidual, ins, run, name):
    z = (ins["main"] + _t(op.bias, run.device)[:, None]).transpose(1, 2)
    d = run.device
    return arith.gelu_residual(ins["skip"].transpose(1, 2), z, _t(op.value_shift, d), _t(op.gate_shift, d),
                               _t(op.out_shift, d), _t(op.lut, d)).transpose(1, 2)


def emulate_concat(op: IntConcat, ins, run, name):
    return torch.cat([ins["main"], ins["rest"]], 1)


EMULATE = {
    IntInput: emulate_input,
    IntEncoder: emulate_encoder,
    IntEmbedding: emulate_embedding,
    IntSSMConv: emulate_ssm_conv,
    IntSSMRecurrent: emulate_ssm_recurrent,
    IntLIF: emulate_lif,
    IntDense: emulate_dense,
    IntGLUResidual: emulate_glu_residual,
    IntReadout: emulate_readout,
    IntChannelAffine: emulate_channel_affine,
    IntSampler: emulate_sampler,
    IntGELU: emulate_gelu,
    IntGELUResidual: emulate_gelu_residual,
    IntConcat: emulate_concat,
}


# ---- the compiled back end's rules for pointwise nodes: numba loops over the same arith functions
def _i64(a):
    return np.ascontiguousarray(a, dtype=np.int64)


def over_batch(kernel, *args, batched: tuple) -> None:
    """Run a compiled (GIL-free) loop on slices of the batch, one per worker thread; ``batched``
    are the positions of the arguments whose first axis is the sample."""
    B = args[batched[0]].shape[0]
    parts = min(WORKER_THREADS, B)
    if parts <= 1:
        kernel(*args)
        return
    bounds = np.linspace(0, B, parts + 1).astype(int)

    def run(i):
        kernel(*(a[bounds[i]:bounds[i + 1]] if k in batched else a for k, a in enumerate(args)))
    with ThreadPoolExecutor(max_workers=parts) as pool:
        list(pool.map(run, range(parts)))


def compiled_sampler(op: IntSampler, ins, run, name):
    from . import compiled_pointwise as cp
    x = cp.as_int64(ins["main"])
    p, spikes = np.empty_like(x), np.empty(x.shape, bool)
    u = np.empty(x.shape, np.int64)
    over_batch(cp.uniform_table, int(run.seed), int(op.stream), _i64(run.samples.numpy()), int(op.prob_bits), u,
               batched=(2, 4))
    over_batch(cp.sample, x, _i64(op.in_shift), _i64(op.lo), _i64(op.hi), _i64(op.mult), _i64(op.offset),
               _i64(op.out_shift), int(op.prob_bits), u, p, spikes, batched=(0, 8, 9, 10))
    if run.record:
        run.extra[f"{name}.p"] = torch.from_numpy(p)
    return torch.from_numpy(spikes)


def compiled_channel_affine(op: IntChannelAffine, ins, run, name):
    from . import compiled_pointwise as cp
    x = cp.as_int64(ins["main"])
    out = np.empty_like(x)
    over_batch(cp.channel_affine, x, _i64(op.in_shift), _i64(op.mult), _i64(op.offset), _i64(op.out_shift), out,
               batched=(0, 5))
    return torch.from_numpy(out)


def compiled_gelu(op: IntGELU, ins, run, name):
    from . import compiled_pointwise as cp
    z = cp.as_int64(ins["main"])
    out = np.empty_like(z)
    over_batch(cp.gelu, z, _i64(op.bias), _i64(op.value_shift), _i64(op.gate_shift), _i64(op.out_shift),
               _i64(op.lut), out, batched=(0, 6))
    return torch.from_numpy(out)


def compiled_gelu_residual(op: IntGELUResidual, ins, run, name):
    from . import compiled_pointwise as cp
    z, skip = cp.as_int64(ins["main"]), cp.as_int64(ins["skip"])
    out = np.empty_like(z)
    over_batch(cp.gelu_residual, skip, z, _i64(op.bias), _i64(op.value_shift), _i64(op.gate_shift),
               _i64(op.out_shift), _i64(op.lut), out, batched=(0, 1, 7))
    return torch.from_numpy(out)


def compiled_ssm_conv(op: IntSSMConv, ins, run, name):
    """FFT convolutions (torch, a few samples at a time), then one compiled pass for the rest."""
    from . import compiled_pointwise as cp
    x = ins["main"].to(torch.int64)
    B, H, L = x.shape
    n = fft_size(L, op.kernel.shape[1], int(op.lag))
    spectrum = kernel_spectrum(op.kernel, n, x.device)
    out, worst = np.empty((B, H, L), np.int64), np.zeros(B)
    step = max(1, FFT_SIGNALS_PER_CHUNK // max(H, 1))

    def chunk(b):                                  # torch's FFT and the compiled loop release the GIL
        parts = arith.split_stream(x[b:b + step], op.split) if op.split else (x[b:b + step],)
        ys = []
        for p in parts:                             # zero-padded float64 copy in one pass
            padded = torch.zeros(p.shape[:-1] + (n,), dtype=torch.float64)
            padded[..., :L] = p
            ys.append(fft_conv(padded, spectrum).numpy())
        cp.ssm_output(ys[0], ys[-1], int(op.split), int(op.lag), _i64(op.shift), _i64(op.bias), out[b:b + step],
                      worst[b:b + step])
    starts = range(0, B, step)
    if len(starts) > 1 and WORKER_THREADS > 1:
        with ThreadPoolExecutor(max_workers=min(WORKER_THREADS, len(starts))) as pool:
            list(pool.map(chunk, starts))
    else:
        for b in starts:
            chunk(b)
    check_on_integers(float(worst.max(initial=0.0)), f"{name}: ")
    return torch.from_numpy(out)


def compiled_ssm_recurrent(op: IntSSMRecurrent, ins, run, name):
    from . import compiled_pointwise as cp
    x = cp.as_int64(ins["main"])
    out = np.empty_like(x)
    over_batch(cp.ssm_recurrence, x, _i64(op.decay), _i64(op.gain_in), _i64(op.in_shift), _i64(op.state_bias),
               int(op.decay_shift), _i64(op.send_shift), _i64(op.gain_out), _i64(op.out_shift), _i64(op.direct),
               _i64(op.direct_shift), _i64(op.out_bias), out, batched=(0, 12))
    return torch.from_numpy(out)


def compiled_readout(op: IntReadout, ins, run, name):
    from . import compiled_pointwise as cp
    x = cp.as_int64(ins["main"])
    total = np.empty(x.shape[:2], np.int64)
    over_batch(cp.readout_sum, x, _i64(op.pre_shift), total, batched=(0, 2))
    return arith.readout_logits(torch.from_numpy(total), _t(op.weight, "cpu"), _t(op.bias, "cpu"))


COMPILED = {**EMULATE, IntSSMConv: compiled_ssm_conv, IntSSMRecurrent: compiled_ssm_recurrent, IntReadout: compiled_readout, IntSampler: compiled_sampler, IntChannelAffine: compiled_channel_affine,
            IntGELU: compiled_gelu, IntGELUResidual: compiled_gelu_residual}


class _Run:
    """One walk of the graph: the raw input, where tensors live, the rules, and the extra traces."""

    def __init__(self, raw: torch.Tensor, record: bool, seed: int = 0, rules: dict = EMULATE, first_sample: int = 0):
        self.raw, self.record, self.device, self.seed, self.rules = raw, record, raw.device, seed, rules
        self.samples = torch.arange(first_sample, first_sample + raw.shape[0], dtype=torch.int64)   # data-file indices
        self.extra = {}


def run_nodes(program: Program, names, outputs: dict, run: _Run) -> None:
    """Run ``names`` (in order) through their rules, reading and writing ``outputs``."""
    for name in names:
        op = program.op(name)
        ins = {port: outputs[src] for port, src in program.inputs(name).items()}
        outputs[name] = run.rules[type(op)](op, ins, run, name)


def _to_numpy(outputs: dict, extra: dict, program: Program, record: bool) -> dict:
    res = {"logits": outputs[program.output_node].cpu().numpy()}
    if record:
        for name, t in list(outputs.items()) + list(extra.items()):
            if name not in (program.input_node, program.output_node):
                res[name] = t.cpu().numpy()
    return res


def _run_torch(program: Program, raw: np.ndarray, record: bool, device, batch_size: int, progress, seed,
               rules: dict = EMULATE, first_sample: int = 0) -> dict:
    chunks = []
    for start in range(0, len(raw), batch_size):
        run = _Run(torch.as_tensor(raw[start:start + batch_size], dtype=torch.int64, device=device), record, seed,
                   rules, first_sample + start)
        outputs = {}
        run_nodes(program, program.topo(), outputs, run)
        chunks.append(_to_numpy(outputs, run.extra, program, record))
        if progress:
            progress(min(start + batch_size, len(raw)))
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


# --------------------------------------------------------------------------------------------
# Back end "compiled": a sample per thread through the graph, one compiled pass per layer pattern.
# --------------------------------------------------------------------------------------------
def fused_layers(program: Program) -> dict:
    """{conv: (lif, dense, glu)} for every SSMConv -> LIF -> Dense -> GLUResidual chain whose GLU
    skip is the convolution's own input and whose inner nodes feed nothing else."""
    out = {}
    for conv in program.nodes_of(IntSSMConv):
        chain, node = [conv], conv
        for want in (IntLIF, IntDense, IntGLUResidual):
            nxt = program.consumers(node)
            if len(nxt) != 1 or not isinstance(program.op(nxt[0]), want):
                break
            node = nxt[0]
            chain.append(node)
        else:
            glu = chain[-1]
            if (program.inputs(glu)["skip"] == program.inputs(conv)["main"]
                    and program.inputs(glu)["main"] == chain[2]):
                out[conv] = tuple(chain[1:])
    return out


class _CompiledLayer:
    """One fused layer's integer parameters as the arrays ``compiled_layer.run_layer`` takes."""

    def __init__(self, program: Program, conv: str, lif: str, dense: str, glu: str, L: int):
        self.names = (conv, lif, dense, glu)
        c, self.lif, d, g = (program.op(n) for n in self.names)
        self.conv, self.n = c, fft_size(L, c.kernel.shape[1], int(c.lag))
        self.spectrum = kernel_spectrum(c.kernel, self.n, "cpu")
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)
        # Dense sums are 24-bit register values: int32 rows halve the accumulation's memory traffic
        small = np.abs(d.weight).sum(1).max(initial=0) + np.abs(g.bias).max(initial=0) < 2 ** 31
        acc_type = np.int32 if small else np.int64
        self.weight_rows = np.ascontiguousarray(d.weight.T, dtype=acc_type)     # (N, M)
        self.bias = np.ascontiguousarray(g.bias, dtype=acc_type)
        self.shift, self.conv_bias = i64(c.shift), i64(c.bias)
        self.value_shift, self.gate_shift, self.out_shift = i64(g.value_shift), i64(g.gate_shift), i64(g.out_shift)
        self.lut = i64(g.lut)


class _ConvBuffers:
    """One thread's reused FFT buffers for one transform length: fresh multi-MB arrays per call
    would cost page faults, and one sample's H signals at a time keep the transform in cache."""

    def __init__(self, H: int, L: int, n: int):
        self.padded = torch.zeros(2, H, n, dtype=torch.float64)           # the tail stays zero
        self.spectrum = torch.empty(H, n // 2 + 1, dtype=torch.complex128)
        self.result = torch.empty(2, H, n, dtype=torch.float64)
        self.L = L

    def convolve(self, parts: list, spectrum: torch.Tensor) -> np.ndarray:
        """Causal convolutions of the integer (H, L) arrays in ``parts`` (at most two) with the
        kernels behind ``spectrum``: float64 (len(parts), H, n)."""
        padded = self.padded.numpy()
        for i, part in enumerate(parts):
            padded[i, :, :self.L] = part
            fft_conv(self.padded[i], spectrum, work=self.spectrum, out=self.result[i])
        return self.result.numpy()[:len(parts)]


class _CompiledNetwork:
    """Each worker thread carries one sample at a time through the graph -- fused layers as an
    FFT convolution plus one compiled pass, other nodes through their torch rules -- so samples
    run in parallel with no synchronisation and a sample's working set stays in its core's cache."""

    def __init__(self, program: Program, L: int, record: bool, n: int, seed: int, first_sample: int = 0):
        from .compiled_layer import run_layer       # numba: imported (and compiled) on first use
        self.run_layer = run_layer
        self.program, self.L, self.record, self.seed, self.first = program, L, record, seed, first_sample
        heads = fused_layers(program)
        self.layers = {conv: _CompiledLayer(program, conv, *rest, L) for conv, rest in heads.items()}
        inner = {n for conv, rest in heads.items() for n in (conv,) + rest}
        self.plan = []                               # ("fused", conv) or ("node", name), in order
        for name in program.topo():
            if name in self.layers:
                self.plan.append(("fused", name))
            elif name not in inner:
                self.plan.append(("node", name))
        self.out = {"logits": np.empty((n, program.n_classes), np.int64)}
        self._local = threading.local()
        self._unused = np.zeros((1, 1, 1), np.int64)

    def _buffers(self, H: int, n: int) -> _ConvBuffers:
        cache = self._local.__dict__.setdefault("buffers", {})
        if (H, n) not in cache:
            cache[(H, n)] = _ConvBuffers(H, self.L, n)
        return cache[(H, n)]

    def _store(self, b: int, name: str, value: np.ndarray, n: int) -> None:
        if name not in self.out:
            self.out[name] = np.empty((n,) + value.shape, value.dtype)
        self.out[name][b] = value

    def run_sample(self, b: int, raw: np.ndarray, n: int) -> None:
        run = _Run(torch.as_tensor(raw[None], dtype=torch.int64), self.record, self.seed, COMPILED, self.first + b)
        outputs = {}
        for kind, name in self.plan:
            if kind == "node":
                run_nodes(self.program, [name], outputs, run)
                continue
            P = self.layers[name]
            x = np.ascontiguousarray(outputs[self.program.inputs(name)["main"]].numpy())       # (1, H, L)
            H = x.shape[1]
            parts = arith.split_stream(x[0], P.conv.split) if P.conv.split else (x[0],)
            y = self._buffers(H, P.n).convolve(parts, P.spectrum)[:, None]                      # (parts, 1, H, n)
            x_next = np.empty_like(x)
            worst = np.zeros(1)
            if self.record:
                rec = (np.empty_like(x), np.empty(x.shape, bool), np.empty_like(x),
                       np.empty((1, P.weight_rows.shape[1], self.L), np.int64))
            else:
                rec = (self._unused, np.zeros((1, 1, 1), bool), self._unused, self._unused)
            self.run_layer(x, y[0], y[-1], P.conv.split, P.conv.lag, P.shift, P.conv_bias, P.lif.dv, P.lif.vth,
                           P.weight_rows, P.bias, P.value_shift, P.gate_shift, P.out_shift, P.lut, x_next,
                           self.record, *rec, worst)
            check_on_integers(worst[0], f"{name}: ")
            conv, lif, dense, glu = P.names
            outputs[glu] = torch.from_numpy(x_next)
            if self.record:
                for key, value in ((conv, rec[0]), (lif, rec[1]), (f"{lif}.v", rec[2]), (dense, rec[3])):
                    outputs[key] = torch.from_numpy(value)
        self.out["logits"][b] = outputs[self.program.output_node].numpy()[0]
        if self.record:
            for name, t in list(outputs.items()) + list(run.extra.items()):
                if name not in (self.program.input_node, self.program.output_node):
                    self._store(b, name, t.numpy()[0], n)


def _run_compiled(program: Program, raw: np.ndarray, record: bool, progress, seed, first_sample: int = 0) -> dict:
    net = _CompiledNetwork(program, raw.shape[-1], record, len(raw), seed, first_sample)
    if record and len(raw):                        # allocate the trace arrays before threads write them
        net.run_sample(0, raw[0], len(raw))
        first = 1
    else:
        first = 0
    if progress and first:
        progress(1)
    with ThreadPoolExecutor(max_workers=WORKER_THREADS) as pool:   # the compiled pass releases the GIL
        for done, _ in enumerate(pool.map(lambda b: net.run_sample(b, raw[b], len(raw)), range(first, len(raw))),
                                 first + 1):
            if progress:
                progress(done)
    return net.out


def emulate(program: Program, levels, record: bool = False, device=None, batch_size: int = 256,
            progress=None, backend: str = None, seed: int = 0, first_sample: int = 0) -> dict:
    """Run the integer program on (n, L, C) raw inputs (levels or token ids).

    Returns ``logits`` (n, d_out) int64 and, with ``record``, every node's output by node name in
    (n, channels, L) layout plus ``<lif>.v`` voltages.  ``backend``: ``compiled`` (CPU only) or
    ``torch``; by default ``torch`` on CUDA, else ``compiled``.  ``batch_size`` is the torch back
    end's batch; ``progress(done)`` is called as samples finish.  ``seed`` keys the PRNG of
    stochastic samplers (P-SpikeSSM): the same seed gives the same spikes here and on Lava; with
    ``record`` each sampler also gives its integer firing probability as ``<sampler>.p``.
    ``first_sample``: the data-file index of ``levels[0]`` (samples are consecutive); uniforms are
    keyed by it, so a sample's spikes do not depend on the batch or shard it runs in.
    """
    seed = arith.check_seed(seed)
    if isinstance(first_sample, bool) or not 0 <= int(first_sample) < 2 ** 32:
        raise ValueError(f"first sample index {first_sample!r} is outside 0..2**32-1")
    device = check_device(device)
    backend = backend or default_backend(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown emulator backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "compiled" and str(device) != "cpu":
        raise ValueError("the compiled emulator backend runs on the CPU; use backend='torch' on CUDA")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    raw = raw_inputs(program, levels)
    with torch.no_grad():
        if backend == "compiled" and fused_layers(program):
            return _run_compiled(program, raw, record, progress, seed, int(first_sample))
        if backend == "compiled":     # nothing to fuse (P-SpikeSSM): compiled pointwise rules over whole batches
            return _run_torch(program, raw, record, device, batch_size, progress, seed, COMPILED, int(first_sample))
        return _run_torch(program, raw, record, device, batch_size, progress, seed, EMULATE, int(first_sample))
