"""Command-line Lava run of an artifact, numpy + lava only (no torch, no training stack):

    python -m neurocompile.targets.loihi2.worker ARTIFACT INPUTS.npz OUTPUT.npz MODE BACKEND RECORD

INPUTS.npz holds ``levels`` (n, L, d_in); OUTPUT.npz gets the flat result of ``lowering.simulate``
(``logits`` and, with RECORD=1, every node's output by node name in logical time).  Runs in this process: wrap it in ``runner.run_lava`` semantics (timeout, kill) yourself.
"""
import sys

import numpy as np


def main(argv) -> int:
    artifact, inputs, output, mode, backend, record = argv
    from ...artifact import load_program
    from .lowering import simulate
    from .runner import check_backend

    check_backend(backend)
    program = load_program(artifact)
    levels = np.load(inputs)["levels"]
    out = simulate(program, levels, mode=mode, backend=backend, record=record == "1",
                   progress=lambda done, total: print(f"progress {done} {total}", flush=True))
    np.savez(output, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
