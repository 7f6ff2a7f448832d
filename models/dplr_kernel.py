"""S4 DPLR kernel (HiPPO-LegS, rank 1, bilinear) with the official P-SpikeSSM parameter names.

The P-SpikeSSM S4 layer (official ``SSMKernelDPLR``, config ``mode: nplr, init: legs, rank: 1,
dt_transform: softplus``) stores, per kernel (keys below are relative to ``...kernel.``)::

    inv_dt   (H, 1)              dt = softplus(inv_dt)                      (one dt per channel h)
    C        (ch, H, n, 2)       C~, real view of complex, for the length-``l_kernel`` truncated
                                 generating function (see below); ch = 2 for two-sided kernels
    B        (1, n_ssm, n, 2)    complex B
    A_real   (n_ssm, n)          Lambda = -exp(A_real) - 1j * A_imag     (diagonal part)
    A_imag   (n_ssm, n)
    P        (1, n_ssm, n, 2)    rank-1 low-rank part
    l_kernel ()  int64 buffer    length C~ is attuned to (0: C is still the true C)

with n = N/2 complex modes standing for N/2 conjugate pairs (the full state has N = d_state
complex coordinates h_full = [h, conj h]).  Channel h uses SSM copy ``h % n_ssm`` (the official
``repeat 't n -> (v t) n'``), so ``n_ssm = 1`` shares Lambda/B/P across all H channels.

Continuous system on the full 2n-dimensional state, per channel h:

    A_full = diag([Lambda, conj Lambda]) - p p^*,   p = [P, conj P]    (A = diag(Lambda) - P P^*)
    B_full = [B, conj B],   C_full = [C, conj C]
    x'(t) = A_full x + B_full u,   y = C_full^T x          (plain transpose: y is real)

Bilinear discretisation (step dt):  dA = (I - dt/2 A)^-1 (I + dt/2 A),  dB = dt (I - dt/2 A)^-1 B.
Kernel taps K[j] = C^T dA^j dB (j = 0 .. L-1), so the layer computes y = K * u + D u.

C~ (the stored ``C``) relates to the true C by C~ = (I - dA^l)^T C with l = ``l_kernel`` (the
official ``_setup_C``: plain transpose, not the conjugate transpose), i.e. true C = (I - dA^l)^-T C~.
The official forward never forms the true C: it evaluates the truncated generating function
sum_{j<l} K[j] w^j = C~^T (I - w dA)^-1 dB at the l-th roots of unity w through a Cauchy sum and
the Woodbury identity, takes an inverse FFT of length l and keeps the first L taps.

Two ways to compute the same taps live here, both in float64 and WITHOUT diagonalising the
DPLR matrix (its eigenvector matrix has condition number ~1e6-1e7):

* ``materialize_dplr_kernel``: the dense REAL recurrence.  In the real basis r = [Re h, Im h]
  (h_full = M r, M = [[I, iI], [I, -iI]]) the system is real:
      A_r = [[diag(Re L), -diag(Im L)], [diag(Im L), diag(Re L)]] - 2 p_r p_r^T,  p_r = [Re P, Im P]
      B_r = [Re B, Im B],   c_r = [2 Re C, -2 Im C]
  discretised bilinearly with dense solves, true C from C~ by one solve, taps by L matrix-vector
  steps.  This is what the compiler uses.
* ``dplr_kernel_woodbury``: the official algorithm (Cauchy sums + rank-1 Woodbury on the
  generating function), differentiable; the training forward uses it.

``fft_conv`` is the official ``FFTConv`` convolution: kernel length lk = min(L, l_max), FFT of
length lk + L; with two channels the second kernel is flipped and placed after the first, so
    y[t] = sum_{0<=t-s<lk} K0[t-s] u[s] + sum_{1<=s-t<=lk} K1[s-t-1] u[s] + D u[t]
(the anti-causal half does not see u[t]; the official comment calls it a deliberate off-by-one).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

PARAM_NAMES = ("inv_dt", "C", "B", "A_real", "A_imag", "P")
SSM_PARAM_NAMES = ("inv_dt", "B", "A_real", "A_imag", "P")   # trained at the small SSM learning rate


def hippo_legs_dplr(N: int):
    """Normal-plus-low-rank form of the HiPPO-LegS matrix, N/2 conjugate pairs kept (float64).

    LegS: A[i,k] = -sqrt(2i+1) sqrt(2k+1) (i > k), -(i+1) (i == k), 0 (i < k); B[i] = sqrt(2i+1);
    rank-1 correction P[i] = sqrt(i + 1/2) makes A + P P^T = -1/2 I + S with S skew-symmetric.
    S is diagonalised as the Hermitian matrix -iS (eigenvalues w real, so S has eigenvalues i w);
    the N/2 eigenpairs with the most negative w are kept (sorted ascending, as the official code).
    Returns (Lambda (N/2,) complex, P (N/2,) complex, B (N/2,) complex) with B's imaginary part
    clipped to [-2, 2] (the official ``B_clip=2.0``).
    """
    q = np.arange(N, dtype=np.float64)
    sq = np.sqrt(2 * q + 1)
    # Built as T M T^-1 with M[i,k] = -(2k+1) (i > k), -(i+1) (i == k), T = diag(sqrt(2q+1)), and
    # rounded to float32 before the float64 eigen-solve, as the official initialisation does:
    # eigenvector phases (and hence which entries B_clip touches) then come out the same.
    M = -(np.tril(np.broadcast_to(2 * q + 1, (N, N)), -1) + np.diag(q + 1))
    A = torch.as_tensor(np.diag(sq) @ M @ np.linalg.inv(np.diag(sq)), dtype=torch.float32)
    B = torch.as_tensor(sq, dtype=torch.float32)
    P = torch.sqrt(0.5 + torch.arange(N, dtype=torch.float32))
    AP = A + P.unsqueeze(-1) * P.unsqueeze(-2)                           # -1/2 I + skew (float32)
    w_re = float(torch.diagonal(AP).mean())
    # eigh reads the lower triangle and the real part of the diagonal: this diagonalises -iS.
    w_im, V = torch.linalg.eigh(AP.to(torch.float64) * -1j)
    order = torch.sort(w_im).indices[: N // 2]
    lam = w_re + 1j * w_im[order]
    V = V[:, order]                                                      # (N, N/2)
    Vh = V.conj().transpose(0, 1)
    Bc = Vh @ B.to(torch.complex128)
    Pc = Vh @ P.to(torch.complex128)
    Bc = torch.complex(Bc.real, Bc.imag.clamp(-2.0, 2.0))
    return lam, Pc, Bc


def init_dplr_params(H: int, N: int, channels: int = 1, n_ssm: int = 1, dt_min: float = 0.001,
                     dt_max: float = 0.1, l_kernel: int = 0, generator: torch.Generator | None = None) -> dict:
    """Official S4 (nplr, legs) initialisation in the official layout (float32; ``l_kernel`` int64).

    dt ~ exp(U[log dt_min, log dt_max]) stored as inv_dt = softplus^-1(dt); Lambda, P, B from
    HiPPO-LegS (same for every SSM copy); A_real = log(0.5), A_imag = -Im Lambda (clamped >= 1e-4
    as the official inverse transform); C ~ CN(0, 1) (the true C), then, when ``l_kernel`` > 0,
    converted in float64 to C~ for that length (the official code does this on its first forward).
    """
    if N < 2 or N % 2:
        raise ValueError(f"d_state must be an even integer >= 2 (got {N})")
    if H % n_ssm:
        raise ValueError(f"n_ssm ({n_ssm}) must divide d_model ({H})")
    n = N // 2
    log_dt = torch.rand(H, 1, generator=generator, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) \
        + math.log(dt_min)
    dt = torch.exp(log_dt).clamp(min=1e-4)
    inv_dt = torch.log(torch.expm1(dt))
    lam, Pc, Bc = hippo_legs_dplr(N)
    C = torch.randn(channels, H, n, dtype=torch.complex128, generator=generator)
    params = {
        "inv_dt": inv_dt,
        "C": torch.view_as_real(C).contiguous(),
        "B": torch.view_as_real(Bc.expand(1, n_ssm, n)).contiguous(),
        "A_real": torch.log((-lam.real).clamp(min=1e-4)).expand(n_ssm, n).contiguous(),
        "A_imag": (-lam.imag).clamp(min=1e-4).expand(n_ssm, n).contiguous(),
        "P": torch.view_as_real(Pc.expand(1, n_ssm, n)).contiguous(),
    }
    if l_kernel > 0:
        params["C"] = convert_C(params, 0, l_kernel)
    out = {k: v.to(torch.float32) for k, v in params.items()}
    out["l_kernel"] = torch.tensor(int(l_kernel), dtype=torch.int64)
    return out


# --------------------------------------------------------------------------- continuous system
def continuous_params(params: dict, dtype=torch.float64):
    """(dt (H,), Lambda (H,n), B (H,n), P (H,n), C (ch,H,n)) complex in the given precision,
    the SSM copies broadcast over the H channels (channel h uses copy h % n_ssm)."""
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    H = params["inv_dt"].shape[0]
    dt = nn.functional.softplus(params["inv_dt"].to(dtype)).reshape(H)
    lam = torch.complex(-torch.exp(params["A_real"].to(dtype)), -params["A_imag"].to(dtype))
    B = torch.view_as_complex(params["B"].to(dtype).contiguous())[0]
    P = torch.view_as_complex(params["P"].to(dtype).contiguous())
    if P.shape[0] != 1:
        raise ValueError(f"only rank-1 DPLR kernels are supported (P has rank {P.shape[0]})")
    P = P[0]
    n_ssm = lam.shape[0]
    if H % n_ssm:
        raise ValueError(f"n_ssm ({n_ssm}) must divide the number of channels ({H})")
    rep = H // n_ssm
    lam, B, P = (t.repeat(rep, 1) for t in (lam, B, P))                  # (v t) n: h -> h % n_ssm
    C = torch.view_as_complex(params["C"].to(dtype).contiguous())
    return dt, lam.to(cdtype), B.to(cdtype), P.to(cdtype), C.to(cdtype)


def real_system(params: dict):
    """Dense real continuous system per channel: (dt (H,), A_r (H,2n,2n), B_r (H,2n), c~_r (ch,H,2n)).

    c~_r is the stored C (C~ when ``l_kernel`` > 0) in the real basis r = [Re h, Im h]."""
    dt, lam, B, P, C = continuous_params(params, torch.float64)
    H, n = lam.shape
    a, b = lam.real, lam.imag
    A = torch.zeros(H, 2 * n, 2 * n, dtype=torch.float64)
    idx = torch.arange(n)
    A[:, idx, idx] = a
    A[:, idx + n, idx + n] = a
    A[:, idx, idx + n] = -b
    A[:, idx + n, idx] = b
    p = torch.cat([P.real, P.imag], -1)                                  # (H, 2n)
    A = A - 2.0 * p.unsqueeze(-1) * p.unsqueeze(-2)
    Br = torch.cat([B.real, B.imag], -1)
    Cr = torch.cat([2.0 * C.real, -2.0 * C.imag], -1)
    return dt, A, Br, Cr


def discretize_bilinear(dt: Tensor, A: Tensor, B: Tensor):
    """dA = (I - dt/2 A)^-1 (I + dt/2 A), dB = dt (I - dt/2 A)^-1 B  (dense, per channel)."""
    I = torch.eye(A.shape[-1], dtype=A.dtype)
    half = (dt / 2).reshape(-1, 1, 1)
    back = I - half * A
    dA = torch.linalg.solve(back, I + half * A)
    dB = dt.reshape(-1, 1) * torch.linalg.solve(back, B.unsqueeze(-1)).squeeze(-1)
    return dA, dB


def discrete_real_system(params: dict):
    """(dA (H,2n,2n), dB (H,2n), C (ch,H,2n)) real float64 with the TRUE output matrix C.

    y[t] = C h[t] (+ D u[t]),  h[t] = dA h[t-1] + dB u[t]."""
    dt, A, B, Ct = real_system(params)
    dA, dB = discretize_bilinear(dt, A, B)
    lk = int(params["l_kernel"]) if "l_kernel" in params else 0
    if lk > 0:
        I = torch.eye(dA.shape[-1], dtype=dA.dtype)
        M = (I - torch.linalg.matrix_power(dA, lk)).transpose(-1, -2)    # (H, 2n, 2n)
        C = torch.linalg.solve(M.unsqueeze(0), Ct.unsqueeze(-1)).squeeze(-1)
    else:
        C = Ct
    return dA, dB, C


def materialize_dplr_kernel(params: dict, L: int) -> Tensor:
    """Length-L kernel taps (ch, H, L) float64: K[c,h,j] = C[c,h] dA[h]^j dB[h].

    ``params`` maps names without the ``kernel.`` prefix (a state_dict slice; ``l_kernel``
    optional, 0/absent meaning C is the true C) to tensors.  y = fft_conv(u, K, D) is then the
    official layer's SSM output (before its GELU).  Dense real recurrence in float64, unrolled by
    doubling: [dB .. dA^(m-1) dB] -> append dA^m times it (log2 L dense products)."""
    dA, dB, C = discrete_real_system(params)
    L = int(L)
    V = dB.unsqueeze(-1)                                                 # (H, 2n, m): dA^j dB, j < m
    Apow = dA                                                            # dA^m
    while V.shape[-1] < L:
        V = torch.cat([V, Apow @ V], -1)
        Apow = Apow @ Apow
    return torch.einsum("chn,hnl->chl", C, V[..., :L])


def convert_C(params: dict, l_old: int, l_new: int) -> Tensor:
    """New stored C (real view, float64) for ``l_kernel`` l_new, from the stored C at l_old.

    l_old == 0: C~ = (I - dA^l_new)^T C (C is the true C; the official first ``_setup_C``).
    Otherwise C~' = (I - dA^l_new)^T (I - dA^l_old)^-T C~ (l_new = 2 l_old is the official
    doubling, C~' = (I + dA^l_old)^T C~).  Computed in the real basis, returned as (ch,H,n,2)."""
    p = dict(params)
    p["l_kernel"] = torch.tensor(int(l_old))
    dA, _, C = discrete_real_system(p)                                   # true C (ch,H,2n)
    I = torch.eye(dA.shape[-1], dtype=dA.dtype)
    M = (I - torch.linalg.matrix_power(dA, int(l_new))).transpose(-1, -2)
    Ct = torch.einsum("hmn,chn->chm", M, C)
    n = Ct.shape[-1] // 2
    Cc = torch.complex(Ct[..., :n] / 2.0, -Ct[..., n:] / 2.0)
    return torch.view_as_real(Cc).contiguous()


