"""Batched integer emulator: the Lava fixed_pt arithmetic, vectorised over samples (torch).

It calls the same ``neurocompile.arith`` functions the Lava process models call, on whole
sequences and batches instead of one step of one sample.  The one place it computes differently
is the SSM convolution: an FFT in float64 instead of bit-serial accumulation.  Both are the exact
integer sum of kernel x stream: the range analysis bounds every sum below 2**23, far inside
float64's exact range, and the result is checked to sit on integers before it is rounded.
CUDA is used when present.
"""
from __future__ import annotations

import numpy as np
import torch

from . import arith
from .program import Program


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _exact_float(weight: np.ndarray):
    """float32 when every partial sum of a spike GEMM stays below 2**24 (exact), else float64."""
    return np.float32 if np.abs(weight).sum(1).max() < 2 ** 24 else np.float64


class _Tensors:
    """The Program's integer arrays as int64 tensors on one device."""

    def __init__(self, program: Program, device):
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64, device=device)
        self.enc_w, self.enc_b = t(program.encoder.weight), t(program.encoder.bias)
        self.layers = [dict(kernel_f=torch.as_tensor(l.kernel.T.astype(np.float64), device=device),
                            shift=t(l.kernel_shift), mix_w=torch.as_tensor(l.mix_weight.T.astype(_exact_float(l.mix_weight)), device=device),
                            mix_b=t(l.mix_bias), value_shift=t(l.value_shift), gate_shift=t(l.gate_shift),
                            out_shift=t(l.out_shift)) for l in program.layers]
        self.lut = t(program.sigmoid_lut)
        self.ro_w, self.ro_b, self.ro_pre = t(program.readout.weight), t(program.readout.bias), t(program.readout.pre_shift)


FFT_SIGNALS_PER_CHUNK = 16384     # keeps FFT buffers in the hundreds of MB and the cache warm


def fft_error_bound(L: int, kernel_max: int, stream_bits: int) -> float:
    """A priori bound on the float64 FFT convolution's error (Higham-style, generously padded):
    5 * eps * log2(n) * n**2 * max|k| * max|x| for transform length n = 2L.
    For L = 1024, 8-bit taps and 16-bit streams it is ~0.1, below the 0.5 that rounding allows."""
    n = 2 * L
    return 5 * 2.0 ** -53 * np.log2(n) * n * n * kernel_max * 2.0 ** (stream_bits - 1)


