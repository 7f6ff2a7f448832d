"""The fine-tuning quantisers give exactly the integers ``export`` writes for the same weights."""
import numpy as np
import pytest
import torch

from neurocompile.ir import IntDense, IntSSMConv
from neurocompile.options import CompileOptions
from neurocompile.passes.quantize import RULES
from neurocompile.passes.quantizers import QUANTIZERS, fake_kernel, fake_weight, kernel_integers, weight_integers
from neurocompile.pipeline import compile_checkpoint
from neurocompile.target import get_target

DIGITS = "examples/digits/ckpt.pt"


@pytest.fixture(scope="module", params=[4, 8])
def program(request):
    bits = request.param
    return bits, compile_checkpoint(DIGITS, CompileOptions(kernel_bits=bits, weight_bits=bits), warn=lambda _: None)


def _ops(program, kind):
    ops = [n.op for n in program.nodes if isinstance(n.op, kind)]
    assert ops, f"the digits program has no {kind.__name__}"
    return ops


def test_kernel_quantiser_equals_export(program):
    bits, prog = program
    for op in _ops(prog, IntSSMConv):
        m, e = kernel_integers(op.kernel_float, bits)
        np.testing.assert_array_equal(m, op.kernel)
        t = torch.tensor(op.kernel_float, requires_grad=True)
        fq = fake_kernel(t, bits)
        np.testing.assert_array_equal(fq.detach().double().numpy() * np.exp2(e)[:, None], m)
        fq.sum().backward()                                  # straight through: identity gradient
        np.testing.assert_array_equal(t.grad.numpy(), np.ones_like(op.kernel_float))


def test_weight_quantiser_equals_export(program):
    bits, prog = program
    even = int(get_target().weights_even)
    for op in _ops(prog, IntDense):
        m, e = weight_integers(op.weight_float, min(bits, get_target().weight_bits))
        np.testing.assert_array_equal(m << even, op.weight)
        t = torch.tensor(op.weight_float, requires_grad=True)
        fq = fake_weight(t, min(bits, get_target().weight_bits))
        np.testing.assert_array_equal(fq.detach().double().numpy() * np.exp2(e)[:, None], m)
        fq.sum().backward()
        np.testing.assert_array_equal(t.grad.numpy(), np.ones_like(op.weight_float))


def test_quantizers_name_real_rules_and_options():
    """Every entry is a node type the compiler quantises, with a bit option that exists."""
    for kind, (option, _, _) in QUANTIZERS.items():
        assert kind in RULES, kind
        assert hasattr(CompileOptions(), option), option


def test_encoder_quantiser_equals_export(program):
    """The linear encoder: weight mantissas, bias and shift exactly as export writes them; the forward
    value is the integers mapped back to model values; gradients straight through."""
    from neurocompile.input_format import InputFormat
    from neurocompile.ir import IntEncoder
    from neurocompile.models.checkpoint import build_model, load_checkpoint
    from neurocompile.passes.quantize import synapse_weight_bits
    from neurocompile.passes.quantizers import fake_encoder

    bits, prog = program
    (op,) = _ops(prog, IntEncoder)
    kind, config, sd, _ = load_checkpoint(DIGITS)
    enc = build_model(config, sd, kind).encoder
    fmt, f = InputFormat.from_dict(prog.model["input"]), np.asarray(prog.report["stream_frac_bits"])
    target = get_target()
    weight = enc.weight.detach().double().requires_grad_(True)
    bias = enc.bias.detach().double().requires_grad_(True)
    w, b, (m, bq, e) = fake_encoder(weight, bias, fmt, f, synapse_weight_bits(CompileOptions(weight_bits=bits), target),
                                    target.register_max)
    np.testing.assert_array_equal(m, op.weight)
    np.testing.assert_array_equal(bq, op.bias)
    np.testing.assert_array_equal(e - f, op.shift)
    q = np.arange(fmt.max_raw + 1, dtype=np.float64)[None, :].repeat(op.weight.shape[1], 0)      # every raw level
    values = torch.as_tensor(fmt.to_value(q.T))
    got = (values @ w.T + b).detach().numpy()                          # what the fine-tuned forward computes
    want = (q.T @ op.weight.T + op.bias) * np.exp2(-e.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())
    (w.sum() + b.sum()).backward()
    np.testing.assert_array_equal(weight.grad.numpy(), np.ones(weight.shape))
    np.testing.assert_array_equal(bias.grad.numpy(), np.ones(bias.shape))


