"""`plan` counts synaptic weights at their real width: Loihi 2 packs 1-8-bit weights (b/8 bytes each)."""
import dataclasses
import os

import numpy as np
import pytest

import neurocompile as nc
from neurocompile.operations import int_bytes
from neurocompile.plan_report import plan_text
from neurocompile.targets.loihi2.plan import plan_program
from neurocompile.targets.loihi2.target import BUDGETS, LOIHI2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
WIDTHS = (8, 6, 5, 4, 3, 2)


@pytest.fixture(scope="module")
def digits():
    """The digits SpikingSSM (H = 64, L = 64, 2 layers) with kernels and weights at each width."""
    return {b: nc.compile_checkpoint(DIGITS, nc.CompileOptions(kernel_bits=b, weight_bits=b)) for b in WIDTHS}


def test_packed_bytes_round_up_the_bits_not_each_value():
    values = np.array([7, -7, 1])                          # 4-bit mantissas (sign included)
    assert int_bytes(values, packed_bits=8) == 2          # 12 bits
    assert int_bytes(values) == 3                          # a whole byte each
    assert int_bytes(np.array([300, -2]), packed_bits=8) == 4    # 10 bits: wider than 8, whole bytes


@pytest.mark.parametrize("bits", [8, 4])
def test_digits_synapse_bytes_at_8_and_4_bits(digits, bits):
    """Mixer: a 128 x 64 Dense of b-bit weights.  Convolution: 64 channels x 64 taps x 12 stream bit planes
    (layer 0) / 15 (layer 1) delayed synapses, each a b-bit weight and a delay byte."""
    plan = plan_program(digits[bits])
    procs = {p.name: p.placement for p in plan.processes}
    assert procs["layer0.mixer"].synapse_bytes == procs["layer1.mixer"].synapse_bytes == 128 * 64 * bits // 8
    assert procs["layer0.ssm"].synapse_bytes == 64 * 64 * 12 * (bits + 8) // 8
    assert procs["layer1.ssm"].synapse_bytes == 64 * 64 * 15 * (bits + 8) // 8
    assert {n: procs[n].weight_bits for n in ("layer0.mixer", "layer0.ssm", "layer1.ssm")} == \
        {"layer0.mixer": bits, "layer0.ssm": bits, "layer1.ssm": bits}
    assert (plan.cores, plan.chips) == (8, 1)
    text = plan_text(plan.to_dict(), "digits.loihi2")
    assert "synaptic weights counted packed at their width up to 8 bits (a b-bit weight holds b/8 bytes)" in text
    counted = {8: "8-bit: encoder, layer0.ssm, layer0.mixer, layer1.ssm, layer1.mixer",
               4: "4-bit: layer0.ssm, layer0.mixer, layer1.ssm, layer1.mixer; 8-bit: encoder"}  # encoder: stream scale
    assert counted[bits] in text
    assert f"stock Dense (binary spikes, {bits}-bit weights)" in text


def test_a_target_that_does_not_pack_counts_whole_bytes(digits):
    unpacked = dataclasses.replace(LOIHI2, packed_weight_bits=0)
    procs = {p.name: p.placement for p in plan_program(digits[4], target=unpacked).processes}
    assert procs["layer0.mixer"].synapse_bytes == 128 * 64
    assert procs["layer0.ssm"].synapse_bytes == 64 * 64 * 12 * 2
    assert "synaptic weights counted in whole bytes: 4-bit" in plan_text(
        plan_program(digits[4], target=unpacked).to_dict(), "d")


def test_fewer_weight_bits_never_need_more_cores(digits):
    """On Loihi 2's budgets and on cores of 16 KiB (where the synapses decide the core count)."""
    small = dataclasses.replace(LOIHI2, budgets=dataclasses.replace(BUDGETS, memory_per_core_bytes=16 * 1024))
    for target in (LOIHI2, small):
        cores = [plan_program(digits[b], target=target).cores for b in WIDTHS]
        assert cores == sorted(cores, reverse=True), (target.budgets.memory_per_core_bytes, cores)
    assert plan_program(digits[4], target=small).cores < plan_program(digits[8], target=small).cores