def causal_conv_exact(x: torch.Tensor, kernel_t: torch.Tensor, checked: bool = True) -> torch.Tensor:
    """sum_l kernel[l, h] * x[b, t-l, h] for integer x (B, L, H): FFT in float64, rounded.

    ``checked=False`` is for callers that proved ``fft_error_bound`` < 0.25; otherwise the
    distance of every result to the nearest integer is checked.
    """
    B, L, H = x.shape
    n = 2 * L
    k_spec = torch.fft.rfft(kernel_t.T, n=n, dim=1)                   # (H, n/2+1), time last: contiguous
    out = torch.empty_like(x)
    step = max(1, FFT_SIGNALS_PER_CHUNK // max(H, 1))
    for b in range(0, B, step):
        xt = x[b:b + step].transpose(1, 2).to(torch.float64)           # (b, H, L), a contiguous copy
        y = torch.fft.irfft(torch.fft.rfft(xt, n=n, dim=2) * k_spec, n=n, dim=2)[..., :L]
        r = torch.round(y)
        if checked and y.numel() and (y - r).abs().max().item() > 0.25:
            raise ArithmeticError("FFT convolution left the integers: bounds exceeded")
        out[b:b + step] = r.transpose(1, 2).to(torch.int64)
    return out


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


def spike_dense(spikes: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """Dense over binary spikes: weight sums are integers below 2**24, exact in float32 GEMM."""
    return torch.round(spikes.to(weight_t.dtype) @ weight_t).to(torch.int64)


TIME_CHUNK = 64      # after the convolution, steps are processed in chunks that stay in cache


def _run_layer(program: Program, layer, P: dict, lut, x: torch.Tensor, out: dict, record: bool) -> torch.Tensor:
    checked = fft_error_bound(program.seq_len, int(np.abs(layer.kernel).max()), layer.stream_bits) >= 0.25
    split = layer.acc_split
    x_hi, x_lo = arith.split_stream(x, split)
    acc_hi = causal_conv_exact(x_hi, P["kernel_f"], checked)
    acc_lo = causal_conv_exact(x_lo, P["kernel_f"], checked) if split else torch.zeros_like(x)
    x_next = torch.empty_like(x)
    traces = {"ssm": [], "spikes": [], "voltage": []}
    v = None
    for t0 in range(0, x.shape[1], TIME_CHUNK):
        span = slice(t0, t0 + TIME_CHUNK)
        a = arith.ssm_current(acc_hi[:, span], acc_lo[:, span], split, P["shift"])
        spikes, volts, v = lif_scan(a, layer.dv, layer.vth, v)
        dense = spike_dense(spikes, P["mix_w"])
        x_next[:, span] = arith.glu_residual(x[:, span], dense, P["mix_b"], P["value_shift"], P["gate_shift"],
                                             P["out_shift"], lut)
        if record:
            for key, val in (("ssm", a), ("spikes", spikes), ("voltage", volts)):
                traces[key].append(val)
    if record:
        for key, chunks in traces.items():
            out[key].append(torch.cat(chunks, dim=1))
        out["stream"].append(x_next)
    return x_next


def _run_batch(program: Program, T: _Tensors, levels: torch.Tensor, record: bool) -> dict:
    x = arith.encode(levels, T.enc_w, T.enc_b)                                      # (B, L, H)
    out = {"stream_in": x, "ssm": [], "spikes": [], "voltage": [], "stream": []}
    for layer, P in zip(program.layers, T.layers):
        x = _run_layer(program, layer, P, T.lut, x, out, record)
    out["logits"] = arith.readout_logits(arith.readout_accumulate(0, x, T.ro_pre).sum(1), T.ro_w, T.ro_b)
    return out


def emulate(program: Program, levels, record: bool = False, device=None, batch_size: int = 256,
            progress=None) -> dict:
    """Run the integer network on (n, L, d_in) raw input levels.

    Returns ``logits`` (n, d_out) int64 and, with ``record``, per-layer traces in (n, H, L) layout:
    ``stream_in``, ``ssm`` (LIF input), ``spikes``, ``voltage`` (LIF v after reset), ``stream``.
    """
    device = device or default_device()
    T = _Tensors(program, device)
    levels = np.asarray(levels)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(levels), batch_size):
            lv = torch.as_tensor(levels[start:start + batch_size].astype(np.int64), device=device)
            chunks.append(_to_numpy(_run_batch(program, T, lv, record)))
            if progress:
                progress(min(start + batch_size, len(levels)))
    return _concat(chunks, record)


def _to_numpy(out: dict) -> dict:
    conv = lambda t: t.transpose(1, 2).cpu().numpy()     # (B, L, H) -> (B, H, L)
    res = {"logits": out["logits"].cpu().numpy()}
    if out["ssm"]:
        res["stream_in"] = conv(out["stream_in"])
        for key in ("ssm", "spikes", "voltage", "stream"):
            res[key] = [conv(t) for t in out[key]]
    return res


def _concat(chunks: list, record: bool) -> dict:
    res = {"logits": np.concatenate([c["logits"] for c in chunks])}
    if record:
        res["stream_in"] = np.concatenate([c["stream_in"] for c in chunks])
        for key in ("ssm", "spikes", "voltage", "stream"):
            res[key] = [np.concatenate([c[key][i] for c in chunks]) for i in range(len(chunks[0][key]))]
    return res
