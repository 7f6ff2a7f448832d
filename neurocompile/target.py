"""A compilation target, as the compiler core sees it: the protocol every core module reads hardware
facts from.  The core (``neurocompile/*``) never imports a ``targets/*`` module: it asks
``get_target(name)`` for a ``Target`` object and reads widths, budgets, latency, lowering candidates
and the names of the target's planner and runner from it.

How targets are found.  The built-in Loihi 2 target is named here by a dotted path (a string, not an
import); out-of-tree targets register in the ``neurocompile.targets`` entry-point group of their
package (``[project.entry-points."neurocompile.targets"] name = "pkg.module:OBJECT"``).  The object is
imported only when ``get_target`` is called, so the core has no import-time dependency on any target
and no import cycle can run through one.

Arithmetic constants.  The integer rule lives in ``neurocompile.arith`` with its constants written
there as module-level integers (the stock Lava LIF shifts and the 24-bit register), so numba compiles
them into the emulator's kernels as literals (no lookup at run time) and the rule stays one file.  A
target declares the arithmetic its hardware computes (``Target.arithmetic``); ``get_target`` refuses a
target whose arithmetic is not the rule ``arith`` implements, rather than emulate one chip and run
another.  A target with different shifts would need its own rule module, not a parameter.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arithmetic:
    """The constants of the integer rule (``neurocompile.arith.ARITHMETIC``): what a neuron computes."""
    register_bits: int            # neuron state and accumulators (signed), saturating LIF voltage
    lif_act_shift: int            # LIF input a_in << shift before it reaches the current u
    lif_vth_shift: int            # spike when v > vth << shift
    lif_decay_shift: int          # decays are (2**shift - d) >> shift, rounding toward zero
    lif_du_no_memory: int         # current decay that keeps no current between steps

    @property
    def register_max(self) -> int:
        return 2 ** (self.register_bits - 1) - 1

    @property
    def lif_decay_unity(self) -> int:
        return 1 << self.lif_decay_shift


@dataclass(frozen=True)
class Budgets:
    """Per-core and per-chip resources a placement must respect (each value's source is cited where
    the target defines it).  Counts are hard limits; ``*_planned`` are what the target's own mapper
    plans with (a plan that fits those fits the mapper)."""
    neurons_per_core: int
    memory_per_core_bytes: int          # shared by synapses, neuron state and microcode
    cores_per_chip: int
    cores_planned_per_chip: int
    max_delay_steps: int                # longest synaptic delay
    message_bits: int                   # graded spike payload the runtime carries
    systems: dict = field(default_factory=dict)      # system name -> chips


@dataclass(frozen=True)
class Target:
    name: str
    register_bits: int            # neuron state and accumulators (signed)
    weight_bits: int              # synapse weight mantissa, sign included
    weights_even: bool            # mixed-sign synapses drop the weight LSB: keep weights even
    vth_bits: int                 # unsigned threshold mantissa
    synapse_hop_steps: int        # a synapse delivers what it received this many steps later
    host_exact_bits: int          # host-side integers (the decoder) must stay exact in float64
    message_bits: int = 24        # graded spike payload
    packed_weight_bits: int = 0   # synaptic weights of 1..this many bits are stored at their width (b/8 bytes
                                  # each); wider ones, and all when 0, take whole bytes
    arithmetic: Arithmetic = None             # the integer rule the hardware computes
    budgets: Budgets = None                   # placement limits
    lowerings: dict = field(default_factory=dict)    # integer node type name -> lowering names (first: default)
    planner: str = ""             # "module:function" (program, system=, target=) -> plan object with .to_dict()
    runner: str = ""              # "module:function" the run commands call (program, levels, **kw) -> traces
    simulator: str = ""           # "module:function": the runner's run in THIS process (executors' workers
                                  # give it a killable child): (program, levels, mode, backend, record, seed,
                                  # first_sample, progress) -> traces
    runtime: str = ""             # "module:function" () -> why the runner cannot run here (None: it can);
                                  # read without importing the runner's simulator (Lava)
    worker_modules: tuple = ()    # what the simulator imports when it runs (a fork server imports them once)

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

    def runner_unavailable(self) -> str | None:
        """Why this target's runner cannot run in this install (one phrase), or None when it can."""
        if not self.runner:
            return f"target {self.name!r} has no runner"
        return _resolve(self.runtime)() if self.runtime else None

    def load(self, what: str):
        """The target's ``planner``, ``runner`` or ``simulator`` function, imported now (where a plan or run starts)."""
        path = getattr(self, what)
        if not path:
            raise ValueError(f"target {self.name!r} has no {what}")
        return _resolve(path)


BUILTIN = {"loihi2": "neurocompile.targets.loihi2.target:LOIHI2"}
ENTRY_POINT_GROUP = "neurocompile.targets"


def _resolve(path: str):
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _registered() -> dict:
    """Target name -> "module:object": the built-ins, then any installed package's entry points."""
    from importlib.metadata import entry_points
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


TARGET_NAMES = tuple(sorted(BUILTIN))      # for help texts (entry points are read when a target is asked for)


def get_target(name: str = "loihi2") -> Target:
    from . import arith
    registered = _registered()
    if name not in registered:
        raise ValueError(f"unknown target {name!r} (available: {', '.join(sorted(registered))})")
    target = _resolve(registered[name])
    if not isinstance(target, Target):
        raise ValueError(f"target {name!r} ({registered[name]}) is not a neurocompile.target.Target")
    if target.arithmetic != arith.ARITHMETIC or target.register_bits != arith.ARITHMETIC.register_bits:
        raise ValueError(f"target {name!r} computes {target.arithmetic}, not the rule neurocompile.arith "
                         f"implements ({arith.ARITHMETIC})")
    return target
