"""A compilation target: the hardware facts the compiler must respect, and how to check, lower and
run a Program there.  The core (quantizer, range analysis, verifier, time alignment) reads every
limit from a target object instead of hard-coding it; ``get_target`` finds one by name.

Only one target exists today (``neurocompile.targets.loihi2.target.LOIHI2``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    register_bits: int            # neuron state and accumulators (signed)
    weight_bits: int              # synapse weight mantissa, sign included
    weights_even: bool            # mixed-sign synapses drop the weight LSB: keep weights even
    vth_bits: int                 # unsigned threshold mantissa
    synapse_hop_steps: int        # a synapse delivers what it received this many steps later
    host_exact_bits: int          # host-side integers (the decoder) must stay exact in float64

    @property
    def register_max(self) -> int:
        return 2 ** (self.register_bits - 1) - 1

    @property
    def weight_max(self) -> int:
        """Largest synapse weight: a (weight_bits)-bit mantissa, doubled when weights must be even."""
        m = 2 ** (self.weight_bits - 1) - 1
        return 2 * m if self.weights_even else m

    @property
    def host_max(self) -> int:
        return 2 ** self.host_exact_bits - 1

    def latency(self, op) -> int:
        """Steps between a node's input and its output on this target."""
        raise NotImplementedError

    def check(self, program) -> list:
        """Hardware constraints the Program breaks (empty: none)."""
        raise NotImplementedError

    def run(self, program, levels, **kwargs) -> dict:
        raise NotImplementedError

    def simulate(self, program, levels, **kwargs) -> dict:
        """``run`` in this process, no killable child around it (an executor's worker provides one)."""
        raise NotImplementedError


TARGET_NAMES = ("loihi2",)


def get_target(name: str = "loihi2") -> Target:
    if name == "loihi2":
        from .targets.loihi2.target import LOIHI2
        return LOIHI2
    raise ValueError(f"unknown target {name!r} (available: {', '.join(TARGET_NAMES)})")
