"""Batched integer emulator: the Lava fixed_pt arithmetic, run on whole sequences and batches.

Both back ends call the ``neurocompile.arith`` functions the Lava process models call:

* ``compiled`` (CPU, the default there): one sample per worker thread, each layer an FFT
  convolution (torch) followed by one compiled pass over time (``compiled_layer.run_layer``,
  numba) that does the current scaling, the LIF scan, the accumulate-only Dense and the GLU.
* ``torch`` (CUDA, the default there; also runs on CPU): the same steps as tensor ops over the
  batch, with the LIF scanned step by step.

The one place the emulator computes differently from the chip is the SSM convolution: an FFT in
float64 instead of bit-serial accumulation.  Both are the exact integer sum of kernel x stream: the
range analysis bounds every sum below 2**23, far inside float64's exact range, and every result is
checked to sit within OFF_INTEGER_LIMIT (0.25) of an integer before it is rounded.

All traces are (n, H, L): channels, then time.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import arith
from .program import Program

BACKENDS = ("compiled", "torch")
FFT_SIGNALS_PER_CHUNK = 256      # 256 x 2048 float64 = 4 MB per FFT buffer: stays in cache
WORKER_THREADS = os.cpu_count() or 1   # compiled back end: one sample per thread at a time
TIME_CHUNK = 64                  # torch back end: steps per chunk after the convolution


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_backend(device: str) -> str:
    return "torch" if str(device).startswith("cuda") else "compiled"


# --------------------------------------------------------------------------------------------
# The SSM convolution: exact integer results through a float64 FFT.
# --------------------------------------------------------------------------------------------
def fft_error_bound(L: int, kernel_max: int, stream_bits: int) -> float:
    """A priori bound on the float64 FFT convolution's error (Higham-style, generously padded):
    5 * eps * log2(n) * n**2 * max|k| * max|x| for transform length n = 2L.
    For L = 1024, 8-bit taps and 16-bit streams it is ~0.1, below the 0.5 that rounding allows."""
    n = 2 * L
    return 5 * 2.0 ** -53 * np.log2(n) * n * n * kernel_max * 2.0 ** (stream_bits - 1)


def kernel_spectrum(kernel, L: int, device) -> torch.Tensor:
    """rfft of the integer taps (H, L), zero-padded to 2L so the circular convolution is causal."""
    taps = kernel if isinstance(kernel, torch.Tensor) else torch.as_tensor(np.asarray(kernel))
    return torch.fft.rfft(taps.to(device=device, dtype=torch.float64), n=2 * L, dim=-1)


def fft_conv(padded: torch.Tensor, spectrum: torch.Tensor, work: torch.Tensor = None,
             out: torch.Tensor = None) -> torch.Tensor:
    """Causal convolution of float64 signals zero-padded to 2L (..., H, 2L) with the kernels behind
    ``spectrum``: the unrounded float64 result (..., H, 2L), valid for t < L.  ``work`` (the
    spectrum) and ``out`` are optional reused buffers."""
    spec = torch.fft.rfft(padded, dim=-1, out=work)
    spec.mul_(spectrum)
    return torch.fft.irfft(spec, n=padded.shape[-1], dim=-1, out=out)


OFF_INTEGER_LIMIT = 0.25         # an exact result lies on an integer; further away means bounds exceeded


def check_on_integers(worst: float, where: str = "") -> None:
    """Refuse convolution results whose largest distance to an integer is ``worst``."""
    if worst > OFF_INTEGER_LIMIT:
        raise ArithmeticError(f"{where}FFT convolution left the integers: bounds exceeded")


def rounded(y: torch.Tensor) -> torch.Tensor:
    """The integers an exact convolution result stands for; refuses results that left them."""
    r = torch.round(y)
    if y.numel():
        check_on_integers((y - r).abs().max().item())
    return r.to(torch.int64)


def causal_conv_exact(x: torch.Tensor, kernel) -> torch.Tensor:
    """sum_l kernel[h, l] * x[b, h, t-l] for integer x (B, H, L) and taps (H, L), in chunks of
    samples whose FFT buffers stay in cache."""
    B, H, L = x.shape
    spectrum = kernel_spectrum(kernel, L, x.device)
    out = torch.empty_like(x, dtype=torch.int64)
    step = max(1, FFT_SIGNALS_PER_CHUNK // max(H, 1))
    for b in range(0, B, step):
        padded = torch.nn.functional.pad(x[b:b + step].to(torch.float64), (0, L))
        out[b:b + step] = rounded(fft_conv(padded, spectrum)[..., :L])
    return out


# --------------------------------------------------------------------------------------------
# Back end "compiled": a sample per thread through all layers, one compiled pass per layer.
# --------------------------------------------------------------------------------------------
class _CompiledLayer:
    """One layer's integer parameters as the arrays ``compiled_layer.run_layer`` takes."""

    def __init__(self, layer, L: int):
        self.layer = layer
        self.spectrum = kernel_spectrum(layer.kernel, L, "cpu")
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)
        # Dense sums are 24-bit register values: int32 rows halve the accumulation's memory traffic
        small = np.abs(layer.mix_weight).sum(1).max() + np.abs(layer.mix_bias).max() < 2 ** 31
        acc_type = np.int32 if small else np.int64
        self.weight_rows = np.ascontiguousarray(layer.mix_weight.T, dtype=acc_type)     # (H, 2H)
        self.bias = np.ascontiguousarray(layer.mix_bias, dtype=acc_type)
        self.shift = i64(layer.kernel_shift)
        self.value_shift, self.gate_shift, self.out_shift = i64(layer.value_shift), i64(layer.gate_shift), i64(layer.out_shift)


