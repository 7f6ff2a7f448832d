"""Loihi 2 (through Lava 0.10): every hardware fact the compiler relies on, in one object.

The stock LIF constants are those of ``lava/proc/lif/models.py`` (PyLifModelBitAcc): the input is
shifted left by 6 before it reaches the current u, the threshold mantissa is shifted left by 6, the
decays are (4096 - d) >> 12 rounding toward zero, and du = 4095 keeps no current between steps.
``neurocompile.arith`` takes these constants from here.  Nothing in this module imports Lava.

Why the float model's ``u >= 1`` and Lava's ``v > vth << 6`` agree: the compiled LIF input is the
float input times 2**g with vth = 2**g, so v stands for u * 2**(g + 6) and the threshold for 1.
``>=`` and ``>`` differ only when v lands exactly on vth << 6, i.e. when the rescaled, rounded
current makes u equal 1 to within one part in 2**(g + 6); the quantization error is larger than
that, so the two comparisons flip a spike no more often than rounding already does (measured in
the parity report as spike agreement).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...target import Target


@dataclass(frozen=True)
class Loihi2(Target):
    lif_act_shift: int = 6            # a_in << 6 before it reaches u
    lif_vth_shift: int = 6            # spike when v > vth << 6
    lif_decay_shift: int = 12         # decays are (4096 - d) >> 12
    lif_du_no_memory: int = 4095      # du + 1 == 4096: u holds only this step's input
    max_synapse_delay: int = 63       # DelayDense / DelaySparse delay bits

    @property
    def lif_decay_unity(self) -> int:
        return 1 << self.lif_decay_shift

    def latency(self, op) -> int:
        from ...ir import IntDense, IntSSMConv
        if isinstance(op, IntDense):
            return self.synapse_hop_steps
        if isinstance(op, IntSSMConv):
            return int(op.lag)
        return 0

    def check(self, program) -> list:
        """Synapse weights must be valid Lava Dense weights and LIF parameters must fit their fields."""
        import numpy as np

        from ...ir import IntDense, IntLIF
        problems = []
        for name in program.nodes_of(IntDense):
            w = program.op(name).weight
            if np.abs(w).max(initial=0) > self.weight_max or (self.weights_even and np.any(w % 2)):
                problems.append(f"{name}: weights must be even and within +-{self.weight_max} "
                                f"({self.weight_bits}-bit Dense mantissas)")
        for name in program.nodes_of(IntLIF):
            op = program.op(name)
            if not (0 < op.vth < 2 ** self.vth_bits and 0 <= op.dv < self.lif_decay_unity):
                problems.append(f"{name}: LIF vth {op.vth} / dv {op.dv} outside Loihi 2's "
                                f"{self.vth_bits}-bit threshold / 12-bit decay")
        return problems

    def run(self, program, levels, **kwargs) -> dict:
        from .runner import run_lava
        return run_lava(program, levels, **kwargs)

    def simulate(self, program, levels, **kwargs) -> dict:
        from .runner import simulate_task
        kwargs.setdefault("mode", "fixed_pt")
        kwargs.setdefault("backend", "sim")
        kwargs.setdefault("record", True)
        kwargs.setdefault("seed", 0)
        kwargs.setdefault("first_sample", 0)
        return simulate_task(program, levels, **kwargs)


LOIHI2 = Loihi2(name="loihi2", register_bits=24, weight_bits=8, weights_even=True, vth_bits=17,
                synapse_hop_steps=1, host_exact_bits=53)
