"""Tests of the P-SpikeSSM reference: DPLR kernel, official key layout, sampler, block semantics,
checkpoints and the training command.

The references here are written from the equations (documented in models/dplr_kernel.py and
models/pspikessm.py, taken from the authors' code), independently of the module's algorithms:
a float64 step-by-step recurrence on the full complex 2n-dimensional state for the SSM, and a
float64 block written op by op.
"""
import math
import os

import numpy as np
import pytest
import torch

from neurocompile.models.checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from neurocompile.models.dplr_kernel import (DPLRKernel, dplr_kernel_woodbury, fft_conv, hippo_legs_dplr,
                                             init_dplr_params, materialize_dplr_kernel)
from neurocompile.models.pspikessm import PSpikeSSM, PSpikeSSMConfig, spike_sample

torch.set_num_threads(2)


# ------------------------------------------------------------------------ independent recurrence
def _random_kernel_params(H=4, N=8, ch=2, n_ssm=1, l_kernel=40, seed=0, scale=0.2):
    """Official initialisation, then every tensor perturbed so nothing relies on the init's structure."""
    g = torch.Generator().manual_seed(seed)
    p = init_dplr_params(H, N, ch, n_ssm, l_kernel=l_kernel, generator=g)
    out = {}
    for k, v in p.items():
        if k == "l_kernel":
            out[k] = v
        else:
            v = v.double()
            out[k] = v + scale * v.abs().mean() * torch.randn(v.shape, generator=g, dtype=torch.float64)
    return out


def _full_system(p):
    """Per channel h: (dA (H,2n,2n), dB (H,2n), C_true (ch,H,2n)) complex128 on the full state
    [h, conj h], from the equations: A = diag(Lambda) - P P^*, bilinear, C = (I - dA^l)^-T C~."""
    H = p["inv_dt"].shape[0]
    dt = torch.log1p(torch.exp(p["inv_dt"][:, 0]))                        # softplus
    lam = -torch.exp(p["A_real"]) - 1j * p["A_imag"]                       # (S, n)
    Bc = torch.view_as_complex(p["B"].contiguous())[0]
    Pc = torch.view_as_complex(p["P"].contiguous())[0, :]
    Ct = torch.view_as_complex(p["C"].contiguous())                        # (ch, H, n)
    S, n = lam.shape
    dAs, dBs = [], []
    for h in range(H):
        s = h % S
        Lf = torch.cat([lam[s], lam[s].conj()])
        pf = torch.cat([Pc[s], Pc[s].conj()])
        A = torch.diag(Lf) - torch.outer(pf, pf.conj())
        B = torch.cat([Bc[s], Bc[s].conj()])
        I = torch.eye(2 * n, dtype=torch.complex128)
        back = I - dt[h] / 2 * A
        dAs.append(torch.linalg.solve(back, I + dt[h] / 2 * A))
        dBs.append(dt[h] * torch.linalg.solve(back, B))
    dA, dB = torch.stack(dAs), torch.stack(dBs)
    Cf = torch.cat([Ct, Ct.conj()], -1)                                   # (ch, H, 2n)
    lk = int(p["l_kernel"])
    if lk > 0:
        I = torch.eye(2 * n, dtype=torch.complex128)
        M = I - torch.linalg.matrix_power(dA, lk)
        Cf = torch.stack([torch.linalg.solve(M[h].T, Cf[:, h].T).T for h in range(H)], 1)
    return dA, dB, Cf


def _run(dA, dB, C, u):
    """y[t] = Re(C . h[t]), h[t] = dA h[t-1] + dB u[t], step by step.  u (B,H,L) -> (B,H,L)."""
    Bn, H, L = u.shape
    h = torch.zeros(Bn, H, dA.shape[-1], dtype=torch.complex128)
    ys = []
    for t in range(L):
        h = torch.einsum("hmn,bhn->bhm", dA, h) + dB * u[:, :, t, None]
        ys.append((C * h).sum(-1).real)
    return torch.stack(ys, -1)


