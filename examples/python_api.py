"""The Python API on the committed digits checkpoint: compile, save, load (verified), plan, emulate,
and validate float vs integer -- no Lava needed, any Python from 3.10.

    python examples/python_api.py [--out DIR] [--samples N]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import neurocompile as nc

CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits", "ckpt.pt")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="folder for the artifact (default: a temporary one)")
    p.add_argument("--samples", type=int, default=360, help="test digits to validate on")
    args = p.parse_args(argv)

    program = nc.compile_checkpoint(CHECKPOINT, nc.CompileOptions(kernel_bits=8, weight_bits=8))
    print(f"compiled {os.path.basename(CHECKPOINT)}: {len(program.nodes)} integer nodes, L={program.seq_len}, "
          f"{program.n_classes} classes, latency {program.latency} steps")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(args.out or tmp, "digits.loihi2")
        nc.save_program(program, path)
        loaded = nc.load_program(path)                       # verified: ranges proven again from its integers
        print(f"saved and reloaded {path}")

    placement = nc.plan(loaded)                              # an estimate from Loihi 2's public budgets
    print(f"plan: {placement['cores']} cores on {placement['chips']} chip(s) of {placement['system']} "
          f"({placement['estimate'].split(':')[0]})")

    data, values, raw = nc.load_data(loaded, "digits")       # raw: the integers the chip reads
    out = nc.emulate(loaded, raw[:8], record=True)
    print(f"emulator on 8 digits: predicted {out['logits'].argmax(1).tolist()}, labels {data.y[:8].tolist()}")

    report = nc.validate_checkpoint(CHECKPOINT, loaded, "digits", max_samples=args.samples,
                                    lava_samples=0)          # float vs integer only (default "auto": 16 on Lava where it runs)
    acc = report["accuracy"]
    print(f"float {100 * acc['float']:.2f} %, integer {100 * acc['integer']:.2f} % on {report['samples']} test digits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
