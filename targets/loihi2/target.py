"""Loihi 2 (through Lava 0.10): every hardware fact the compiler relies on, in one ``Target`` object.

The arithmetic is the rule written in ``neurocompile.arith`` (stock Lava LIF, ``lava/proc/lif/models.py``
PyLifModelBitAcc: input << 6, threshold << 6, decays (4096 - d) >> 12 rounding toward zero, du = 4095
keeps no current, 24-bit saturating voltage); this target declares that it computes that rule.
Nothing in this module imports Lava, and the core finds this object by name only
(``neurocompile.target.get_target``).  Budgets (``BUDGETS``) are what placement
(``targets/loihi2/plan.py``) respects; each cites its public source.

Why the float model's ``u >= 1`` and Lava's ``v > vth << 6`` agree: the compiled LIF input is the
float input times 2**g with vth = 2**g, so v stands for u * 2**(g + 6) and the threshold for 1.
``>=`` and ``>`` differ only when v lands exactly on vth << 6, i.e. when the rescaled, rounded
current makes u equal 1 to within one part in 2**(g + 6); the quantization error is larger than
that, so the two comparisons flip a spike no more often than rounding already does (measured in
the parity report as spike agreement).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...arith import ARITHMETIC
from ...target import Budgets, Target

KIB = 1024

BUDGETS = Budgets(
    # Intel, "Taking Neuromorphic Computing to the Next Level with Loihi 2" (technology brief, 2021):
    # up to 8,192 neurons per neurocore (1 M neurons over 128 cores per chip).
    neurons_per_core=8192,
    # Memory per neurocore, shared by synapses, neuron state and microcode.  Intel publishes no
    # per-core figure (the technology brief speaks of flexibly allocated memory); secondary summaries
    # (e.g. open-neuromorphic.org's Loihi 2 page) quote 128-192 KB.  We plan with the LOWER figure,
    # 128 KiB, so a plan that fits it fits either; it is an assumption, and the plan says so.
    memory_per_core_bytes=128 * KIB,
    # 128 neurocores per chip (technology brief); Lava's open mapper plans 120 virtual cores per
    # Loihi 2 chip (lava/magma/compiler/subcompilers/constants.py: NUM_VIRTUAL_CORES_L3 = 120,
    # used for N3LogicalNeuroCore in lava/magma/compiler/mapper.py).
    cores_per_chip=128,
    cores_planned_per_chip=120,
    # Synaptic delays 0..63 steps (6 delay bits): lava/proc/sparse/models.py refuses delays > 63.
    max_delay_steps=63,
    # Graded spike payload: 24 bits, the default of Lava's graded S4D layer (SigmaS4dDeltaLayer,
    # num_message_bits=24, lava/proc/s4d/process.py); Dense's default is 0 (binary spikes), graded when
    # num_message_bits > 0.  The chip carries up to 32 (technology brief).  We plan with Lava's 24.
    message_bits=24,
    # Systems: Oheo Gulch (1 chip), Kapoho Point (8 chips) -- Intel Neuromorphic Research Community
    # system pages; Hala Point (1,152 chips, Intel press release, April 2024).
    systems={"oheo-gulch": 1, "kapoho-point": 8, "hala-point": 1152},
)


# Integer node type -> the lowerings this target has for it (the first is the default); the plan's
# table (targets/loihi2/plan.PLACE) has one row per node type and one rule per lowering named here.
LOWERINGS = {
    "IntInput": ("source",),
    "IntEncoder": ("bit-serial-encoder",),
    "IntEmbedding": ("token-synapse",),
    "IntSSMConv": ("conv",),
    "IntSSMRecurrent": ("recurrent",),
    "IntLIF": ("lif",),
    "IntDense": ("dense",),
    "IntGLUResidual": ("glu-neuron",),
    "IntReadout": ("readout",),
    "IntChannelAffine": ("affine-neuron",),
    "IntSampler": ("sampler-neuron",),
    "IntGELU": ("gelu-neuron",),
    "IntGELUResidual": ("gelu-neuron",),
    "IntConcat": ("wiring",),
}


@dataclass(frozen=True)
class Loihi2(Target):
    max_synapse_delay: int = 63       # DelayDense / DelaySparse delay bits

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
            if not (0 < op.vth < 2 ** self.vth_bits and 0 <= op.dv < self.arithmetic.lif_decay_unity):
                problems.append(f"{name}: LIF vth {op.vth} / dv {op.dv} outside Loihi 2's "
                                f"{self.vth_bits}-bit threshold / 12-bit decay")
        return problems


# Synaptic weights are 1-8-bit mantissas with a shared exponent, stored at their width: Intel's Loihi 2
# technology brief (2021) lists weight precision of 1 to 8 bits (see /work/shared/docs/lava-loihi2.md);
# Lava's Dense/Sparse carry it as ``num_weight_bits`` (lava/proc/dense/process.py), and
# lava/utils/weightutils.py optimize_weight_bits finds the narrowest width a matrix needs.  So a synapse
# with b-bit weights holds b/8 bytes of weight memory.
PACKED_WEIGHT_BITS = 8

LOIHI2 = Loihi2(name="loihi2", register_bits=24, weight_bits=8, weights_even=True, vth_bits=17,
                synapse_hop_steps=1, host_exact_bits=53, message_bits=BUDGETS.message_bits,
                packed_weight_bits=PACKED_WEIGHT_BITS,
                arithmetic=ARITHMETIC, budgets=BUDGETS,
                lowerings=LOWERINGS,
                planner="neurocompile.targets.loihi2.plan:plan_program",
                runner="neurocompile.targets.loihi2.runner:run_lava",
                simulator="neurocompile.targets.loihi2.runner:simulate_task",
                runtime="neurocompile.targets.loihi2:lava_unavailable",
                worker_modules=("neurocompile.targets.loihi2.lowering", "lava.magma.core.run_conditions",
                                "lava.magma.compiler.compiler", "lava.magma.runtime.runtime"))
