"""Issue 22 part 4: the Fashion example's SSM kernel error, impulse vs calibrated, per lowering, and
how much of the recurrence's error its messages' shift costs (send_shift = 0: the state sent whole;
an upper bound on what a finer message exponent could recover, not a proven-safe program).
Run: nice -n 10 .venv/bin/python benchmarks/bench_calibrate_fashion.py [N]  (writes benchmarks/results/calibrate_fashion.json)"""
import dataclasses
import json
import sys

import numpy as np

from neurocompile.emulator import emulate
from neurocompile.frontend import frontend_for
from neurocompile.models.checkpoint import load_checkpoint
from neurocompile.options import CompileOptions
from neurocompile.pipeline import checkpoint_input_format, compile_graph, to_program
from neurocompile.quant import quantize_rows
from neurocompile.ssm_calibration import Calibration, float_conv, float_modes, recurrent_errors
from neurocompile.ssm_kernels import kernel_errors, measured_recurrent_kernel, modal_kernel, relative_l2 as rel
from neurocompile.target import get_target

PATH, DATA = "examples/fashion-mnist/ckpt.pt", "fashion-mnist"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 64
kind, config, sd, _ = load_checkpoint(PATH)
cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
graph = frontend_for(kind).import_graph(cfg, sd, checkpoint_input_format(kind, cfg, None), source=PATH)
target, options = get_target(), CompileOptions(ssm_lowering="recurrent")
rec = compile_graph(graph, options, target)
program = to_program(rec, {}, target)
raw = Calibration(DATA, N).raw(program)
trace = emulate(program, raw, record=True, device="cpu")
out = {"checkpoint": PATH, "data": DATA, "samples": int(len(raw)), "layers": {}}
for name, (fin, fout) in rec.meta["ssm_fracs"].items():
    op = rec.op(name)
    x = np.asarray(trace[rec.inputs(name)["main"]]).astype(np.int64)
    L = x.shape[-1]
    exact = modal_kernel(*float_modes(op), L)
    p99 = np.maximum(np.percentile(np.abs(x), 99, axis=(0, 2)).astype(np.int64), 1)
    row = {"send_shift": [int(v) for v in np.unique(op.send_shift)],
           "calibrated": recurrent_errors(x, fin, op, fout, options.kernel_bits)}
    # impulse taps at the data's 99th percentile |u| (per channel), as the issue measured
    k99 = measured_recurrent_kernel(op, -p99, p99, fin, fout, L)
    row["impulse_taps_at_p99_recurrent"] = kernel_errors(exact, k99)["taps"]
    # the state sent whole: what the messages' shift costs on the data
    whole = dataclasses.replace(op, send_shift=np.zeros_like(op.send_shift), out_shift=op.out_shift + op.send_shift)
    row["calibrated_recurrent_send_shift_0"] = recurrent_errors(x, fin, whole, fout, options.kernel_bits)["recurrent"]
    # the float recurrence with the node's quantized parameters (no rounding in the loop): the floor the
    # parameters set; gains with an exponent per channel (today) or per mode (one exponent per (re, im) pair)
    u = x * np.exp2(-np.asarray(fin, np.float64))[None, :, None]
    want = float_conv(u, exact, 0)
    a, b, c, D = float_modes(op)
    a_q = op.decay[..., 0] * 2.0 ** -op.decay_shift + 1j * op.decay[..., 1] * 2.0 ** -op.decay_shift
    bits = min(options.weight_bits, target.weight_bits)
    D_q = lambda: (lambda m, e: m[:, 0] * np.exp2(-e.astype(float)))(*quantize_rows(D[:, None], bits))
    def per_channel(z):
        m, e = quantize_rows(np.stack([z.real, z.imag], -1).reshape(z.shape[0], -1), bits)
        v = (m * np.exp2(-e.astype(float))[:, None]).reshape(z.shape + (2,))
        return v[..., 0] + 1j * v[..., 1]
    def per_mode(z):
        m, e = quantize_rows(np.stack([z.real, z.imag], -1).reshape(-1, 2), bits)
        v = (m * np.exp2(-e.astype(float))[:, None]).reshape(z.shape + (2,))
        return v[..., 0] + 1j * v[..., 1]
    for label, (aa, bb, cc) in {"float_loop_quantized_params_gain_exp_per_channel": (a_q, per_channel(b), per_channel(2 * c) / 2),
                                "float_loop_quantized_params_gain_exp_per_mode": (a_q, per_mode(b), per_mode(2 * c) / 2),
                                "float_loop_quantized_decay_only": (a_q, b, c)}.items():
        row[label] = rel(want, float_conv(u, modal_kernel(aa, bb, cc, D_q(), L), 0))
    row["impulse"] = rec.meta["ssm_kernel_error"][name]
    out["layers"][name] = row
print(json.dumps(out, indent=1))
with open("benchmarks/results/calibrate_fashion.json", "w") as fh:
    json.dump(out, fh, indent=1, sort_keys=True)
