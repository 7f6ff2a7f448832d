"""The float SpikingSSM against an independent float64 step-by-step oracle, for every variant.

The oracle below is written from the documented equations (shared/docs/reference-models.md), not
by calling the code under test: each SSM mode is a complex recurrence h[t] = dA h[t-1] + dB u[t]
(zero-order hold), the backward half of a two-sided kernel is the same recurrence run from the end
of the sequence (it does not see u[t]), BatchNorm uses its running statistics, and the LIF is the
iterative one.  Spikes must be identical and logits equal to 1e-9 relative, in float64.
"""
import numpy as np
import pytest
import torch

from neurocompile.models.config import SpikingSSMConfig
from neurocompile.models.spikingssm import SpikingSSM

VARIANTS = {
    "causal_s4d": dict(),
    "bidirectional": dict(bidirectional=True),
    "trainable_b": dict(kernel="diag_b", bidirectional=True),
    "prenorm_batchnorm": dict(prenorm=True, norm="batch", bidirectional=True),
    "embedding": dict(encoder="embedding", n_tokens=7, kernel="diag_b", bidirectional=True, shared_vth=True),
    "shared_vth": dict(shared_vth=True),
    "fixed_vth": dict(learnable_vth=False),
}


def trained_looking(cfg: SpikingSSMConfig, seed: int, encoder_gain: float = 2.0) -> SpikingSSM:
    """A model with trained-looking parameters (not the init's symmetric ones) and BatchNorm
    statistics, in eval mode."""
    torch.manual_seed(seed)
    model = SpikingSSM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_vth", ".D", "output_linear.0.bias", "log_A_real", "A_real", "B")):
                p.add_(0.3 * torch.randn_like(p))
        for norm in model.backbone.norms:
            if hasattr(norm, "running_mean"):
                norm.running_mean.normal_(0, 0.3)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0, 0.3)
        model.encoder.weight.mul_(encoder_gain)
    return model


def _c(t):
    return t.detach().double().numpy()


def oracle_forward(sd: dict, cfg: SpikingSSMConfig, x: np.ndarray):
    """(logits (B, d_out), [spikes (B, H, L) per layer]) from the state dict alone."""
    sd = {k: _c(v) for k, v in sd.items()}
    H, L = cfg.d_model, cfg.l_max
    if cfg.encoder == "embedding":
        h = sd["encoder.weight"][x.astype(int)]                          # (B, L, H)
    else:
        h = x @ sd["encoder.weight"].T + sd["encoder.bias"]
    h = h.transpose(0, 2, 1)                                              # (B, H, L)
    spikes_all = []
    for i in range(cfg.n_layers):
        p = f"backbone.s4_layers.{i}."
        u = h
        if cfg.prenorm:
            n = f"backbone.norms.{i}."
            u = (h - sd[n + "running_mean"][:, None]) / np.sqrt(sd[n + "running_var"][:, None] + 1e-5)
            u = u * sd[n + "weight"][:, None] + sd[n + "bias"][:, None]
        C = sd[p + "kernel.C"][..., 0] + 1j * sd[p + "kernel.C"][..., 1]           # (ch, H, N/2)
        if cfg.kernel == "s4d":
            A = -np.exp(sd[p + "kernel.log_A_real"]) + 1j * sd[p + "kernel.A_imag"]
            dt = np.exp(sd[p + "kernel.log_dt"])
            B = np.ones_like(A)
        else:
            A = -np.exp(sd[p + "kernel.A_real"]) - 1j * sd[p + "kernel.A_imag"]
            dt = np.exp(sd[p + "kernel.inv_dt"][:, 0])
            B = sd[p + "kernel.B"][0, ..., 0] + 1j * sd[p + "kernel.B"][0, ..., 1]
        dA = np.exp(A * dt[:, None])
        dB = (dA - 1) / A * B
        y = np.zeros_like(u)
        state = np.zeros(u.shape[:2] + A.shape[1:], complex)             # (B, H, N/2)
        for t in range(L):                                               # forward: sees u[0..t]
            state = dA * state + dB * u[:, :, t, None]
            y[:, :, t] = 2 * (C[0] * state).sum(-1).real
        if cfg.bidirectional:                                            # backward: sees u[t+1..L-1]
            state = np.zeros_like(state)
            for t in range(L - 2, -1, -1):
                state = dA * state + dB * u[:, :, t + 1, None]
                y[:, :, t] += 2 * (C[1] * state).sum(-1).real
        y = y + sd[p + "D"].reshape(H)[:, None] * u
        if cfg.learnable_vth:
            y = y / np.exp(sd[p + "ln_vth"].reshape(-1))[:, None] * np.ones((H, 1))
        mem = np.zeros(y.shape[:2])
        s = np.zeros_like(y)
        for t in range(L):
            mem = cfg.tau * mem + y[:, :, t]
            s[:, :, t] = mem >= 1.0
            mem = mem * (1 - s[:, :, t])
        z = np.einsum("oh,bhl->bol", sd[p + "output_linear.0.weight"][..., 0], s) + sd[p + "output_linear.0.bias"][:, None]
        h = h + z[:, :H] / (1 + np.exp(-z[:, H:]))
        spikes_all.append(s.astype(bool))
    logits = h.mean(-1) @ sd["decoder.weight"].T + sd["decoder.bias"]
    return logits, spikes_all


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float_model_equals_independent_float64_oracle(variant):
    cfg = SpikingSSMConfig(d_model=12, n_layers=2, d_state=8, l_max=40, **VARIANTS[variant])
    model = trained_looking(cfg, seed=sum(map(ord, variant)), encoder_gain=6.0).double()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 7, (6, 40)) if cfg.encoder == "embedding" else rng.random((6, 40, 1))
    with torch.no_grad():
        logits, rec = model(torch.as_tensor(x), neuron="lif", record=True)
    want_logits, want_spikes = oracle_forward(model.state_dict(), cfg, x)
    for got, want in zip(rec["spikes"], want_spikes):
        assert 0.02 < want.mean() < 0.7                                 # real activity
        assert np.array_equal(got.numpy().astype(bool), want)
    np.testing.assert_allclose(logits.detach().numpy(), want_logits, rtol=1e-9, atol=1e-12)
