"""run_lava: simulate a Program on Lava in a forked child that can always be stopped.

Lava forks one OS process per Lava process, and a process model that raises leaves ``run()``
waiting forever.  So the whole run happens in a killable child (``neurocompile.execute``): our
process models write a one-line error to a pipe before they re-raise (``processes/_base``), the
parent kills the child's whole process group on that error, on a timeout or on any exception
(KeyboardInterrupt included), and unlinks every shared-memory segment the run created
(``/dev/shm/psm_*``), however it ends.  ``lava_shard`` is the same run as a task for the
executors of ``neurocompile.execute`` (many shards in parallel, locally or on Ray).
"""
from __future__ import annotations

import numpy as np

from ...errors import LavaRunError
from ...execute import ShardError, run_in_child
from ...program import Program
from . import require_lava

require_lava()              # one line naming the extra, not an import traceback in the run's child

BACKENDS = ("sim", "hw")
MODES = ("fixed_pt", "floating_pt")


# A step's worst-case accumulates above which a node is heavy (``operations``): with two or more heavy
# nodes and a second core, one Lava process per node is faster than a Cluster, since the heavy nodes
# of one step run at once (a Dense sends the step before's sums first, so each layer's SSM starts as
# soon as the residual stream reaches it).  Measured side by side in one run on 2 cores
# (benchmarks/results/lava_layout.md), one process per node vs Cluster: SpikingSSM 4 x 256, L 1024,
# convolution (up to 1.97 M per node): 47.8 vs 72.8 s; its recurrence (0.13 M): 6.6 vs 1.85 s;
# P-SpikeSSM 4 x 256 (0.19 M): 48.7 vs 16.5 s; the Fashion-MNIST example (0.44 M): 9.7 vs 7.1 s.
HEAVY_STEP_ACCUMULATES = 1_000_000


def resolve_cluster(backend: str, pieces: bool | None, cluster: bool | None, program: Program | None = None) -> bool:
    """Whether a run hosts its processes in one Cluster.  By default: in the simulator, unless the SSM
    pieces are asked for or ``program`` has two or more heavy nodes (``HEAVY_STEP_ACCUMULATES``) and
    the machine a second core.  Asking for one on the chip or with the pieces is an error."""
    if cluster is None:
        return backend == "sim" and not pieces and not (program is not None and _parallel_pays(program))
    if cluster and (backend != "sim" or pieces):
        raise ValueError("a Cluster runs in the CPU simulator (backend 'sim') and hosts leaf models (not pieces)")
    return bool(cluster)


def _parallel_pays(program: Program) -> bool:
    import os

    from ...operations import operation_summary
    heavy = [row for row in operation_summary(program, program.seq_len)
             if row["per_step"]["accumulates"] > HEAVY_STEP_ACCUMULATES]
    return len(heavy) >= 2 and (os.cpu_count() or 1) >= 2


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise LavaRunError(f"unknown Lava back end {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "hw":
        try:
            from lava.utils import loihi
            installed = loihi.is_installed()
        except Exception:                                  # noqa: BLE001 - any import problem means absent
            installed = False
        if not installed:
            raise LavaRunError("backend 'hw' runs on Loihi2HwCfg, which needs Intel's lava-loihi extension "
                               "(INRC members only); it is not installed here: use backend 'sim'")


def run_lava(program: Program, levels, mode: str = "fixed_pt", backend: str = "sim", record: bool = True,
             timeout_s: float = 600, progress=None, seed: int = 0, first_sample: int = 0,
             pieces: bool | None = None, cluster: bool | None = None) -> dict:
    """Run (n, L, d_in) raw input levels on Lava; samples run back to back in one built network.

    Returns ``logits`` (n, d_out) (int64 in fixed_pt, float64 in floating_pt) and, with ``record``,
    every node's output by node name, (n, channels, L) in logical time (delays removed; spikes as
    bool), plus ``seconds`` (wall time of the Lava run itself, build and start-up excluded).
    ``progress(done, total)`` is called after every sample.  Raises ``LavaRunError`` on a timeout, an
    error in the run (with its message) or a missing back end; never hangs.  ``seed`` keys the PRNG of
    stochastic samplers (the emulator with the same seed gives the same spikes); ``first_sample`` is
    the data-file index of ``levels[0]`` (uniforms are keyed by each sample's index).  ``pieces``:
    which model a hierarchical process runs (``lowering.run_config``; default: by back end);
    ``cluster``: the simulator runs every process in one Lava process (``lowering.simulate``;
    default: ``resolve_cluster``, which keeps one process per node for models with heavy nodes).
    """
    check_backend(backend)
    if mode not in MODES:
        raise LavaRunError(f"unknown Lava mode {mode!r} (choose from {', '.join(MODES)})")
    from ...arith import check_seed
    from ...program import raw_inputs
    try:
        cluster = resolve_cluster(backend, pieces, cluster, program)
        raw_inputs(program, levels)                        # shape and range, before forking
        seed = check_seed(seed)
        if not 0 <= int(first_sample) < 2 ** 32:
            raise ValueError(f"first sample index {first_sample} is outside 0..2**32-1")
    except ValueError as exc:
        raise LavaRunError(f"Lava run: {exc}") from None
    levels = np.asarray(levels)
    try:
        flat = run_in_child(simulate_task, (program, levels, mode, backend, record, seed, int(first_sample), pieces,
                                             cluster),
                            timeout_s, progress, size=len(levels))
    except ShardError as exc:
        if exc.reason == "timeout":
            where = f" (stuck in {exc.detail})" if exc.detail else ""
            raise LavaRunError(f"Lava run exceeded its {timeout_s:g} s timeout and was stopped{where}") from None
        if exc.reason == "died":
            raise LavaRunError(f"Lava run failed: the worker exited with status {exc.detail} and no message") from None
        raise LavaRunError(f"Lava run failed: {exc.detail}") from None
    flat["seconds"] = float(flat["seconds"])
    return flat


def simulate_task(program, levels, mode, backend, record, seed, first_sample, pieces=None, cluster=None,
                  progress=None) -> dict:
    """``lowering.simulate`` as an executor task (runs in the killable child)."""
    from .lowering import simulate
    return simulate(program, levels, mode=mode, backend=backend, record=record, progress=progress, seed=seed,
                    first_sample=first_sample, pieces=pieces, cluster=cluster)
