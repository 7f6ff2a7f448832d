"""Only one layer quantised (neurocompile.sensitivity): the swapped-in layer computes the program's
own integers, bit for bit, and the whole measurement runs on a real example."""
import numpy as np
import pytest
import torch

import neurocompile as nc
from neurocompile.errors import ArtifactError
from neurocompile.sensitivity import layer_nodes, layer_sensitivity, only_layer_quantised
from neurocompile.models.checkpoint import build_model, load_checkpoint

DIGITS = "examples/digits/ckpt.pt"


@pytest.mark.parametrize("lowering", ["conv", "recurrent"])
def test_the_quantised_layer_is_the_programs_integers(lowering):
    """Fed the integer program's own stream (exactly representable as float), the swapped-in layer gives
    the emulator's spikes and next stream exactly, for every layer."""
    program = nc.compile_checkpoint(DIGITS, nc.CompileOptions(ssm_lowering=lowering))
    kind, config, sd, _ = load_checkpoint(DIGITS)
    model = build_model(config, sd, kind).double().eval()
    _, _, raw = nc.load_data(program, "digits")
    emu = nc.emulate(program, raw[:24], record=True)
    frac = np.asarray(program.report["stream_frac_bits"], dtype=np.float64)[:, None]
    layers = layer_nodes(program)
    assert len(layers) == config.n_layers
    for i, (names, src, last) in enumerate(layers):
        u = torch.as_tensor(emu[src] * 2.0 ** -frac)
        spike = next(n for n in names if n in program.spike_nodes)
        with only_layer_quantised(model, program, i, "cpu"), torch.no_grad():
            z, _, s = model.backbone.s4_layers[i](u, neuron="lif")
        assert np.array_equal(s.numpy().astype(bool), emu[spike].astype(bool)), f"layer {i} spikes"
        assert np.array_equal(((z + u).numpy() * 2.0 ** frac), emu[last].astype(np.float64)), f"layer {i} stream"
    # the swap is undone on leaving
    assert "forward" not in model.backbone.s4_layers[0].__dict__


def test_layer_sensitivity_on_digits():
    program = nc.compile_checkpoint(DIGITS)
    seen = []
    r = layer_sensitivity(DIGITS, program, "digits", max_samples=120, progress=lambda d, t: seen.append((d, t)))
    assert r["samples"] == 120 and [row["layer"] for row in r["layers"]] == [0, 1]
    assert all(row["lowering"] == "conv" for row in r["layers"])
    assert seen[-1] == (3 * 120, 3 * 120)
    # the float model itself, as validate computes it (exact LIF)
    kind, config, sd, _ = load_checkpoint(DIGITS)
    model = build_model(config, sd, kind).eval()
    data, values, _ = nc.load_data(program, "digits")
    with torch.no_grad():
        pred = model(torch.as_tensor(values[:120]).float(), neuron="lif").argmax(-1).numpy()
    assert r["float"] == float((pred == data.y[:120]).mean())
    # one 8-bit layer costs the digits model at most a few of 120 samples (float 97.8 %, integer 97.8 %)
    assert all(abs(row["accuracy"] - r["float"]) <= 3 / 120 for row in r["layers"])


def test_a_stochastic_model_is_refused():
    ckpt = "examples/pspikessm-digits/ckpt.pt"
    with pytest.raises(ArtifactError, match="Monte-Carlo"):
        layer_sensitivity(ckpt, nc.compile_checkpoint(ckpt), "digits", max_samples=8)
