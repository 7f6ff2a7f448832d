"""The ``plan`` command's report: the target's plan of a Program, as JSON and as text.

The plan itself is the target's (``Target.planner``: Program -> plan object with ``to_dict()``); this
module only reads that dict, so it serves any target.  Every figure is an estimate from the
Program's arrays and the target's public budgets, labelled so.
"""
from __future__ import annotations

from .target import get_target


def plan_dict(program, system: str | None = None) -> dict:
    target = get_target(program.report.get("target", "loihi2"))
    return target.load("planner")(program, system=system, target=target).to_dict()


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f}"


def _bytes(n: int) -> str:
    return f"{n:,} byte{'' if n == 1 else 's'}"


def _weights_line(procs, packed: int) -> str:
    """Which width each process's synaptic weights were counted at, and how the target stores it."""
    widths = {}
    for p in procs:
        if p.get("weight_bits"):
            widths.setdefault(p["weight_bits"], []).append(p["name"])
    how = (f"packed at their width up to {packed} bits (a b-bit weight holds b/8 bytes)" if packed
           else "in whole bytes")
    counted = "; ".join(f"{b}-bit: {', '.join(names)}" for b, names in sorted(widths.items())) or "none"
    return f"  synaptic weights counted {how}: {counted}"


def plan_text(plan: dict, artifact: str) -> str:
    procs = plan["processes"]
    step = plan["worst_case_per_step"]
    # "fits" alone would hide the layers that run on the host CPU every step (the input source always does)
    on_host = [p for p in procs if p["placement"] == "host" and p["layer"] is not None]
    layers = sorted({p["layer"] for p in on_host})
    fits = "fits" if not on_host else (
        f"fits, with {len(layers)} layer{'s' if len(layers) > 1 else ''} on the host ({', '.join(p['name'] for p in on_host)}; "
        f"{_bytes(plan['host_bytes_per_step'])} per step across the chip boundary)")
    lines = [f"plan of {artifact} on {plan['target']} ({plan['estimate']})",
             f"  system: {plan['system']} ({plan['system_chips']:,} chip{'' if plan['system_chips'] == 1 else 's'}): {fits}; needs {plan['chips']:,} chip(s), "
             f"{plan['cores']:,} neurocores",
             f"  latency: {plan['latency_steps']} steps to the readout's first input; window {plan['window_steps']} "
             f"steps per sample",
             f"  worst case per step: {step['accumulates']:,} accumulates, {step['multiplies']:,} multiplies, "
             f"{step['synaptic_events']:,} synaptic events, {step['neuron_updates']:,} neuron updates, "
             f"{step['messages']:,} messages",
             f"  host traffic: {_bytes(plan['host_bytes_per_step'])} per step across the chip boundary (no published "
             "figure for the host <-> chip link bandwidth to budget it against)",
             "  memory: synapses and neuron state counted; microcode, synapse index and routing tables (which share "
             "a core's memory) are not",
             _weights_line(procs, plan.get("packed_weight_bits", 0)),
             f"  {'layer':<6}{'process':<20}{'lowering':<19}{'placement':<11}{'neurons':>9}{'syn KiB':>10}"
             f"{'state KiB':>11}{'cores':>7}  program"]
    for p in procs:
        layer = "-" if p["layer"] is None else str(p["layer"])
        own = p["unit"] == p["name"]
        where = p["program"] if own else f"{p['program']} (in {p['unit']}'s cores)"
        lines.append(f"  {layer:<6}{p['name']:<20}{p['lowering']:<19}{p['placement']:<11}{p['neurons']:>9,}"
                     f"{_kib(p['synapse_bytes']):>10}{_kib(p['state_bytes']):>11}{p['cores'] if own else '-':>7}  {where}")
    lines.append("  why:")
    for p in procs:
        host = f" [{_bytes(p['host_bytes_per_step'])}/step to and from the host]" if p["host_bytes_per_step"] else ""
        lines.append(f"    {p['name']}: {p['reason']}{host}")
    b = plan["budgets"]
    lines.append(f"  budgets: {b['neurons_per_core']:,} neurons and {b['memory_per_core_bytes'] // 1024} KiB per core; "
                 f"{b['cores_planned_per_chip']} of {b['cores_per_chip']} neurocores per chip planned (no embedded "
                 "x86 core: no process has a model for one); "
                 f"delays <= {b['max_delay_steps']} steps; {b['message_bits']}-bit messages")
    return "\n".join(lines)
