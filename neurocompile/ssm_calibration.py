"""Kernel error at the data's amplitude (``export --calibrate DATA``): each SSM layer's kernel, under
both lowerings, applied to the inputs that really reach the layer.

The inputs are the compiled integer program's own: the emulator runs the first calibration samples
of the test split through it and records what arrives at each SSM layer.  That is exact and the
same input for both sides of the comparison (the float model would reach the layer with other
spikes, so its input would not be the integer layer's); in model units it is those integers at the
layer's input fixed point.  Each lowering's integers are then run on it -- the convolution: its
quantized taps, an exact integer sum; the recurrence: the emulator's rule, which rounds inside its
loop, less its response to zeros -- and compared with the float kernel on the same input: relative
L2 over samples, channels and steps.  As for the impulse figure (``ssm_kernels``), what is compared
is the kernel: the biases (a response to no input) and the output's final rounding, which both
lowerings share, are left out, so the two figures measure one thing on two inputs.

A layer exported as a convolution gets its recurrent figure from the model compiled with
``--ssm-lowering recurrent``, on the same input re-expressed at that program's input fixed point
(rounded there as that program would round it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from .ssm_kernels import relative_l2

DEFAULT_SAMPLES = 64


@dataclasses.dataclass
class Calibration:
    """The data to calibrate on: a built-in dataset name or an .npz (read as ``validate --data``
    reads it), its first ``samples`` test samples.  ``raw(program)`` loads them once."""
    data: str
    samples: int = DEFAULT_SAMPLES
    _raw: np.ndarray = dataclasses.field(default=None, init=False, repr=False)

    def raw(self, program) -> np.ndarray:
        if self._raw is None:
            from .api import load_data
            _, _, raw = load_data(program, self.data, "test")
            self._raw = np.asarray(raw)[:self.samples]
        return self._raw

    def record(self) -> dict:
        """What the artifact records: the file's name (not its path: artifacts do not depend on where
        data lies), the sample count and the samples' digest (which data, whatever its name)."""
        raw = np.ascontiguousarray(self._raw, dtype=np.int64)
        return {"data": os.path.basename(self.data), "samples": int(len(raw)),
                "samples_sha256": hashlib.sha256(raw.tobytes()).hexdigest()}


def describe(record: dict) -> str:
    return f"calibrated on {record['samples']} samples of {record['data']}"


def float_conv(u, kernel, lag: int):
    """The float kernel (H, K) on float input u (B, H, L), at the steps the layer emits."""
    import torch

    from .emulator import fft_conv, fft_size, kernel_spectrum
    B, H, L = u.shape
    n = fft_size(L, kernel.shape[-1], lag)
    x = torch.nn.functional.pad(torch.as_tensor(u, dtype=torch.float64), (0, n - L))
    return fft_conv(x, kernel_spectrum(np.asarray(kernel, np.float64), n, "cpu"))[..., lag:lag + L].numpy()


def _int_conv(x, taps, lag: int, scale_bits) -> np.ndarray:
    """Integer taps on integer input, the exact sum, in model units (2**-scale_bits per channel)."""
    import torch

    from .emulator import streamed_conv_exact
    acc = streamed_conv_exact(torch.as_tensor(x), np.asarray(taps), lag).numpy()
    return acc * np.exp2(-np.asarray(scale_bits, np.float64))[None, :, None]


def float_modes(op):
    """(a, b, c, D) of a recurrent node's float fields (complex modes; gain_out holds 2c)."""
    pair = lambda a: a[..., 0] + 1j * a[..., 1]
    return pair(op.decay_float), pair(op.gain_in_float), pair(op.gain_out_float) / 2.0, op.direct_float


def _sums(op, x) -> np.ndarray:
    """The recurrence's reduction sums (B, H, L) for integer x, exactly: the emulator's compiled rule
    with the output's rescaling, D and bias off (shift_round(acc, 0) is acc)."""
    import torch

    from .emulator import compiled_ssm_recurrent
    bare = dataclasses.replace(op, out_shift=np.zeros_like(op.out_shift), direct=np.zeros_like(op.direct),
                               out_bias=np.zeros_like(op.out_bias))
    return compiled_ssm_recurrent(bare, {"main": torch.as_tensor(x)}, None, "").numpy()


