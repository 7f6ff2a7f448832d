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
