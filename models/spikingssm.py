"""Reference SpikingSSM (Shen et al., AAAI 2025) with the official state-dict layout.

Keys: encoder.*, backbone.s4_layers.{i}.{D, ln_vth, kernel.*, neuron.model.conv{1,2,3}.*,
output_linear.0.{weight,bias}}, backbone.norms.{i}.*, decoder.*.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import SpikingSSMConfig, build_encoder, encode
from .neurons import SDN, lif_sequence
from .ssm_kernel import SSMKernel, ssm_convolution


class TiedDropout(nn.Module):
    """Dropout with one mask per (batch, channel), tied over time (as the official DropoutNd)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = (torch.rand(x.shape[:-1] + (1,), device=x.device) >= self.p).to(x.dtype)
        return x * mask / (1.0 - self.p)


class SpikingS4DLayer(nn.Module):
    def __init__(self, cfg: SpikingSSMConfig):
        super().__init__()
        H = cfg.d_model
        self.cfg = cfg
        self.D = nn.Parameter(torch.randn(1, H))
        if cfg.learnable_vth:
            self.ln_vth = nn.Parameter(torch.zeros(1) if cfg.shared_vth else torch.zeros(H, 1))
        self.kernel = SSMKernel(cfg.kernel, H, cfg.d_state, cfg.channels, cfg.dt_min, cfg.dt_max)
        self.neuron = SDN(cfg.tau)
        self.dropout = TiedDropout(cfg.dropout)
        self.output_linear = nn.Sequential(nn.Conv1d(H, 2 * H, kernel_size=1), nn.GLU(dim=-2))

    def lif_input(self, u: Tensor) -> Tensor:
        """u (B,H,L) -> LIF input current y = (K*u + D u) / exp(ln_vth)."""
        K = self.kernel(u.shape[-1], dtype=u.dtype)
        y = ssm_convolution(u, K, self.D)
        if self.cfg.learnable_vth:
            y = y / torch.exp(self.ln_vth)
        return y

    def forward(self, u: Tensor, neuron: str = "sdn"):
        """Returns (mixer output (B,H,L), LIF input (B,H,L), spikes (B,H,L))."""
        y = self.lif_input(u)
        if neuron == "sdn":
            s = self.neuron(y)
        elif neuron == "lif":
            s = lif_sequence(y, self.cfg.tau)
        else:
            raise ValueError(f"neuron must be 'sdn' or 'lif', got {neuron!r}")
        return self.output_linear(self.dropout(s)), y, s


class SpikingSSMBackbone(nn.Module):
    def __init__(self, cfg: SpikingSSMConfig):
        super().__init__()
        self.cfg = cfg
        self.s4_layers = nn.ModuleList(SpikingS4DLayer(cfg) for _ in range(cfg.n_layers))
        self.norms = nn.ModuleList((nn.LayerNorm(cfg.d_model) if cfg.norm == "layer" else nn.BatchNorm1d(cfg.d_model))
                                   for _ in range(cfg.n_layers))
        self.dropouts = nn.ModuleList(TiedDropout(cfg.dropout) for _ in range(cfg.n_layers))

    def _norm(self, norm: nn.Module, z: Tensor) -> Tensor:
        return norm(z) if self.cfg.norm == "batch" else norm(z.transpose(-1, -2)).transpose(-1, -2)

    def forward(self, x: Tensor, neuron: str = "sdn", rec: dict | None = None) -> Tensor:
        """x (B,H,L) residual stream -> (B,H,L)."""
        for layer, norm, dropout in zip(self.s4_layers, self.norms, self.dropouts):
            z = self._norm(norm, x) if self.cfg.prenorm else x
            z, y, s = layer(z, neuron=neuron)
            x = x + dropout(z)
            # Postnorm (prenorm=False): the official code computes norm(z) into a variable it never uses,
            # so the norms are NOT applied. Reproduced by not computing it at all.
            if rec is not None:
                rec["ssm"].append(y)
                rec["spikes"].append(s)
                rec["stream"].append(x)
        return x


class SpikingSSM(nn.Module):
    def __init__(self, config: SpikingSSMConfig):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config)
        self.backbone = SpikingSSMBackbone(config)
        self.decoder = nn.Linear(config.d_model, config.d_output)

    def encode(self, x: Tensor) -> Tensor:
        return encode(self.encoder, self.config, x)

    def forward(self, x: Tensor, neuron: str = "sdn", record: bool = False):
        """x (B,L,d_input) float in [0,1] (raw levels / input_levels), or (B,L) long tokens.

        Returns logits (B,d_output); with record=True also {'ssm','spikes','stream': per-layer (B,H,L),
        'stream_in': (B,H,L)}."""
        h = self.encode(x).transpose(-1, -2)          # (B,H,L)
        rec = {"ssm": [], "spikes": [], "stream": [], "stream_in": h} if record else None
        h = self.backbone(h, neuron=neuron, rec=rec)
        logits = self.decoder(h.mean(-1))
        return (logits, rec) if record else logits

    def ssm_parameters(self):
        """(name, parameter) of the SSM kernel A/dt(/B) tensors (small lr, no weight decay)."""
        for i, layer in enumerate(self.backbone.s4_layers):
            for n in layer.kernel.ssm_param_names():
                yield f"backbone.s4_layers.{i}.kernel.{n}", getattr(layer.kernel, n)
