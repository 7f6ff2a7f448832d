"""Which layer loses the accuracy: the float model (exact LIF) with only one layer quantised, that layer
run by the compiled program's own integer nodes (the emulator's rules, bit for bit), every other layer
float.  Beside the spike mismatch per layer, it says where a program that loses accuracy first diverges
and what each layer costs on its own (issue 22).

A layer meets the next on the residual stream.  Entering the integer layer, the float stream is rounded
onto the program's stream fixed point (``stream_frac_bits`` per channel, half up: as the encoder and every
residual add round a finer value onto it); the integer stream the layer leaves is read back as float,
and the float layers after it run on that.  The layer's own integers (kernel or recurrence, LIF, mixer,
GLU residual) are exactly the program's; a float stream outside the range the proof assumed would run in
int64 unclipped (the chip would refuse it; the report counts such values as ``beyond_proof``).

Deterministic spikes only (SpikingSSM): for P-SpikeSSM one layer's effect would drown in the Monte-Carlo
noise of the others.  Post-norm layers (the official code's default, norms computed and unused) only: a
pre-norm layer's integer input is the stream before its norm, which the float layer module never sees.
"""
from __future__ import annotations

import contextlib
import os
import types

import numpy as np

from .errors import ArtifactError


def layer_nodes(program) -> list:
    """Per layer index, in order: (its node names in topological order, the one node outside it that it
    reads, its one node read outside it).  Layers are the indices the front end gave the nodes."""
    layers = sorted({program.layer_of(n) for n in program.topo()} - {None})
    out = []
    for i in layers:
        names = [n for n in program.topo() if program.layer_of(n) == i]
        inside = set(names)
        reads = {src for n in names for src in program.inputs(n).values()} - inside
        read_by = [n for n in names if any(c not in inside for c in program.consumers(n))]
        if len(reads) != 1 or len(read_by) != 1:
            raise ArtifactError(f"layer {i} reads {sorted(reads)} and is read at {read_by}: only a layer that "
                                "reads one stream and writes one can be quantised on its own")
        out.append((names, reads.pop(), read_by[0]))
    return out


def lowering_of(program, names) -> str:
    from .ir import IntSSMConv, IntSSMRecurrent
    kinds = {"conv" if isinstance(program.op(n), IntSSMConv) else "recurrent" for n in names
             if isinstance(program.op(n), (IntSSMConv, IntSSMRecurrent))}
    return "+".join(sorted(kinds)) or "-"


@contextlib.contextmanager
def only_layer_quantised(model, program, layer: int, device):
    """Inside: ``model``'s SpikingSSM layer ``layer`` computes with ``program``'s integer nodes of that
    layer (see the module docstring); yields a dict counting the stream values beyond the proven range."""
    import torch

    from .emulator import COMPILED, EMULATE, _Run, default_backend, run_nodes
    from .passes.quantizers import half_up

    if getattr(model.config, "prenorm", False):
        raise ArtifactError("only post-norm layers can be quantised on their own (this model is pre-norm)")
    names, src, last = layer_nodes(program)[layer]
    spikes = [n for n in names if n in program.spike_nodes]
    frac = np.asarray(program.report["stream_frac_bits"], dtype=np.float64)
    rules = COMPILED if default_backend(device) == "compiled" else EMULATE
    # the largest stream value the proof admits where the layer reads it
    bound = next((e["worst"] for e in program.report.get("ranges", [])
                  if e["node"] == src and e["register"] == "stream"), None)
    counts = {"beyond_proof": 0}

    def forward(module, u, neuron: str = "lif"):
        f = torch.as_tensor(frac, dtype=torch.float64, device=u.device)[:, None]
        x = half_up(u.double(), f).to(torch.int64)
        if bound is not None:
            counts["beyond_proof"] += int((x.abs() > int(bound)).sum())
        outputs = {src: x if rules is EMULATE else x.cpu()}
        run_nodes(program, names, outputs, _Run(outputs[src], False, rules=rules))
        nxt = (outputs[last].to(u.device).double() * torch.exp2(-f)).to(u.dtype)
        s = outputs[spikes[0]].to(u.device).to(u.dtype) if spikes else torch.zeros_like(u)
        # the backbone adds the mixer's output to the stream: return what makes that sum the integer stream
        return nxt - u, torch.zeros_like(u), s

    target = model.backbone.s4_layers[layer]
    target.__dict__["forward"] = types.MethodType(forward, target)
    try:
        yield counts
    finally:
        target.__dict__.pop("forward", None)


def layer_sensitivity(checkpoint: str, program, dataset: str, max_samples: int = 0, device: str | None = None,
                      batch_size: int = 64, progress=None) -> dict:
    """The float model's accuracy (exact LIF) and, per layer, its accuracy with only that layer quantised,
    on the first ``max_samples`` test samples (0: all): which layer a program that loses accuracy loses it
    in.  ``program``: compiled from ``checkpoint`` (a ``Program`` or a ``.loihi2`` path).
    ``progress(done, total)`` hears each batch.
    -> {"samples", "float", "layers": [{"layer", "lowering", "accuracy", "beyond_proof"}]}."""
    import torch

    from .api import load_data
    from .emulator import check_device
    from .frontend import frontend_for
    from .models.checkpoint import build_model, load_checkpoint, weights_sha256

    device = check_device(device)
    if isinstance(program, (str, os.PathLike)):
        from .artifact import load_program
        program = load_program(program)
    kind, config, state_dict, _ = load_checkpoint(checkpoint, seq_len=program.seq_len)
    if frontend_for(kind).stochastic:
        raise ArtifactError(f"{checkpoint}: a {kind} model samples its spikes: one layer's effect is not "
                            "measurable apart from the Monte-Carlo noise (deterministic SpikingSSM only)")
    if (program.report.get("source") or {}).get("weights_sha256") != weights_sha256(state_dict):
        raise ArtifactError(f"the program was not compiled from {checkpoint}")
    model = build_model(config, state_dict, kind).to(device).eval()
    data, values, _ = load_data(program, dataset)
    y = data.y
    if max_samples:
        values, y = values[:max_samples], y[:max_samples]
    layers = layer_nodes(program)
    total, done = (len(layers) + 1) * len(values), 0

    def accuracy() -> float:
        nonlocal done
        right = 0
        with torch.no_grad():
            for a in range(0, len(values), batch_size):
                xt = torch.as_tensor(values[a:a + batch_size], device=device)
                xt = xt if xt.dtype == torch.int64 else xt.float()
                right += int((model(xt, neuron="lif").argmax(-1).cpu().numpy() == y[a:a + batch_size]).sum())
                done += len(xt)
                if progress:
                    progress(done, total)
        return right / len(values)

    out = {"samples": len(values), "float": accuracy(), "layers": []}
    for i, (names, _, _) in enumerate(layers):
        with only_layer_quantised(model, program, i, device) as counts:
            acc = accuracy()
        out["layers"].append({"layer": i, "lowering": lowering_of(program, names), "accuracy": acc,
                              "beyond_proof": counts["beyond_proof"]})
    return out
