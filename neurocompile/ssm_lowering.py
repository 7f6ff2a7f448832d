"""``--ssm-lowering auto``: per SSM layer, the convolution or the recurrence, decided from the target's
placement plan of each.

The model is compiled both ways and both Programs are planned by the target (``Target.load('planner')``).
A layer takes the recurrence when it can be placed on neurocores where the convolution cannot (a
long kernel goes to the host), or when both fit and the recurrence needs fewer bytes of core memory
(state + synapses) with a kernel error (relative L2 of the taps, integer vs float) at most twice the
convolution's.  Otherwise the convolution stays, with the reason.  With calibration data
(``export --calibrate``) the kernel errors are those measured on it (``ssm_calibration``), and where
both fit neurocores the lower one decides (equal errors: the rule above).  The final Program is compiled once
more with the choices (the stream's scales depend on every layer).
"""
from __future__ import annotations

import dataclasses

KERNEL_ERROR_FACTOR = 2.0        # the recurrence may have at most twice the convolution's kernel error


def _memory(process) -> int:
    return int(process.placement.state_bytes + process.placement.synapse_bytes)


def choose(conv_program, rec_program, target) -> dict:
    """{SSM node: (lowering, reason)} from the plans of the two Programs."""
    plan = target.load("planner")
    conv_plan, rec_plan = plan(conv_program, target=target), plan(rec_program, target=target)
    choices = {}
    for name, row in rec_program.report["ssm_lowering"].items():
        if row["lowering"] != "recurrent":
            choices[name] = ("conv", row["reason"])
            continue
        c, r = conv_plan.process(name), rec_plan.process(name)
        calibrated = row.get("calibrated_error", {})
        if "recurrent" in calibrated and "conv" in calibrated:      # measured on the data: decides
            from .ssm_calibration import describe
            e_rec, e_conv = calibrated["recurrent"], calibrated["conv"]
            measure = describe(row["calibration"])
        else:
            errors = row["kernel_error"]
            e_rec, e_conv = errors["recurrent"]["taps"], errors["conv"]["taps"]
            measure = "impulse"
        label = "" if measure == "impulse" else f" {measure}:"       # the impulse's text stays today's
        err = f"kernel error{label} {100 * e_rec:.3g} % recurrent vs {100 * e_conv:.3g} % conv"
        if c.placement.where != "neurocore" and r.placement.where == "neurocore":
            choices[name] = ("recurrent", f"auto: the convolution goes to the {c.placement.where} "
                                          f"({c.placement.program}); the recurrence fits neurocores "
                                          f"({r.placement.program}); {err}")
        elif c.placement.where == r.placement.where == "neurocore" and measure != "impulse" and e_rec != e_conv:
            verdict = "recurrent" if e_rec < e_conv else "conv"
            choices[name] = (verdict, f"auto: both fit neurocores; core memory {_memory(r):,} bytes recurrent vs "
                                      f"{_memory(c):,} conv; {err}: the lower error decides")
        elif c.placement.where == r.placement.where == "neurocore":
            fewer = _memory(r) < _memory(c)
            close = e_rec <= KERNEL_ERROR_FACTOR * e_conv
            verdict = "recurrent" if fewer and close else "conv"
            choices[name] = (verdict, f"auto: both fit neurocores; core memory {_memory(r):,} bytes recurrent vs "
                                      f"{_memory(c):,} conv, {err} (the recurrence needs fewer bytes and at most "
                                      f"{KERNEL_ERROR_FACTOR:g}x the error: {'yes' if fewer and close else 'no'})")
        else:
            choices[name] = ("conv", f"auto: the recurrence goes to the {r.placement.where} too; {err}")
    return choices


def compile_auto(graph, options, target, compile_graph, to_program, calibration=None):
    """The graph compiled with each SSM layer's chosen lowering (``compile_graph(graph, options, target)``).
    With ``calibration``, both lowerings' errors are measured on the all-recurrent program's inputs
    (where every layer that can recur does) and the lower one decides where both fit neurocores."""
    from .errors import RangeError
    conv_opts = dataclasses.replace(options, ssm_lowering="conv")
    conv = compile_graph(graph, conv_opts, target)
    try:
        rec = compile_graph(graph, dataclasses.replace(options, ssm_lowering="recurrent"), target,
                            calibration=calibration)
    except RangeError as exc:
        reason = f"auto: the recurrence is refused ({exc})"
        if calibration is not None:
            conv = compile_graph(graph, conv_opts, target, calibration=calibration)
        conv.meta["ssm_lowering"] = {n: {"lowering": "conv", "reason": reason} for n in conv.meta["ssm_lowering"]}
        return conv
    choices = choose(to_program(conv, {}, target), to_program(rec, {}, target), target)
    return compile_graph(graph, options, target, choices, calibration)
