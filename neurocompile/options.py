"""Compile options: every knob of quantization, with the defaults the CLI shows."""
from dataclasses import asdict, dataclass
from typing import Optional


@dataclass(frozen=True)
class CompileOptions:
    """How a checkpoint is compiled: bit widths of kernels, weights and the residual stream, the SSM
    lowering and the other choices of ``neurocompile export`` (each field is one of its flags)."""

    kernel_bits: int = 8            # SSM kernel mantissa bits (sign included), per-channel exponent
    weight_bits: int = 8            # mixer / decoder mantissa bits (sign included), per-row exponent
    act_bits: Optional[int] = None  # residual-stream bits; None: the most (<= 16) that fit 24-bit registers
    max_act_bits: int = 16          # where bit-serial convolutions read the stream (else 22)
    min_act_bits: int = 6
    sigmoid_in_frac_bits: int = 5   # gate resolution 1/32 ...
    sigmoid_lut_bits: int = 9       # ... over [-8, 8): 512 entries
    sigmoid_out_frac_bits: int = 10  # sigmoid values in 1/1024
    phi_in_frac_bits: int = 6       # GELU's normal CDF table: input resolution 1/64 ...
    phi_lut_bits: int = 10          # ... over [-8, 8): 1024 entries
    phi_out_frac_bits: int = 12     # Phi values in 1/4096
    prob_bits: int = 16             # firing probabilities and uniforms of stochastic spikes
    operand_bits: int = 12          # an affine's value operand (its multiplier gets the rest of 24 bits)
    ssm_lowering: str = "conv"      # causal diagonal SSMs: 'conv' (accumulate-only), 'recurrent' (modes), 'auto'
    decay_bits: int = 18            # recurrent SSM: decay mantissa bits incl. sign (a neuron register)

    def __post_init__(self):
        for name in ("kernel_bits", "weight_bits"):
            if not 2 <= getattr(self, name) <= 8:
                raise ValueError(f"--{name.replace('_', '-')} must be in 2..8 (Loihi 2 weights are 8-bit mantissas)")
        if self.act_bits is not None and not 2 <= self.act_bits <= 24:
            raise ValueError("--act-bits must be in 2..24")
        if not 1 <= self.prob_bits <= 22:
            raise ValueError("--prob-bits must be in 1..22")
        if self.ssm_lowering not in ("conv", "recurrent", "auto"):
            raise ValueError("--ssm-lowering must be conv, recurrent or auto")
        if not 8 <= self.decay_bits <= 24:
            raise ValueError("--decay-bits must be in 8..24 (a 24-bit neuron register)")

    def to_dict(self) -> dict:
        return asdict(self)
