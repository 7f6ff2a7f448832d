"""Runs one Lava simulation in its own process (started by ``runner.run_lava``).

    python -m neurocompile.targets.loihi2.worker ARTIFACT INPUTS.npz OUTPUT.npz MODE BACKEND RECORD

Prints ``progress <done> <total>`` after every sample; writes traces in logical time.
"""
import sys

import numpy as np


def main(argv) -> int:
    artifact, inputs, output, mode, backend, record = argv
    from lava.magma.core.run_conditions import RunSteps

    from ...artifact import load_program
    from .lowering import build_network, run_config

    program = load_program(artifact)
    levels = np.load(inputs)["levels"]
    net = build_network(program, levels, mode=mode, record=record == "1")
    n, W, L = len(levels), program.window, program.seq_len
    steps = n * W
    cfg = run_config(mode, backend)
    buffers = {name: np.empty((steps, ext.in_port.shape[0])) for name, (ext, _) in net.taps.items()}
    net.source.run(condition=RunSteps(num_steps=steps, blocking=False), run_cfg=cfg)
    try:
        for t in range(steps):
            for name, (ext, _) in net.taps.items():
                buffers[name][t] = ext.receive()
            if (t + 1) % W == 0:
                print(f"progress {(t + 1) // W} {n}", flush=True)
        net.source.wait()
    finally:
        net.source.stop()
    fixed = mode == "fixed_pt"
    out = {}
    for name, (_, lag) in net.taps.items():
        per_sample = buffers[name].reshape(n, W, -1)
        if name == "logits":
            trace = per_sample[:, lag]
        else:
            trace = per_sample[:, lag:lag + L].transpose(0, 2, 1)       # (n, channels, time)
        if name.startswith("spikes"):
            trace = trace != 0
        elif fixed:
            trace = np.rint(trace).astype(np.int64)
        out[name] = trace
    np.savez(output, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