# ----------------------------------------------------------------------- official algorithm
def dplr_kernel_woodbury(params: dict, L: int, dtype=torch.float64) -> Tensor:
    """Kernel (ch, H, L) by the official S4 algorithm, differentiable.

    Evaluates the length-lk (lk = ``l_kernel``) truncated generating function
    K^(w) = C~^T (I - w dA)^-1 dB = dt C~^T [(1-w) I - (1+w) dt/2 A]^-1 B at w_k = exp(-2 pi i k/lk)
    with the rank-1 Woodbury identity on A = diag(Lambda) - P P^* and Cauchy sums over the n
    conjugate pairs, then irfft of length lk and keeps the first L taps (L <= lk).  Written with
    a = 1-w, b = 1+w so the Nyquist node w = -1 is finite (the official z = 2(1-w)/(1+w) form
    divides by ~0 there; the limit is the same).  Requires ``l_kernel`` >= L > 0."""
    lk = int(params["l_kernel"])
    if not 0 < L <= lk:
        raise ValueError(f"kernel length {L} needs 0 < L <= l_kernel ({lk})")
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    dt, lam, B, P, C = continuous_params(params, dtype)
    k = torch.arange(lk // 2 + 1, dtype=dtype)
    w = torch.polar(torch.ones_like(k), -2.0 * math.pi * k / lk).to(cdtype)   # (K,)
    a, b = 1.0 - w, 1.0 + w
    c = b.unsqueeze(0) * (dt / 2).unsqueeze(-1)                               # (H, K)
    r1 = 1.0 / (a - c.unsqueeze(1) * lam.unsqueeze(-1))                       # (H, n, K)  modes Lambda
    r2 = 1.0 / (a - c.unsqueeze(1) * lam.conj().unsqueeze(-1))                # (H, n, K)  modes conj Lambda

    def pair(x, y):
        """x_full^T R y_full over the full 2n state, x_full = [x, conj x], y_full = [y, conj y]."""
        return ((x * y).unsqueeze(-1) * r1).sum(-2) + ((x * y).conj().unsqueeze(-1) * r2).sum(-2)

    Q = P.conj()
    cRb = pair(C, B)                                                     # (ch, H, K)
    cRp = pair(C, P)
    qRb = pair(Q, B)                                                     # (H, K)
    qRp = pair(Q, P)
    kf = dt.unsqueeze(-1) * (cRb - c * cRp * qRb / (1.0 + c * qRp))
    return torch.fft.irfft(kf, n=lk)[..., :L]


def fft_conv(u: Tensor, K: Tensor, D: Tensor) -> Tensor:
    """Official FFTConv: y = K * u + D u for u (B,H,L), K (ch,H,lk) with lk <= L, D (1,H).

    ch == 1: causal, y[t] = sum_{0<=t-s<lk} K[0,t-s] u[s].
    ch == 2: two-sided, plus sum_{1<=s-t<=lk} K[1,s-t-1] u[s]  (K[1] flipped, placed after K[0]).
    FFT length lk + L, as the official code."""
    L = u.shape[-1]
    lk = K.shape[-1]
    if K.shape[0] == 2:
        k = nn.functional.pad(K[0], (0, L)) + nn.functional.pad(K[1].flip(-1), (L, 0))
    elif K.shape[0] == 1:
        k = K[0]
    else:
        raise ValueError(f"kernel has {K.shape[0]} channels; expected 1 (causal) or 2 (two-sided)")
    n = lk + L
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k.to(u.dtype), n=n), n=n)[..., :L]
    return y + u * D.reshape(-1).unsqueeze(-1).to(u.dtype)


