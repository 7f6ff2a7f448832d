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
