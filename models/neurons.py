"""Target LIF neuron (exact, iterative) and the SDN surrogate dynamics network that imitates it.

LIF per step (tau = per-step retention, hard reset to 0, threshold 1):
    u = tau*u; u = u + y[t]; s = (u >= 1); u = u*(1-s)
SDN: a 153-parameter causal CNN predicting the decayed after-reset membrane m[t] = tau*u[t-1]*(1-s[t-1])
from the input y, in parallel; spikes = surrogate(m + y - 1).
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import Tensor, nn

from ..fileio import write_atomic

WEIGHTS_DIR = os.path.dirname(os.path.abspath(__file__))


def default_weights_path(tau: float = 0.125) -> str:
    return os.path.join(WEIGHTS_DIR, f"sdn_tau{tau:g}.pt")


class _PiecewiseQuadratic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(1.0 - x.abs(), min=0.0)


def spike_fn(x: Tensor) -> Tensor:
    """Heaviside (x >= 0) forward; gradient grad*max(0, 1-|x|) backward."""
    return _PiecewiseQuadratic.apply(x)


def lif_sequence(y: Tensor, tau: float = 0.125, vth: float = 1.0, return_mem: bool = False):
    """Exact iterative LIF over the last axis of y (..., L); differentiable (BPTT, reset detached).

    With ``return_mem`` also returns m[t] = tau*u[t-1]*(1-s[t-1]) (the SDN's target)."""
    u = torch.zeros_like(y[..., 0])
    spikes, mems = [], []
    for t in range(y.shape[-1]):
        u = tau * u
        if return_mem:
            mems.append(u)
        u = u + y[..., t]
        s = spike_fn(u - vth)
        spikes.append(s)
        u = u * (1.0 - s.detach())
    s = torch.stack(spikes, -1)
    return (s, torch.stack(mems, -1)) if return_mem else s


class SDNModel(nn.Module):
    """conv1 (1->8, k=8, pad 8, truncated to L: causal) -> relu -> relu(conv2(h1) + h1) -> conv3 (8->1)."""

    def __init__(self, width: int = 8, kernel_size: int = 8):
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, kernel_size, padding=kernel_size)
        self.conv2 = nn.Conv1d(width, width, 1)
        self.conv3 = nn.Conv1d(width, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x (N,1,L) -> predicted membrane (N,1,L)."""
        h1 = torch.relu(self.conv1(x)[..., : x.shape[-1]])
        h2 = torch.relu(self.conv2(h1) + h1)
        return self.conv3(h2)


def load_sdn_weights(path: str | None = None, tau: float = 0.125) -> dict:
    path = path or default_weights_path(tau)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: not an SDN weights file (expected a dict of tensors)")
    return sd


class SDN(nn.Module):
    """The SDN neuron: frozen ``model`` (state-dict keys ``model.conv{1,2,3}.{weight,bias}``)."""
    ROWS = 64

    def __init__(self, tau: float = 0.125, weights: str | dict | None = "default"):
        super().__init__()
        self.tau = tau
        self.model = SDNModel()
        if weights is not None:
            if isinstance(weights, dict):
                sd = weights
            else:
                path = None if weights == "default" else weights
                if path is None and not os.path.exists(default_weights_path(tau)):
                    sd = None   # no trained SDN for this tau: random weights (a checkpoint load overwrites them)
                else:
                    sd = load_sdn_weights(path, tau)
            if sd is not None:
                self.model.load_state_dict(sd)
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def predict_membrane(self, y: Tensor) -> Tensor:
        """In blocks of ``ROWS`` sequences: the 8-channel activations of a block stay in the CPU's cache
        (4x faster on a (64 x 128 x 1024) batch than one call; each row's result is the same, bit for bit)."""
        shape = y.shape
        rows = y.detach().reshape(-1, 1, shape[-1])
        return torch.cat([self.model(rows[i:i + self.ROWS]) for i in range(0, max(rows.shape[0], 1), self.ROWS)]
                         ).reshape(shape)

    def forward(self, y: Tensor) -> Tensor:
        return spike_fn(self.predict_membrane(y) + y - 1.0)


# ------------------------------------------------------------------------------------ SDN training
def random_inputs(n: int, L: int, generator: torch.Generator) -> Tensor:
    """Random LIF input currents: per sequence N(mu, sigma^2) with mu ~ U[-0.5, 1.0], sigma ~ U[0.1, 1.5]."""
    mu = torch.rand(n, 1, generator=generator) * 1.5 - 0.5
    sigma = torch.rand(n, 1, generator=generator) * 1.4 + 0.1
    return mu + sigma * torch.randn(n, L, generator=generator)


@torch.no_grad()
def sdn_agreement(model: SDNModel, tau: float = 0.125, seed: int = 12345, n: int = 512, L: int = 512) -> float:
    """Fraction of spikes (over n x L cells) on which SDN and exact LIF agree, on held-out random inputs."""
    g = torch.Generator().manual_seed(seed)
    y = random_inputs(n, L, g)
    s_lif = lif_sequence(y, tau)
    mem = model(y.unsqueeze(1)).squeeze(1)
    s_sdn = (mem + y - 1.0 >= 0).float()
    return float((s_lif == s_sdn).float().mean())


def train_sdn(tau: float = 0.125, seed: int = 0, steps: int = 4000, batch: int = 64, L: int = 256,
              lr: float = 3e-3, progress: bool = True) -> SDNModel:
    """Train an SDNModel (MSE on exact-LIF membranes of random inputs); deterministic given the seed."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SDNModel()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="SDN", unit="step")
    for step in it:
        y = random_inputs(batch, L, g)
        with torch.no_grad():
            _, mem = lif_sequence(y, tau, return_mem=True)
        loss = nn.functional.mse_loss(model(y.unsqueeze(1)).squeeze(1), mem)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress and step % 100 == 0:
            it.set_postfix(loss=f"{loss.item():.2e}")
    return model.eval()


def save_sdn_weights(model: SDNModel, path: str) -> None:
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    write_atomic(path, lambda fh: torch.save(sd, fh))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Train the frozen SDN neuron weights on exact-LIF targets.")
    p.add_argument("--tau", type=float, default=0.125)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = train_sdn(a.tau, a.seed, a.steps, a.batch, a.length, a.lr)
    out = a.out or default_weights_path(a.tau)
    save_sdn_weights(model, out)
    print(f"wrote {out}; spike agreement vs exact LIF on held-out inputs: {100 * sdn_agreement(model, a.tau):.3f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