class _ConvBuffers:
    """One thread's reused FFT buffers: fresh multi-MB arrays per call would cost page faults,
    and one sample's H signals at a time keep the transform in cache."""

    def __init__(self, H: int, L: int):
        self.padded = torch.zeros(2, H, 2 * L, dtype=torch.float64)        # upper half stays zero
        self.spectrum = torch.empty(H, L + 1, dtype=torch.complex128)
        self.result = torch.empty(2, H, 2 * L, dtype=torch.float64)
        self.L = L

    def convolve(self, parts: list, spectrum: torch.Tensor) -> np.ndarray:
        """Causal convolutions of the integer (H, L) arrays in ``parts`` (at most two) with the
        kernels behind ``spectrum``: float64 (len(parts), H, 2L), valid for t < L."""
        padded = self.padded.numpy()
        for i, part in enumerate(parts):
            padded[i, :, :self.L] = part
            fft_conv(self.padded[i], spectrum, work=self.spectrum, out=self.result[i])
        return self.result.numpy()[:len(parts)]


class _CompiledNetwork:
    """The compiled back end.  Each worker thread carries one sample at a time through every
    layer -- FFT convolution, then one compiled pass (``run_layer``) -- so samples run in parallel
    with no synchronisation and a sample's working set stays in that core's cache."""

    def __init__(self, program: Program, L: int, record: bool, n: int):
        from .compiled_layer import run_layer       # numba: imported (and compiled) on first use
        self.run_layer = run_layer
        self.program, self.L, self.record = program, L, record
        self.layers = [_CompiledLayer(layer, L) for layer in program.layers]
        self.lut = np.ascontiguousarray(program.sigmoid_lut, dtype=np.int64)
        self.enc_w = np.asarray(program.encoder.weight, np.int64)
        self.enc_b = np.asarray(program.encoder.bias, np.int64)
        self.pre_shift = np.asarray(program.readout.pre_shift, np.int64)[:, None]
        H = self.enc_w.shape[0]
        self.out = {"logits": np.empty((n, program.readout.weight.shape[0]), np.int64)}
        if record:
            self.out["stream_in"] = np.empty((n, H, L), np.int64)
            for key, dtype in (("ssm", np.int64), ("spikes", bool), ("voltage", np.int64), ("stream", np.int64)):
                self.out[key] = [np.empty((n, H, L), dtype) for _ in self.layers]
        self._unused = (np.zeros((1, 1, 1), np.int64), np.zeros((1, 1, 1), bool), np.zeros((1, 1, 1), np.int64))
        self._local = threading.local()

    def run_sample(self, b: int, levels: np.ndarray) -> None:
        if not hasattr(self._local, "buffers"):
            self._local.buffers = _ConvBuffers(self.enc_w.shape[0], self.L)
        out, one = self.out, slice(b, b + 1)
        x = np.ascontiguousarray(arith.encode(levels.astype(np.int64), self.enc_w, self.enc_b).T)[None]  # (1, H, L)
        if self.record:
            out["stream_in"][b] = x[0]
        for i, P in enumerate(self.layers):
            split = P.layer.acc_split
            parts = arith.split_stream(x[0], split) if split else (x[0],)
            y = self._local.buffers.convolve(parts, P.spectrum)[:, None]           # (parts, 1, H, 2L)
            x_next = np.empty_like(x)
            worst = np.zeros(1)
            rec = (out["ssm"][i][one], out["spikes"][i][one], out["voltage"][i][one]) if self.record else self._unused
            self.run_layer(x, y[0], y[-1], split, P.shift, P.layer.dv, P.layer.vth, P.weight_rows, P.bias,
                           P.value_shift, P.gate_shift, P.out_shift, self.lut, x_next, self.record, *rec, worst)
            check_on_integers(worst[0], f"layer {i}: ")
            x = x_next
            if self.record:
                out["stream"][i][b] = x[0]
        total = arith.readout_accumulate(0, x[0], self.pre_shift).sum(-1)
        out["logits"][b] = arith.readout_logits(total, self.program.readout.weight, self.program.readout.bias)