def test_a_wide_input_keeps_the_encoders_mantissa():
    """255 input levels make the Fashion example's weights per level ~2**-10 of the stream's step: held at
    the stream's own scale they kept ~3 bits (8.3 % error).  With a mantissa of 8 bits per channel the
    relative error is below 2**-7 per weight (half a step of a mantissa >= 64), so well under 1 %."""
    prog = compile_checkpoint("examples/fashion-mnist/ckpt.pt", CompileOptions(), warn=lambda _: None)
    assert prog.report["quantization_error"]["encoder"] < 0.01
    from neurocompile.ir import IntEncoder
    (op,) = _ops(prog, IntEncoder)
    assert (op.shift > 0).all() and (np.abs(op.weight).max(1) >= 64).all()


@pytest.mark.parametrize("example", ["examples/pspikessm-digits/ckpt.pt", "examples/pspikessm-digits-bi/ckpt.pt"])
def test_pspikessm_quantisers_equal_export(example):
    """P-SpikeSSM: every S4 layer's kernel (two-sided DPLR, D folded in; forward and reverse layers of a
    bidirectional block) and every mixer's Dense weight, rounded in the fine-tuning forward pass, are
    the integers export writes for the same weights; and the fake-quantised convolution is the
    official layer's own convolution when nothing is rounded away (straight-through layout check)."""
    from neurocompile.finetuning import _streamed, _unstreamed, quantized_dense, quantized_dplr_kernel
    from neurocompile.models.checkpoint import build_model, load_checkpoint
    from neurocompile.models.dplr_kernel import fft_conv

    kind, config, sd, _ = load_checkpoint(example)
    model = build_model(config, sd, kind)
    prog = compile_checkpoint(example, CompileOptions(kernel_bits=4, weight_bits=4), warn=lambda _: None)
    convs = {n.name: n.op for n in prog.nodes if isinstance(n.op, IntSSMConv)}
    denses = {n.name: n.op for n in prog.nodes if isinstance(n.op, IntDense)}
    even = int(get_target().weights_even)
    L = config.l_max
    checked = 0
    with torch.no_grad():
        for i, block in enumerate(model.backbone.layers):
            s4s = {f"layer{i}.ssm": block.layer}
            if config.bidirectional:
                s4s[f"layer{i}.ssm_rev"] = block.reverse_layer
            for name, s4 in s4s.items():
                _, (taps, _) = quantized_dplr_kernel(s4.layer, L, 4, config.ssm_bidirectional)
                np.testing.assert_array_equal(taps, convs[name].kernel)
                checked += 1
            linear = block.bidirectional_linear if config.bidirectional else block.bidirectional_linear1
            _, (weights, _) = quantized_dense(linear.weight, 4)
            np.testing.assert_array_equal(weights << even, denses[f"layer{i}.mixer"].weight)
        assert checked == len(convs) >= 2 and len(denses) == len(model.backbone.layers)
        conv = model.backbone.layers[0].layer.layer
        u = torch.rand(2, conv.D.shape[1], L, dtype=torch.float64)
        K, D = conv.kernel(L).double(), conv.D.reshape(-1).double()
        whole = _unstreamed(_streamed(K, D, config.ssm_bidirectional), config.ssm_bidirectional, L)
        np.testing.assert_allclose(fft_conv(u, whole, torch.zeros_like(conv.D)).numpy(),
                                   fft_conv(u, K, conv.D).numpy(), rtol=0, atol=1e-9)