def _recurrent(x, op, out_frac) -> np.ndarray:
    """The integer recurrence's response to x (B, H, L), less its response to zeros, in model units."""
    sums = _sums(op, x) - _sums(op, np.zeros_like(x[:1]))
    g = np.asarray(out_frac, np.float64)
    direct = x * (op.direct * np.exp2(-(op.direct_shift + g)))[None, :, None]
    return sums * np.exp2(-(op.out_shift + g))[None, :, None] + direct


def recurrent_errors(x, in_frac, op, out_frac, kernel_bits: int) -> dict:
    """Both lowerings of a recurrent layer on integer input x at 2**-in_frac: the recurrence (``op``)
    and the convolution the compiler would take (its float kernel's quantized taps)."""
    from .quant import quantize_kernel
    from .ssm_kernels import modal_kernel
    L = x.shape[-1]
    exact = modal_kernel(*float_modes(op), L)
    u = x * np.exp2(-np.asarray(in_frac, np.float64))[None, :, None]
    want = float_conv(u, exact, 0)
    kq, e = quantize_kernel(exact, kernel_bits)
    return {"recurrent": relative_l2(want, _recurrent(x, op, out_frac)),
            "conv": relative_l2(want, _int_conv(x, kq, 0, np.asarray(e) + in_frac))}


def conv_error(x, in_frac, op, out_frac) -> float:
    """A convolution layer (IntSSMConv) on integer input x at 2**-in_frac: its taps stand for
    kernel * 2**-(shift + g - in_frac) (shift = taps' exponent + in_frac - g)."""
    u = x * np.exp2(-np.asarray(in_frac, np.float64))[None, :, None]
    return relative_l2(float_conv(u, op.kernel_float, op.lag), _int_conv(x, op.kernel, op.lag, op.shift + np.asarray(out_frac)))


def layer_inputs(graph, program, raw) -> dict:
    """{SSM node: its integer input (B, H, L)} with the compiled program run on ``raw`` by the emulator."""
    from .emulator import emulate
    trace = emulate(program, raw, record=True, device="cpu")
    return {name: np.asarray(trace[graph.inputs(name)["main"]]).astype(np.int64) for name in graph.meta["ssm_fracs"]}


def measure(graph, float_graph, options, target, calibration: Calibration, compile_graph) -> dict:
    """{SSM node: {lowering: relative L2 error on the calibration samples}} for the compiled ``graph``."""
    from .arith import shift_round
    from .errors import RangeError
    from .ir import IntSSMConv, IntSSMRecurrent
    from .pipeline import to_program
    program = to_program(graph, {}, target)
    inputs = layer_inputs(graph, program, calibration.raw(program))
    rec_graph = graph
    if options.ssm_lowering != "recurrent" and any(isinstance(graph.op(n), IntSSMConv) for n in inputs):
        try:
            rec_graph = compile_graph(float_graph, dataclasses.replace(options, ssm_lowering="recurrent"), target)
        except RangeError:
            pass                                               # the recurrence is refused: conv figures only
    out = {}
    for name, x in inputs.items():
        in_frac, out_frac = graph.meta["ssm_fracs"][name]
        op = graph.op(name)
        if isinstance(op, IntSSMRecurrent):
            out[name] = recurrent_errors(x, in_frac, op, out_frac, options.kernel_bits)
            continue
        row = {"conv": conv_error(x, in_frac, op, out_frac)}
        rec = rec_graph.op(name)
        if isinstance(rec, IntSSMRecurrent):      # the same input at the recurrent program's input fixed point
            rec_in, rec_out = rec_graph.meta["ssm_fracs"][name]
            x_rec = shift_round(x, (np.asarray(in_frac) - np.asarray(rec_in))[None, :, None])
            row["recurrent"] = recurrent_errors(x_rec, rec_in, rec, rec_out, options.kernel_bits)["recurrent"]
        out[name] = {k: row[k] for k in ("recurrent", "conv") if k in row}
    return out