def _run_compiled(program: Program, levels: np.ndarray, record: bool, progress) -> dict:
    net = _CompiledNetwork(program, levels.shape[1], record, len(levels))
    with ThreadPoolExecutor(max_workers=WORKER_THREADS) as pool:   # the compiled pass releases the GIL
        for done, _ in enumerate(pool.map(lambda b: net.run_sample(b, levels[b]), range(len(levels))), 1):
            if progress:
                progress(done)
    return net.out


# --------------------------------------------------------------------------------------------
# Back end "torch": tensor ops over the batch, channels-last so each time step is contiguous.
# --------------------------------------------------------------------------------------------
def _exact_float(weight: np.ndarray):
    """float32 when every partial sum of a spike GEMM stays below 2**24 (exact), else float64."""
    return np.float32 if np.abs(weight).sum(1).max() < 2 ** 24 else np.float64


class _Tensors:
    """The Program's integer arrays as int64 tensors on one device."""

    def __init__(self, program: Program, device):
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64, device=device)
        self.enc_w, self.enc_b = t(program.encoder.weight), t(program.encoder.bias)
        self.layers = [dict(kernel=t(l.kernel), shift=t(l.kernel_shift),
                            mix_w=torch.as_tensor(l.mix_weight.T.astype(_exact_float(l.mix_weight)), device=device),
                            mix_b=t(l.mix_bias), value_shift=t(l.value_shift), gate_shift=t(l.gate_shift),
                            out_shift=t(l.out_shift)) for l in program.layers]
        self.lut = t(program.sigmoid_lut)
        self.ro_w, self.ro_b, self.ro_pre = t(program.readout.weight), t(program.readout.bias), t(program.readout.pre_shift)


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


def _torch_layer(layer, P: dict, lut, x: torch.Tensor, out: dict, record: bool) -> torch.Tensor:
    split = layer.acc_split
    time_last = lambda t: t.transpose(1, 2).contiguous()
    x_hi, x_lo = arith.split_stream(time_last(x), split)
    acc_hi = time_last(causal_conv_exact(x_hi, P["kernel"]))                    # back to (B, L, H)
    acc_lo = time_last(causal_conv_exact(x_lo, P["kernel"])) if split else torch.zeros_like(x)
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


def _torch_batch(program: Program, T: _Tensors, levels: torch.Tensor, record: bool) -> dict:
    x = arith.encode(levels, T.enc_w, T.enc_b)                                      # (B, L, H)
    out = {"stream_in": x, "ssm": [], "spikes": [], "voltage": [], "stream": []}
    for layer, P in zip(program.layers, T.layers):
        x = _torch_layer(layer, P, T.lut, x, out, record)
    out["logits"] = arith.readout_logits(arith.readout_accumulate(0, x, T.ro_pre).sum(1), T.ro_w, T.ro_b)
    conv = lambda t: t.transpose(1, 2).cpu().numpy()     # (B, L, H) -> (B, H, L)
    res = {"logits": out["logits"].cpu().numpy()}
    if record:
        res["stream_in"] = conv(out["stream_in"])
        for key in ("ssm", "spikes", "voltage", "stream"):
            res[key] = [conv(t) for t in out[key]]
    return res


def _run_torch(program: Program, levels: np.ndarray, record: bool, device, batch_size: int, progress) -> dict:
    T = _Tensors(program, device)
    chunks = []
    for start in range(0, len(levels), batch_size):
        lv = torch.as_tensor(levels[start:start + batch_size].astype(np.int64), device=device)
        chunks.append(_torch_batch(program, T, lv, record))
        if progress:
            progress(min(start + batch_size, len(levels)))
    res = {"logits": np.concatenate([c["logits"] for c in chunks])}
    if record:
        res["stream_in"] = np.concatenate([c["stream_in"] for c in chunks])
        for key in ("ssm", "spikes", "voltage", "stream"):
            res[key] = [np.concatenate([c[key][i] for c in chunks]) for i in range(len(program.layers))]
    return res


def emulate(program: Program, levels, record: bool = False, device=None, batch_size: int = 256,
            progress=None, backend: str = None) -> dict:
    """Run the integer network on (n, L, d_in) raw input levels.

    Returns ``logits`` (n, d_out) int64 and, with ``record``, per-layer traces in (n, H, L) layout:
    ``stream_in``, ``ssm`` (LIF input), ``spikes``, ``voltage`` (LIF v after reset), ``stream``.
    ``backend``: ``compiled`` (CPU only) or ``torch``; by default ``torch`` on CUDA, else
    ``compiled``.  ``batch_size`` is the torch back end's batch; ``progress(done)`` is called as
    samples finish.
    """
    device = device or default_device()
    backend = backend or default_backend(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown emulator backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "compiled" and str(device) != "cpu":
        raise ValueError("the compiled emulator backend runs on the CPU; use backend='torch' on CUDA")
    levels = np.asarray(levels)
    with torch.no_grad():
        if backend == "compiled":
            return _run_compiled(program, levels, record, progress)
        return _run_torch(program, levels, record, device, batch_size, progress)