def _fake_quantized_run(example, options, n=16):
    """(program, float64 model's record under the fine-tuning quantisers, emulator's record) on n digits."""
    from neurocompile.api import load_data
    from neurocompile.emulator import emulate
    from neurocompile.finetuning import fake_quantized
    from neurocompile.models.checkpoint import build_model, load_checkpoint

    kind, config, sd, _ = load_checkpoint(example)
    model = build_model(config, sd, kind).double().eval()
    prog = compile_checkpoint(example, options, warn=lambda _: None)
    _, values, raw = load_data(prog, "digits", "test")
    with torch.no_grad(), fake_quantized(model, options, get_target(), prog):
        _, rec = model(torch.as_tensor(values[:n], dtype=torch.float64), record=True)
    return prog, rec, emulate(prog, raw[:n], record=True, device="cpu", seed=1)


def _near_tie(x, frac):
    """Where x * 2**frac lies within float64's rounding of a half-way point (either rounding is right)."""
    scaled = x * np.exp2(frac)
    return np.abs(scaled - np.floor(scaled) - 0.5) < 1e-9 * np.maximum(np.abs(scaled), 1.0)


@pytest.mark.parametrize("example, act_bits", [(DIGITS, 8), (DIGITS, None), ("examples/pspikessm-digits/ckpt.pt", 10)])
def test_stream_quantiser_equals_the_emulators_encoder_output(example, act_bits):
    """The residual stream's width (``--act-bits``): the encoder's output, rounded onto the stream's fixed
    point in the fine-tuning forward, is the emulator's encoder integers; only values within float64's
    rounding of a half-way point may round the other way (the float sum is not exact there)."""
    from neurocompile.passes.quantizers import fake_stream

    prog, rec, emu = _fake_quantized_run(example, CompileOptions(act_bits=act_bits))
    f = np.asarray(prog.report["stream_frac_bits"], dtype=np.float64)[None, :, None]
    got = rec["stream_in"].numpy() * np.exp2(f)
    assert np.array_equal(got, np.round(got))                          # on the stream's grid
    off = got != emu["encoder"]
    assert np.abs(got - emu["encoder"]).max() <= 1
    assert off.sum() <= 0.001 * off.size, off.sum()
    # every residual add lands on the grid (P-SpikeSSM records a block's output before its rounding: the
    # backbone's output, after the last block and the final norm, is what shows it)
    streams = rec["stream"] if "stream" in rec else [rec["stream_out"]]
    for x in streams:
        assert np.array_equal(x.numpy() * np.exp2(f), np.round(x.numpy() * np.exp2(f)))
    t = torch.randn(2, len(f.ravel()), 5, dtype=torch.float64, requires_grad=True)
    fake_stream(t, f.ravel(), 1).sum().backward()                    # straight through
    np.testing.assert_array_equal(t.grad.numpy(), np.ones(t.shape))


def test_probability_quantiser_equals_the_emulators_probabilities():
    """``--prob-bits``: the first sampler's probability, rounded in the fine-tuning forward (its input the
    rounded encoder output, as on the chip), is the emulator's p; the sampler's multiplier is rounded
    too (its bound is the export report's error for the node), so a cell may differ by one step, and
    does on few cells.  The quantiser is straight through."""
    from neurocompile.passes.quantizers import fake_probability, probability_integers

    bits = 6
    prog, rec, emu = _fake_quantized_run("examples/pspikessm-digits/ckpt.pt", CompileOptions(prob_bits=bits))
    p = probability_integers(rec["layer0.p_in"].numpy(), bits)
    diff = np.abs(p - emu["layer0.s_in.p"])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff > 0).mean()
    assert (diff == 0).sum() > 0 and len(np.unique(p)) > 2 ** bits // 2     # a real range of probabilities
    t = torch.rand(3, 7, dtype=torch.float64, requires_grad=True)
    q = fake_probability(t, bits)
    np.testing.assert_array_equal(q.detach().numpy() * 2 ** bits, probability_integers(t.detach().numpy(), bits))
    q.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), np.ones(t.shape))
    # the blocks sample from the rounded p: just above a grid point it rounds down to it and a uniform
    # between the two no longer fires
    from neurocompile.finetuning import fake_quantized
    from neurocompile.models.checkpoint import build_model, load_checkpoint
    kind, config, sd, _ = load_checkpoint("examples/pspikessm-digits/ckpt.pt")
    model = build_model(config, sd, kind)
    block = model.backbone.layers[0]
    p, u = torch.full((4,), 0.5 + 2.0 ** -(bits + 2)), torch.full((4,), 0.5 + 2.0 ** -(bits + 3))
    assert block.sample(p, u).sum() == 4
    with fake_quantized(model, CompileOptions(prob_bits=bits), get_target()):
        assert block.sample(p, u).sum() == 0


