"""The compiled, integer network: what ``export`` writes and every back end runs.

A ``Program`` is plain numpy (no torch): the Lava runtime loads it without the training stack.
Integer arrays are int64; their meaning is fixed by ``neurocompile.arith``.  The float copies
(``*_float``) carry the folded but unquantized model for Lava's ``floating_pt`` process models.

Time alignment: the stream entering layer ``i`` reaches it ``i`` steps late on Lava, because each
layer's Dense synapse delays by one step (``Program.layer_delay``).  The emulator works in logical
time; the Lava runner removes the delays when it reads traces back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EncoderParams:
    weight: np.ndarray          # (H, d_in) int: stream units per input level
    bias: np.ndarray            # (H,) int
    input_bits: int             # bit planes of the raw input levels
    weight_float: np.ndarray    # (H, d_in) float64, per input level
    bias_float: np.ndarray      # (H,) float64


@dataclass(frozen=True)
class LayerParams:
    kernel: np.ndarray          # (H, L) int taps, D folded into tap 0, 1/Vth folded in
    kernel_shift: np.ndarray    # (H,) int: shift_round(acc, kernel_shift) -> LIF input a_in
    stream_bits: int            # bit planes of the stream entering this layer (two's complement)
    dv: int                     # LIF voltage decay (4096 - dv) / 4096
    vth: int                    # LIF threshold mantissa (spike when v > vth << 6)
    mix_weight: np.ndarray      # (2H, H) int, Lava Dense weights (even, |w| <= 254)
    mix_bias: np.ndarray        # (2H,) int, at the Dense output's scale
    value_shift: np.ndarray     # (H,) int
    gate_shift: np.ndarray      # (H,) int
    out_shift: np.ndarray       # (H,) int
    kernel_float: np.ndarray    # (H, L) float64, threshold 1
    mix_weight_float: np.ndarray  # (2H, H) float64
    mix_bias_float: np.ndarray  # (2H,) float64
    tau: float                  # float LIF retention
    acc_split: int = 0          # stream bit planes below this go to the SSM's low accumulator


@dataclass(frozen=True)
class ReadoutParams:
    weight: np.ndarray          # (d_out, H) int
    bias: np.ndarray            # (d_out,) int, already multiplied by L
    logit_frac_bits: int        # integer logits ~ float logits * L * 2**logit_frac_bits
    pre_shift: np.ndarray       # (H,) int: the time sum adds shift_round(x, pre_shift)
    weight_float: np.ndarray    # (d_out, H) float64
    bias_float: np.ndarray      # (d_out,) float64


@dataclass(frozen=True)
class Program:
    model: dict                 # kind, d_input, d_output, d_model, n_layers, l_max, input_levels
    stream_frac_bits: np.ndarray  # (H,) stream channel h holds round(x_h * 2**stream_frac_bits[h])
    encoder: EncoderParams
    layers: tuple               # of LayerParams
    readout: ReadoutParams
    sigmoid_lut: np.ndarray     # (2**k,) int, sigmoid at the LUT's input resolution
    sigmoid_in_frac_bits: int
    sigmoid_out_frac_bits: int
    report: dict = field(default_factory=dict)   # range analysis, AC-only summary, options

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def seq_len(self) -> int:
        return int(self.model["l_max"])

    @property
    def d_model(self) -> int:
        return int(self.model["d_model"])

    @property
    def n_classes(self) -> int:
        return int(self.model["d_output"])

    def layer_delay(self, i: int) -> int:
        """Steps by which the stream entering layer i lags the input on Lava (one per Dense hop)."""
        return i

    @property
    def window(self) -> int:
        """Lava steps per sample: the sequence plus the pipeline depth."""
        return self.seq_len + self.n_layers