def _ssm_reference(p, D, u):
    """SSM output + D u in the official two-sided convention, by recurrences only:
    forward channel on u; reverse channel run on the time-reversed input and shifted by one, so
    y[t] gets sum_{s>t} K1[s-t-1] u[s] (the official anti-causal half does not see u[t])."""
    dA, dB, C = _full_system(p)
    y = _run(dA, dB, C[0], u)
    if C.shape[0] == 2:
        g = _run(dA, dB, C[1], u.flip(-1))                                # g[tau] over u[L-1-tau]
        rev = torch.zeros_like(y)
        rev[..., :-1] = g[..., :-1].flip(-1)                              # y1[t] = g[L-2-t]
        y = y + rev
    return y + D.reshape(-1)[:, None] * u


def _kernel_reference(p, L):
    H = p["inv_dt"].shape[0]
    dA, dB, C = _full_system(p)
    imp = torch.zeros(1, H, L, dtype=torch.float64)
    imp[..., 0] = 1
    return torch.stack([_run(dA, dB, C[c], imp)[0] for c in range(C.shape[0])])


def _rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("H, N, ch, n_ssm, l_kernel, L", [
    (4, 8, 2, 1, 40, 40),       # shared A/B/P, two-sided, C~ attuned to L
    (6, 16, 1, 3, 64, 50),      # n_ssm copies broadcast over channels, causal, L < l_kernel
    (3, 8, 2, 3, 0, 30),        # l_kernel 0: C is the true C (a never-run official layer)
    (2, 32, 2, 1, 64, 64),
])
def test_kernel_matches_recurrence(H, N, ch, n_ssm, l_kernel, L):
    p = _random_kernel_params(H, N, ch, n_ssm, l_kernel, seed=H + N)
    ref = _kernel_reference(p, L)
    K = materialize_dplr_kernel(p, L)
    assert K.shape == (ch, H, L) and K.dtype == torch.float64
    assert _rel(K, ref) <= 1e-9
    if l_kernel >= L:              # the official algorithm (Cauchy + Woodbury, the training forward)
        assert _rel(dplr_kernel_woodbury(p, L), ref) <= 1e-9
    u = torch.randn(2, H, L, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    D = torch.randn(1, H, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert _rel(fft_conv(u, K, D), _ssm_reference(p, D, u)) <= 1e-9


def test_kernel_init_is_hippo_legs():
    # LegS A is lower triangular with diagonal -(i+1): the DPLR form must have eigenvalues -1..-N
    # (up to the float32 rounding of the stored parameters, amplified by the non-normal matrix).
    for N in (4, 8):
        p = {k: v.double() if k != "l_kernel" else v for k, v in init_dplr_params(1, N, 1, 1).items()}
        lam = -torch.exp(p["A_real"][0]) - 1j * p["A_imag"][0]
        P = torch.view_as_complex(p["P"].contiguous())[0, 0]
        Lf, pf = torch.cat([lam, lam.conj()]), torch.cat([P, P.conj()])
        ev = torch.linalg.eigvals(torch.diag(Lf) - torch.outer(pf, pf.conj()))
        assert torch.allclose(torch.sort(ev.real).values, -torch.arange(N, 0, -1, dtype=torch.float64), rtol=5e-3)
        assert ev.imag.abs().max() < 1e-6
    lam, P, B = hippo_legs_dplr(16)
    assert torch.allclose(lam.real, torch.full((8,), -0.5, dtype=torch.float64))
    assert (lam.imag < 0).all() and (torch.diff(lam.imag) > 0).all()       # ascending, negative half kept
    assert B.imag.abs().max() <= 2.0                                         # B_clip
    p = init_dplr_params(5, 8, 2, 1, l_kernel=32)
    assert {k: tuple(v.shape) for k, v in p.items()} == {
        "inv_dt": (5, 1), "C": (2, 5, 4, 2), "B": (1, 1, 4, 2), "A_real": (1, 4), "A_imag": (1, 4),
        "P": (1, 1, 4, 2), "l_kernel": ()}
    dt = torch.nn.functional.softplus(p["inv_dt"])
    assert (dt >= 0.001 - 1e-6).all() and (dt <= 0.1 + 1e-6).all()
    assert int(p["l_kernel"]) == 32 and p["l_kernel"].dtype == torch.int64


def test_c_tilde_conversion_keeps_the_kernel():
    """Stored C~ (l_kernel L) and the true C (l_kernel 0) describe the same kernel; the module
    converts a never-run layer in place (official _setup_C) and doubles l_kernel for longer L."""
    torch.manual_seed(3)
    k = DPLRKernel(3, 8, channels=2, n_ssm=1, l_max=16)
    with torch.no_grad():
        k.l_kernel.fill_(0)                                               # pretend: fresh official layer
        C_true = k.C.detach().double().clone()
    ref = materialize_dplr_kernel({n: t.detach().double() if n != "l_kernel" else t for n, t in k.params().items()}, 16)
    K = k(16)
    assert int(k.l_kernel) == 16 and not torch.equal(k.C.detach().double(), C_true)
    assert _rel(K, ref) < 1e-6                                            # C~ stored in float32
    K40 = k(40)                                                           # 16 -> 32 -> 64
    assert int(k.l_kernel) == 64
    p = {n: t.detach().double() if n != "l_kernel" else t for n, t in k.params().items()}
    assert _rel(K40, materialize_dplr_kernel(p, 40)) <= 1e-9
    assert _rel(K40[..., :16], ref) < 1e-5


def test_fft_conv_follows_the_official_layout():
    """fft_conv restated as the official FFTConv builds it: k = pad(k0, (0, L)) + pad(flip(k1), (L, 0)),
    circular convolution of length lk + L, first L outputs; also with lk < L (sequence longer than l_max)."""
    g = torch.Generator().manual_seed(4)
    for L, lk in ((12, 12), (12, 7)):
        u = torch.randn(2, 3, L, dtype=torch.float64, generator=g)
        K = torch.randn(2, 3, lk, dtype=torch.float64, generator=g)
        D = torch.randn(1, 3, dtype=torch.float64, generator=g)
        n = lk + L
        kfull = torch.zeros(3, n, dtype=torch.float64)
        kfull[:, :lk] += K[0]
        kfull[:, L:] += K[1].flip(-1)
        ref = torch.zeros_like(u)
        for t in range(L):
            for s in range(L):
                ref[..., t] += kfull[:, (t - s) % n] * u[..., s]
        ref += D[0, :, None] * u
        assert torch.allclose(fft_conv(u, K, D), ref, atol=1e-12)
        # the same thing in words: causal taps t-s in [0, lk), anti-causal s-t in [1, lk] with K1[s-t-1]
        ref2 = D[0, :, None] * u
        for t in range(L):
            for s in range(L):
                if 0 <= t - s < lk:
                    ref2[..., t] += K[0, :, t - s] * u[..., s]
                if 1 <= s - t <= lk:
                    ref2[..., t] += K[1, :, s - t - 1] * u[..., s]
        assert torch.allclose(ref, ref2, atol=1e-12)
        y1 = fft_conv(u, K[:1], D)                                        # causal: future does not matter
        u2 = u.clone()
        u2[..., 6:] = 0
        assert torch.allclose(fft_conv(u2, K[:1], D)[..., :6], y1[..., :6], atol=1e-12)


# ------------------------------------------------------------------------------- key layout
def _official_keys(cfg: PSpikeSSMConfig) -> dict:
    """The official Lightning state_dict keys and shapes for this config (written from the authors'
    SequenceModel / SequenceResidualBlock / S4Block / FFTConv / SSMKernelDPLR / SequenceDecoder)."""
    H, n, S, ch = cfg.d_model, cfg.d_state // 2, cfg.n_ssm, cfg.channels
    keys = {"encoder.0.weight": (H, cfg.d_input) if cfg.encoder == "linear" else (cfg.n_tokens, H)}
    if cfg.encoder == "linear":
        keys["encoder.0.bias"] = (H,)

    def s4(prefix):
        return {f"{prefix}.layer.D": (1, H), f"{prefix}.layer.kernel.inv_dt": (H, 1),
                f"{prefix}.layer.kernel.C": (ch, H, n, 2), f"{prefix}.layer.kernel.B": (1, S, n, 2),
                f"{prefix}.layer.kernel.A_real": (S, n), f"{prefix}.layer.kernel.A_imag": (S, n),
                f"{prefix}.layer.kernel.P": (1, S, n, 2), f"{prefix}.layer.kernel.l_kernel": (),
                f"{prefix}.output_linear.0.weight": (2 * H, H), f"{prefix}.output_linear.0.bias": (2 * H,)}

    def norm(prefix):
        if cfg.norm == "batch":
            return {f"{prefix}.norm.weight": (H,), f"{prefix}.norm.bias": (H,), f"{prefix}.norm.running_mean": (H,),
                    f"{prefix}.norm.running_var": (H,), f"{prefix}.norm.num_batches_tracked": ()}
        if cfg.norm == "layer":
            return {f"{prefix}.norm.weight": (H,), f"{prefix}.norm.bias": (H,)}
        return {}

    for i in range(cfg.n_layers):
        b = f"model.layers.{i}"
        keys.update({f"{b}.{k}": (H,) for k in ("inp_b", "inp_a", "inp2_b", "inp2_a", "out_b", "out_a")})
        keys.update(s4(f"{b}.layer"))
        if cfg.bidirectional:
            keys.update(s4(f"{b}.reverse_layer"))
            keys.update({f"{b}.bidirectional_linear.weight": (H, 2 * H), f"{b}.bidirectional_linear.bias": (H,),
                         f"{b}.bidirectional_linear1.weight": (H // 2, H), f"{b}.bidirectional_linear1.bias": (H // 2,),
                         f"{b}.bidirectional_linear2.weight": (H // 2, H), f"{b}.bidirectional_linear2.bias": (H // 2,)})
        else:
            keys.update({f"{b}.bidirectional_linear1.weight": (H, H), f"{b}.bidirectional_linear1.bias": (H,)})
        keys.update(norm(f"{b}.norm"))
    if cfg.prenorm:
        keys.update(norm("model.norm"))
    keys.update({"decoder.0.output_transform.weight": (cfg.d_output, H), "decoder.0.output_transform.bias": (cfg.d_output,)})
    return keys


def _rename(key: str) -> str:
    for old, new in (("model.", "backbone."), ("encoder.0.", "encoder."), ("decoder.0.output_transform.", "decoder.")):
        if key.startswith(old):
            return new + key[len(old):]
    raise AssertionError(key)


def _cfg(**kw):
    base = dict(d_model=8, n_layers=2, d_state=8, l_max=24)
    base.update(kw)
    return PSpikeSSMConfig(**base)


@pytest.mark.parametrize("kw", [
    {}, {"bidirectional": True}, {"prenorm": True}, {"prenorm": True, "bidirectional": True, "norm": "layer"},
    {"norm": "none", "prenorm": True, "residual": False}, {"ssm_bidirectional": False, "n_ssm": 8, "d_model": 8},
    {"encoder": "embedding", "n_tokens": 11, "d_model": 6, "bidirectional": True},
])
def test_state_dict_matches_official_layout(kw):
    cfg = _cfg(**kw)
    m = PSpikeSSM(cfg)
    official = _official_keys(cfg)
    ours = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert ours == {_rename(k): v for k, v in official.items()}
    # an official state_dict (renamed) loads strictly, l_kernel 0 included (a layer never run)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in official.items():
        if k.endswith("l_kernel") or k.endswith("num_batches_tracked"):
            sd[_rename(k)] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[_rename(k)] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[_rename(k)] = torch.randn(shape, generator=g) * 0.3
    m.load_state_dict(sd, strict=True)
    x = torch.randint(0, 11, (2, 24)) if cfg.encoder == "embedding" else torch.rand(2, 24, 1)
    assert m.eval()(x).shape == (2, 10)
    assert all(int(b) == 24 for n, b in m.named_buffers() if n.endswith("l_kernel"))   # converted on first use


# ---------------------------------------------------------------------------------- sampler
def test_spike_sampler_forward_and_backward():
    p = torch.tensor([-0.5, 0.0, 0.2, 0.5, 0.7, 1.0, 1.5], requires_grad=True)
    u = torch.tensor([0.3, 0.0, 0.1, 0.5, 0.9, 0.99, 0.2])
    s = spike_sample(p, u)
    assert s.tolist() == [0, 0, 1, 0, 0, 1, 1]                # strictly p > u
    assert s.dtype == p.dtype
    w = torch.arange(1.0, 8.0)
    (s * w).sum().backward()
    q = p.detach().clone().requires_grad_(True)
    (torch.clamp(q, 0, 1) * w).sum().backward()
    assert torch.equal(p.grad, q.grad)                        # gradient of clamp(p, 0, 1)
    assert p.grad[[0, 6]].tolist() == [0.0, 0.0] and p.grad[[2, 3, 4]].tolist() == [3.0, 4.0, 5.0]


# ------------------------------------------------------------------- block, record, reference
def _uniforms(seed, store=None):
    g = torch.Generator().manual_seed(seed)
    cache = {}

    def fn(layer, which, shape):
        key = (layer, which)
        if key not in cache:
            cache[key] = torch.rand(shape, generator=g, dtype=torch.float64)
        if store is not None:
            store[key] = cache[key]
        return cache[key]
    return fn


def _randomise(m, seed=0):
    """Spread every affine/norm parameter so spikes are neither all 0 nor all 1 and norms matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(("inp_a", "inp2_a", "out_a")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith(("inp_b", "inp2_b", "out_b")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g) + 0.3)
            elif ".norm." in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g) if name.endswith("weight") else 0.3 * torch.randn(p.shape, generator=g) + 0.4)
        for name, b in m.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


def _gelu(x):
    return 0.5 * x * (1.0 + torch.special.erf(x / math.sqrt(2.0)))


def _norm_ref(cfg, sd, prefix, x):
    if cfg.norm == "batch":
        rm, rv = sd[f"{prefix}.norm.running_mean"][:, None], sd[f"{prefix}.norm.running_var"][:, None]
        return (x - rm) / torch.sqrt(rv + 1e-5) * sd[f"{prefix}.norm.weight"][:, None] + sd[f"{prefix}.norm.bias"][:, None]
    if cfg.norm == "layer":
        mu = x.mean(1, keepdim=True)
        var = ((x - mu) ** 2).mean(1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * sd[f"{prefix}.norm.weight"][:, None] + sd[f"{prefix}.norm.bias"][:, None]
    return x


def _s4_ref(sd, prefix, u):
    """official S4Block output: GELU(SSM(u) + D u), by recurrences."""
    p = {k: sd[f"{prefix}.layer.kernel.{k}"] for k in ("inv_dt", "C", "B", "A_real", "A_imag", "P", "l_kernel")}
    return _gelu(_ssm_reference(p, sd[f"{prefix}.layer.D"], u))


def _block_ref(cfg, sd, i, x, u1, u2):
    """One block from the documented equations, float64."""
    b = f"backbone.layers.{i}"
    col = lambda k: sd[f"{b}.{k}"][:, None]                                   # noqa: E731
    lin = lambda k, s: _gelu(torch.einsum("oc,bcl->bol", sd[f"{b}.{k}.weight"], s) + sd[f"{b}.{k}.bias"][:, None])  # noqa: E731
    p_in = col("inp_a") * x + col("inp_b")
    if cfg.prenorm:
        p_in = _norm_ref(cfg, sd, f"{b}.norm", p_in)
    s_in = (p_in > u1).double()
    p_ssm = col("out_a") * _s4_ref(sd, f"{b}.layer", s_in) + col("out_b")
    if cfg.bidirectional:
        s_rev_in = (col("inp2_a") * x + col("inp2_b") > u2).double()
        p_rev = _s4_ref(sd, f"{b}.reverse_layer", s_rev_in)
        y = lin("bidirectional_linear", torch.cat([(p_ssm > u1).double(), (p_rev > u1).double()], 1))
    else:
        y = lin("bidirectional_linear1", (p_ssm > u2).double())
    if cfg.residual:
        y = x + y
    if not cfg.prenorm:
        y = _norm_ref(cfg, sd, f"{b}.norm", y)
    return y


BLOCK_CASES = [
    dict(),                                                     # postnorm batch, residual, unidirectional
    dict(bidirectional=True),
    dict(prenorm=True, residual=False),                         # official pSpikeSSM-mnist
    dict(prenorm=True, bidirectional=True),                     # official aan / imdb
    dict(norm="layer", bidirectional=True, residual=False),
    dict(norm="none", ssm_bidirectional=False, n_ssm=8),
]


@pytest.mark.parametrize("kw", BLOCK_CASES)
def test_model_matches_float64_reference(kw):
    torch.manual_seed(1)
    cfg = _cfg(**kw)
    m = PSpikeSSM(cfg).double().eval()
    _randomise(m)
    sd = {k: v.detach() for k, v in m.state_dict().items()}
    x = torch.rand(3, 24, 1, dtype=torch.float64)
    used = {}
    logits, rec = m(x, record=True, uniforms=_uniforms(7, used))
    h = torch.einsum("hd,bld->bhl", sd["encoder.weight"], x) + sd["encoder.bias"][:, None]
    assert torch.allclose(rec["stream_in"], h, atol=1e-12)
    n_spikes = 0
    for i in range(cfg.n_layers):
        h = _block_ref(cfg, sd, i, h, used[(i, 1)], used[(i, 2)])
        assert _rel(rec[f"layer{i}.stream"], h) < 1e-9, i
        n_spikes += float(rec[f"layer{i}.s_in"].detach().mean())
    if cfg.prenorm:
        h = _norm_ref(cfg, sd, "backbone.norm", h)
    ref = torch.einsum("oh,bh->bo", sd["decoder.weight"], h.mean(-1)) + sd["decoder.bias"]
    assert _rel(logits, ref) < 1e-9
    assert 0.05 < n_spikes / cfg.n_layers < 0.95                # the reference exercised both spike values


@pytest.mark.parametrize("kw", [dict(), dict(bidirectional=True, prenorm=True)])
def test_record_is_consistent(kw):
    torch.manual_seed(2)
    cfg = _cfg(**kw)
    m = PSpikeSSM(cfg).eval()
    _randomise(m, 3)
    x = torch.rand(2, 24, 1)
    used = {}
    logits, rec = m(x, record=True, uniforms=_uniforms(5, used))
    with torch.no_grad():
        x_prev = rec["stream_in"]
        for i, blk in enumerate(m.backbone.layers):
            r = {k.split(".", 1)[1]: v for k, v in rec.items() if k.startswith(f"layer{i}.")}
            u1, u2 = used[(i, 1)].float(), used[(i, 2)].float()
            assert torch.equal(r["u1"], u1) and torch.equal(r["u2"], u2)
            assert set(r) >= {"p_in", "s_in", "p_ssm", "s_ssm", "stream"}
            assert all(v.shape == (2, 8, 24) for v in r.values())
            assert torch.equal(r["s_in"], (r["p_in"] > u1).float())
            p_in = blk.inp_a[:, None] * x_prev + blk.inp_b[:, None]
            if cfg.prenorm:
                p_in = blk.norm(p_in)
            assert torch.allclose(r["p_in"], p_in, atol=1e-6)
            K = blk.layer.layer.kernel(24).float()
            ssm = torch.nn.functional.gelu(fft_conv(r["s_in"], K, blk.layer.layer.D))
            assert torch.allclose(r["p_ssm"], blk.out_a[:, None] * ssm + blk.out_b[:, None], atol=1e-5)
            mix = lambda lin, s: torch.nn.functional.gelu(torch.einsum("oc,bcl->bol", lin.weight, s) + lin.bias[:, None])  # noqa: E731
            if cfg.bidirectional:
                assert torch.equal(r["s_ssm"], (r["p_ssm"] > u1).float())
                assert torch.equal(r["s_in_rev"], (r["p_in_rev"] > u2).float())
                assert torch.allclose(r["p_in_rev"], blk.inp2_a[:, None] * x_prev + blk.inp2_b[:, None], atol=1e-6)
                Kr = blk.reverse_layer.layer.kernel(24).float()
                assert torch.allclose(r["p_ssm_rev"], torch.nn.functional.gelu(fft_conv(r["s_in_rev"], Kr, blk.reverse_layer.layer.D)), atol=1e-5)
                assert torch.equal(r["s_ssm_rev"], (r["p_ssm_rev"] > u1).float())
                y = mix(blk.bidirectional_linear, torch.cat([r["s_ssm"], r["s_ssm_rev"]], 1))
            else:
                assert torch.equal(r["s_ssm"], (r["p_ssm"] > u2).float())
                y = mix(blk.bidirectional_linear1, r["s_ssm"])
            y = x_prev + y
            if not cfg.prenorm:
                y = blk.norm(y)
            assert torch.allclose(r["stream"], y, atol=1e-5)
            x_prev = r["stream"]
        out = m.backbone.norm(x_prev) if cfg.prenorm else x_prev
        assert torch.allclose(rec["stream_out"], out)
        assert torch.allclose(logits, m.decoder(out.mean(-1)), atol=1e-6)


def test_sampling_is_random_in_eval_and_reproducible_with_uniforms():
    torch.manual_seed(0)
    m = PSpikeSSM(_cfg(bidirectional=True)).eval()
    x = torch.rand(4, 24, 1)
    assert not torch.equal(m(x), m(x))                        # no eval switch: spikes resampled
    assert torch.equal(m(x, uniforms=_uniforms(3)), m(x, uniforms=_uniforms(3)))
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        m(x, uniforms=lambda layer, which, shape: torch.rand(2, 2))


def test_gradients_reach_every_trained_parameter():
    torch.manual_seed(0)
    m = PSpikeSSM(_cfg(bidirectional=True, prenorm=True)).train()
    _randomise(m)
    m(torch.rand(4, 24, 1)).logsumexp(-1).sum().backward()
    unused = ("output_linear", "bidirectional_linear1", "bidirectional_linear2", "inp2_a", "inp2_b")
    for name, p in m.named_parameters():
        if any(u in name for u in unused[:3]):
            assert p.grad is None, name                       # official: built but never used
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    m2 = PSpikeSSM(_cfg()).train()
    m2(torch.rand(4, 24, 1)).sum().backward()
    assert m2.backbone.layers[0].inp2_a.grad is None          # unidirectional: inp2_* unused
    names = [n for n, _ in m.ssm_parameters()]
    assert "backbone.layers.0.reverse_layer.layer.kernel.A_real" in names
    assert not any(n.endswith((".C", "l_kernel")) for n in names)


def test_config_validation():
    cfg = _cfg()
    assert PSpikeSSMConfig.from_dict(cfg.to_dict()) == cfg
    for bad, field in [({"d_modle": 8}, "d_modle"), ({"d_state": 7}, "d_state"), ({"norm": "group"}, "norm"),
                       ({"n_ssm": 3}, "n_ssm"), ({"residual": 1}, "residual"), ({"dropout": 1.0}, "dropout"),
                       ({"encoder": "embedding"}, "n_tokens"), ({"ssm_bidirectional": "yes"}, "ssm_bidirectional")]:
        with pytest.raises(ValueError, match=field):
            PSpikeSSMConfig.from_dict(dict(cfg.to_dict(), **bad))


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = PSpikeSSM(_cfg(dropout=0.5)).eval()
    x = torch.rand(2, 24, 1)
    assert torch.equal(m(x, uniforms=_uniforms(1)), m(x, uniforms=_uniforms(1)))
    m.train()
    assert not torch.equal(m(x, uniforms=_uniforms(1)), m(x, uniforms=_uniforms(1)))


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = PSpikeSSM(_cfg(bidirectional=True, prenorm=True)).eval()
    _randomise(m)
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, m, {"dataset": "digits", "metrics": {"test_acc_mc": 0.5}})
    kind, cfg, sd, meta = load_checkpoint(path)
    assert kind == "pspikessm" and cfg == m.config and meta["metrics"]["test_acc_mc"] == 0.5
    m2 = build_model(cfg, sd)
    x = torch.rand(2, 24, 1)
    assert torch.equal(m(x, uniforms=_uniforms(4)), m2(x, uniforms=_uniforms(4)))
    assert isinstance(m2, PSpikeSSM) and not m2.training
    obj = torch.load(path, weights_only=True)
    obj["state_dict"].pop("backbone.layers.1.reverse_layer.layer.kernel.P")
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="missing 1 tensor"):
        load_checkpoint(path)


def test_compile_refuses_layernorm_and_handles_causal_kernels(tmp_path):
    """A LayerNorm needs per-step statistics: refused with the reason.  One-sided (causal) kernels
    compile with no added latency beyond one hop per synapse."""
    from neurocompile.errors import UnsupportedModelError
    from neurocompile.pipeline import compile_checkpoint

    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, PSpikeSSM(_cfg(norm="layer")))
    with pytest.raises(UnsupportedModelError, match="postnorm LayerNorm: it needs each step's mean and variance"):
        compile_checkpoint(path)
    save_checkpoint(path, PSpikeSSM(_cfg(ssm_bidirectional=False)))
    program = compile_checkpoint(path)
    assert program.latency == _cfg().n_layers                   # one Dense hop per layer, no two-sided lag


# -------------------------------------------------------------------------------- training
@pytest.mark.parametrize("extra", [[], ["--bidirectional", "--prenorm", "--causal"]])
def test_train_command_pspikessm(tmp_path, extra):
    from neurocompile.models.train import main

    out = str(tmp_path / "run")
    assert main(["--model", "pspikessm", "--dataset", "digits", "--out", out, "--d-model", "8", "--d-state", "4",
                 "--n-layers", "1", "--epochs", "1", "--max-train", "64", "--max-test", "32", "--mc-passes", "3",
                 "--no-progress"] + extra) == 0
    kind, cfg, sd, meta = load_checkpoint(os.path.join(out, "ckpt.pt"))
    assert kind == "pspikessm" and cfg.l_max == 64 and cfg.input_levels == 16 and cfg.d_model == 8
    assert cfg.bidirectional == ("--bidirectional" in extra) and cfg.ssm_bidirectional == ("--causal" not in extra)
    mt = meta["metrics"]
    assert set(mt) >= {"test_acc_mc", "test_acc_mc_std", "test_acc_passes", "train_loss"}
    assert len(mt["test_acc_passes"]) == 3 and abs(np.mean(mt["test_acc_passes"]) - mt["test_acc_mc"]) < 1e-12
    assert mt["test_acc_mc_std"] == pytest.approx(float(np.std(mt["test_acc_passes"], ddof=1)))
    assert 0.0 <= mt["spike_rates"]["layer0.s_in"] <= 1.0
    assert meta["model"] == "pspikessm" and "--mc-passes" in meta["command"]


def test_train_command_rejects_pspike_flags_for_spikingssm(tmp_path, capsys):
    from neurocompile.models.train import main

    with pytest.raises(SystemExit):
        main(["--dataset", "digits", "--out", str(tmp_path / "r"), "--no-residual"])
    assert "applies to --model pspikessm only" in capsys.readouterr().err