class DPLRKernel(nn.Module):
    """Holds the kernel tensors under their official names; ``forward(L)`` -> K (ch,H,L)."""

    def __init__(self, H: int, N: int, channels: int = 1, n_ssm: int = 1, dt_min: float = 0.001,
                 dt_max: float = 0.1, l_max: int = 0):
        super().__init__()
        self.l_max = int(l_max)
        init = init_dplr_params(H, N, channels, n_ssm, dt_min, dt_max, l_kernel=self.l_max)
        for name in PARAM_NAMES:
            self.register_parameter(name, nn.Parameter(init[name]))
        self.register_buffer("l_kernel", init["l_kernel"])

    def params(self) -> dict:
        d = {n: getattr(self, n) for n in PARAM_NAMES}
        d["l_kernel"] = self.l_kernel
        return d

    @torch.no_grad()
    def _setup_C(self, L: int) -> None:
        """The official in-place C -> C~ conversion: first use (l_kernel 0 -> L), or doubling."""
        lk = int(self.l_kernel)
        new = L if lk == 0 else 2 * lk
        C = convert_C({n: t.detach() for n, t in self.params().items()}, lk, new)
        self.C.copy_(C.to(self.C.dtype))
        self.l_kernel.fill_(new)

    def forward(self, L: int) -> Tensor:
        """Kernel (ch, H, L) in float64 (official algorithm).  Like the official forward, converts
        C in place on first use (l_kernel == 0) and doubles l_kernel while L exceeds it."""
        if int(self.l_kernel) == 0:
            self._setup_C(self.l_max if self.l_max > 0 else L)
        while L > int(self.l_kernel):
            self._setup_C(2 * int(self.l_kernel))
        return dplr_kernel_woodbury(self.params(), L)
