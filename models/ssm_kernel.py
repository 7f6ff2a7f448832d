"""Diagonal SSM (S4D) kernels with the official SpikingSSM parameter names, ZOH discretisation.

Variant A ``'s4d'`` (official ``trainable_B=False``, S4DKernel):
    C (ch,H,N/2,2), log_dt (H), log_A_real (H,N/2), A_imag (H,N/2);
    A = -exp(log_A_real) + 1j*A_imag, dt = exp(log_dt), B = 1.
Variant B ``'diag_b'`` (official ``trainable_B=True``, s4 SSMKernelDiag):
    inv_dt (H,1), C (ch,H,N/2,2), B (1,H,N/2,2), A_real (H,N/2), A_imag (H,N/2);
    A = -exp(A_real) - 1j*A_imag, dt = exp(inv_dt), C' = B*C.
K[c,h,l] = 2 Re( sum_n C'[c,h,n] (exp(dt A)-1)/A exp(dt A l) ).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

VARIANTS = ("s4d", "diag_b")
PARAM_NAMES = {"s4d": ("C", "log_dt", "log_A_real", "A_imag"),
               "diag_b": ("inv_dt", "C", "B", "A_real", "A_imag")}


def init_kernel_params(variant: str, H: int, N: int, channels: int = 1, dt_min: float = 0.001,
                       dt_max: float = 0.1, generator: torch.Generator | None = None) -> dict:
    """S4D-Lin initialisation: A = -0.5 + 1j*pi*n, log dt ~ U[log dt_min, log dt_max], C ~ CN(0, 1), B = 1."""
    n = N // 2
    log_dt = torch.rand(H, generator=generator) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    C = torch.view_as_real(torch.randn(channels, H, n, dtype=torch.cfloat, generator=generator)).contiguous()
    a_imag = math.pi * torch.arange(n, dtype=torch.float32).expand(H, n).contiguous()
    a_real_log = torch.full((H, n), math.log(0.5))
    if variant == "s4d":
        return {"C": C, "log_dt": log_dt, "log_A_real": a_real_log, "A_imag": a_imag}
    if variant == "diag_b":
        B = torch.view_as_real(torch.ones(1, H, n, dtype=torch.cfloat)).contiguous()
        return {"inv_dt": log_dt.unsqueeze(-1), "C": C, "B": B, "A_real": a_real_log, "A_imag": -a_imag}
    raise ValueError(f"unknown kernel variant {variant!r} (expected one of {VARIANTS})")


def continuous_params(params: dict, variant: str, dtype=torch.float64):
    """(dt (H,), A (H,N/2) complex, C' (ch,H,N/2) complex with B folded in) in the given real precision."""
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    p = {k: v.to(dtype) for k, v in params.items()}
    C = torch.view_as_complex(p["C"].contiguous())
    if variant == "s4d":
        dt = torch.exp(p["log_dt"])
        A = torch.complex(-torch.exp(p["log_A_real"]), p["A_imag"])
    elif variant == "diag_b":
        dt = torch.exp(p["inv_dt"]).reshape(-1)
        A = torch.complex(-torch.exp(p["A_real"]), -p["A_imag"])
        C = C * torch.view_as_complex(p["B"].contiguous())
    else:
        raise ValueError(f"unknown kernel variant {variant!r} (expected one of {VARIANTS})")
    return dt, A.to(cdtype), C.to(cdtype)


def materialize_kernel(params: dict, variant: str, L: int, dtype=torch.float64) -> Tensor:
    """Length-L convolution kernel (ch,H,L) of the discretised diagonal SSM.

    ``params`` maps parameter names without the ``kernel.`` prefix to tensors (a state_dict slice).
    Differentiable; computed in ``dtype`` (float64 for the compiler, float32 while training).
    """
    dt, A, C = continuous_params(params, variant, dtype)
    dtA = A * dt.unsqueeze(-1)                                     # (H,n)
    Cz = C * (torch.exp(dtA) - 1.0) / A                            # (ch,H,n)
    # exp(dtA * l) with l = k*block + j is exp(dtA*k*block) * exp(dtA*j): two small exponentials, and
    # the sum over modes becomes one batched product per channel (no (H, n, L) Vandermonde).
    block = max(1, min(32, L))
    j = torch.arange(block, device=dtA.device, dtype=dtype)
    k = torch.arange(-(-L // block), device=dtA.device, dtype=dtype) * block
    fine, coarse = torch.exp(dtA.unsqueeze(-1) * j), torch.exp(dtA.unsqueeze(-1) * k)     # (H,n,block), (H,n,L/block)
    K = torch.einsum("chnk,hnj->chkj", Cz.unsqueeze(-1) * coarse, fine)
    return 2.0 * K.flatten(-2)[..., :L].real


def ssm_convolution(u: Tensor, K: Tensor, D: Tensor) -> Tensor:
    """y = K * u + D u for u (B,H,L), K (ch,H,L), D (1,H); FFT of length 2L.

    ch == 1: causal, y[t] = sum_{s<=t} K[0,t-s] u[s].
    ch == 2: two-sided, y[t] = sum_{s<=t} K[0,t-s] u[s] + sum_{s>t} K[1,s-t-1] u[s].
    """
    L = u.shape[-1]
    if K.shape[0] == 2:
        k = nn.functional.pad(K[0], (0, L)) + nn.functional.pad(K[1].flip(-1), (L, 0))   # (H,2L)
    elif K.shape[0] == 1:
        k = K[0]
    else:
        raise ValueError(f"kernel has {K.shape[0]} channels; expected 1 (causal) or 2 (bidirectional)")
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
    return y + u * D.reshape(-1).unsqueeze(-1)


class SSMKernel(nn.Module):
    """Holds the kernel parameters under their official names; ``forward(L)`` -> K (ch,H,L)."""

    def __init__(self, variant: str, H: int, N: int, channels: int = 1, dt_min: float = 0.001,
                 dt_max: float = 0.1):
        super().__init__()
        self.variant = variant
        for name, t in init_kernel_params(variant, H, N, channels, dt_min, dt_max).items():
            self.register_parameter(name, nn.Parameter(t))

    def ssm_param_names(self) -> tuple:
        """Parameters trained with the small SSM learning rate and no weight decay (A and dt; as in s4)."""
        return tuple(n for n in PARAM_NAMES[self.variant] if n not in ("C",))

    def params(self) -> dict:
        return {n: getattr(self, n) for n in PARAM_NAMES[self.variant]}

    def forward(self, L: int, dtype=torch.float32) -> Tensor:
        return materialize_kernel(self.params(), self.variant, L, dtype=dtype)