@pytest.mark.parametrize("decay_bits, weight_bits", [(18, 8), (12, 4)])
def test_recurrent_quantiser_equals_export(decay_bits, weight_bits):
    """A layer export lowers to a recurrence: the fine-tuning forward rounds its decays (``--decay-bits``),
    input and output gains and D (the synapse width) to exactly the integers export writes, and its
    kernel is the one those integers realise, gradients straight through to the layer's own kernel."""
    from neurocompile.finetuning import quantized_recurrent_kernel
    from neurocompile.ir import IntSSMRecurrent
    from neurocompile.models.checkpoint import build_model, load_checkpoint
    from neurocompile.passes.quantizers import recurrent_kernel

    options = CompileOptions(ssm_lowering="recurrent", decay_bits=decay_bits, weight_bits=weight_bits)
    prog = compile_checkpoint(DIGITS, options, warn=lambda _: None)
    ops = _ops(prog, IntSSMRecurrent)
    kind, config, sd, _ = load_checkpoint(DIGITS)
    model = build_model(config, sd, kind)
    even = int(get_target().weights_even)
    assert len(ops) == len(model.backbone.s4_layers) == 2
    for layer, op in zip(model.backbone.s4_layers, ops):
        K, coefficients = quantized_recurrent_kernel(layer, config.l_max, options, get_target())
        decay, ds, (b, _), (c2, _), (d, _) = coefficients
        np.testing.assert_array_equal(decay, op.decay)
        assert ds == op.decay_shift == decay_bits - 1
        np.testing.assert_array_equal(b, op.gain_in)
        np.testing.assert_array_equal(c2, op.gain_out)
        np.testing.assert_array_equal(d, op.direct)
        want = recurrent_kernel(coefficients, config.l_max)      # t + (value - t): exact up to float64's rounding
        np.testing.assert_allclose(K[0].detach().numpy(), want, rtol=0, atol=4 * np.finfo(float).eps * np.abs(want).max())
        K.sum().backward()
        grads = [p.grad for p in layer.kernel.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


def test_the_stream_point_follows_the_weights_as_export_computes_it(tmp_path):
    """Fine-tuning refreshes the stream's fixed point from the current weights: after the encoder's
    weights grow 64x it is what export computes for a checkpoint of those weights, and not the old one."""
    from neurocompile.finetuning import fake_quantized
    from neurocompile.models.checkpoint import build_model, load_checkpoint, save_checkpoint

    options = CompileOptions(act_bits=8)
    prog = compile_checkpoint(DIGITS, options, warn=lambda _: None)
    kind, config, sd, meta = load_checkpoint(DIGITS)
    model = build_model(config, sd, kind)
    with torch.no_grad():
        model.encoder.weight.mul_(64)
        model.encoder.bias.mul_(64)
    with fake_quantized(model, options, get_target(), prog) as stream:
        np.testing.assert_array_equal(stream.frac, prog.report["stream_frac_bits"])
        stream.refresh(model, kind, prog, options, get_target())
    path = str(tmp_path / "grown.pt")
    save_checkpoint(path, model, meta, kind=kind)
    want = compile_checkpoint(path, options, warn=lambda _: None).report["stream_frac_bits"]
    np.testing.assert_array_equal(stream.frac, want)
    assert (stream.frac < np.asarray(prog.report["stream_frac_bits"])).any()
