"""Reference P-SpikeSSM (Bal & Sengupta, ICLR 2025) following the authors' code, official key layout.

state_dict keys = the official Lightning keys with three prefix renames (``model.`` -> ``backbone.``,
``encoder.0.`` -> ``encoder.``, ``decoder.0.output_transform.`` -> ``decoder.``)::

    encoder.{weight,bias}                       nn.Linear(d_input, H)   (or encoder.weight: nn.Embedding)
    backbone.layers.{i}.{inp_b,inp_a,inp2_b,inp2_a,out_b,out_a}          (H,) each
    backbone.layers.{i}.layer.layer.D                                   (1, H)
    backbone.layers.{i}.layer.layer.kernel.{inv_dt,C,B,A_real,A_imag,P,l_kernel}  (see dplr_kernel)
    backbone.layers.{i}.layer.output_linear.0.{weight (2H,H), bias (2H)}  never used by the forward
    bidirectional block:  backbone.layers.{i}.reverse_layer.*  (a second S4 layer, same layout)
                          backbone.layers.{i}.bidirectional_linear.{weight (H,2H), bias}
                          backbone.layers.{i}.bidirectional_linear{1,2}.{weight (H//2,H), bias}  unused
    unidirectional block: backbone.layers.{i}.bidirectional_linear1.{weight (H,H), bias}
    backbone.layers.{i}.norm.norm.*             BatchNorm1d / LayerNorm (absent with norm='none')
    backbone.norm.norm.*                        final norm, only when prenorm
    decoder.{weight,bias}                       nn.Linear(H, d_output) after a mean over time

Forward of block i (official ``SequenceResidualBlock`` with ``parametric_prob``), x (B,H,L) analog:

    p_in  = inp_a * x + inp_b;  p_in = norm(p_in) if prenorm
    U1, U2 ~ U(0,1) shaped like p_in (drawn in that order, at test time too: no eval switch)
    s_in  = sample(p_in, U1)                      sample: forward (p > U); backward d clamp(p,0,1)
    p_ssm = out_a * S4(s_in) + out_b              S4(u) = drop_t(GELU(drop(fft_conv(u, K, D))))
    unidirectional:  s_ssm = sample(p_ssm, U2);  y = GELU(bidirectional_linear1(s_ssm))
    bidirectional:   p_in_rev = inp2_a * x + inp2_b  (from x: no prenorm)
                     s_in_rev = sample(p_in_rev, U2);  p_ssm_rev = S4_rev(s_in_rev)  (no out_a/out_b)
                     s_ssm = sample(p_ssm, U1);  s_ssm_rev = sample(p_ssm_rev, U1)   (U1 again)
                     y = GELU(bidirectional_linear(cat[s_ssm, s_ssm_rev] over channels))
    y = x + drop_t(y) if residual  (no dropout at all without residual, as the official code)
    y = norm(y) if not prenorm      (post-norm IS applied here, unlike SpikingSSM)

Backbone: blocks in order, then the final norm when prenorm.  Logits = decoder(mean_t(stream)).
GELU is the exact (erf) nn.GELU.  drop = element-wise dropout (official FFTConv, untied);
drop_t = dropout with one mask per (batch, channel) tied over time (official DropoutNd with
tie_dropout=True, as model/pSpikeSSM.yaml sets).  Kernels K are computed in float64 by the
official S4 algorithm (``dplr_kernel.dplr_kernel_woodbury``), then cast to the activations' dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .config import ModelConfig, build_encoder, encode
from .dplr_kernel import SSM_PARAM_NAMES, DPLRKernel, fft_conv


@dataclass(frozen=True)
class PSpikeSSMConfig(ModelConfig):
    """P-SpikeSSM hyper-parameters (frozen; validated on construction).

    Fixed by every official config and therefore not fields: S4 kernel ``mode: nplr, init: legs,
    rank: 1, dt_transform: softplus`` (bilinear), ``channels: 1``, the S4 layer's ``activation: gelu``
    and ``final_act: glu`` (so ``output_linear`` exists, unused), ``tie_dropout: true``,
    ``pool`` = stride-1 average (identity, no parameters), decoder ``mode: pool`` (mean over time).
    ``residual`` is a field because pSpikeSSM-mnist sets ``residual: null`` (no skip at all);
    ``n_ssm`` because pathfinder sets ``n_ssm: null`` (= d_model, one SSM per channel).
    """
    d_input: int = 1
    d_output: int = 10
    d_model: int = 64              # H
    n_layers: int = 2
    d_state: int = 64              # N (N/2 complex conjugate pairs)
    l_max: int = 64                # sequence length; the kernels' l_kernel (C~ length) at init
    encoder: str = "linear"        # 'linear' | 'embedding'
    n_tokens: int = 0              # embedding vocabulary size
    bidirectional: bool = False    # block-level reverse S4 layer (official model.bidirectional)
    ssm_bidirectional: bool = True # two-sided kernels, C has 2 channels (official layer.bidirectional)
    n_ssm: int = 1                 # independent (A, B, P) copies; must divide d_model (1 = shared)
    prenorm: bool = False
    norm: str = "batch"            # 'batch' | 'layer' | 'none'
    residual: bool = True          # official residual: R (x + y); False = residual: null
    dropout: float = 0.0
    dt_min: float = 0.001
    dt_max: float = 0.1
    input_levels: int = 16         # raw inputs are integers 0..input_levels; the model sees x / input_levels

    def __post_init__(self):
        self.check_common(("d_input", "d_output", "d_model", "n_layers", "l_max", "input_levels", "n_ssm"))
        if self.d_model % self.n_ssm:
            self.bad("n_ssm", f"must divide d_model ({self.d_model})")
        if self.norm not in ("batch", "layer", "none"):
            self.bad("norm", "must be 'batch', 'layer' or 'none'")

    @property
    def channels(self) -> int:
        """Kernel channels: 2 (two-sided) with ssm_bidirectional, else 1 (causal)."""
        return 2 if self.ssm_bidirectional else 1



# ------------------------------------------------------------------------------------ sampler
class _Replace(torch.autograd.Function):
    """Forward returns the spikes; backward passes the gradient to the surrogate (official Replace)."""

    @staticmethod
    def forward(ctx, surrogate: Tensor, spikes: Tensor) -> Tensor:
        return spikes.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def spike_sample(p: Tensor, u: Tensor) -> Tensor:
    """SpikeSampler: forward (p > u) as p's dtype exactly; backward the gradient of clamp(p, 0, 1)."""
    spikes = (p > u).to(p.dtype)
    return _Replace.apply(torch.clamp(p, 0, 1), spikes)


class TiedDropout(nn.Module):
    """Dropout with one mask per (batch, channel), tied over time (official DropoutNd, tie=True)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:                 # x (B,H,L)
        if not self.training or self.p == 0.0:
            return x
        mask = torch.rand(x.shape[:-1] + (1,), device=x.device) < 1.0 - self.p
        return x * mask / (1.0 - self.p)


class _Norm(nn.Module):
    """Official Normalization wrapper (keys ``norm.*``) on (B,H,L): BatchNorm over (B,L), LayerNorm over H."""

    def __init__(self, kind: str, H: int):
        super().__init__()
        self.kind = kind
        self.norm = nn.BatchNorm1d(H) if kind == "batch" else nn.LayerNorm(H)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "batch":
            return self.norm(x)
        return self.norm(x.transpose(-1, -2)).transpose(-1, -2)


# ---------------------------------------------------------------------------------- S4 layer
class FFTConvDPLR(nn.Module):
    """Official FFTConv around the DPLR kernel: y = K * u + D u (keys ``D``, ``kernel.*``)."""

    def __init__(self, cfg: PSpikeSSMConfig):
        super().__init__()
        H = cfg.d_model
        self.l_max = cfg.l_max
        self.D = nn.Parameter(torch.randn(1, H))
        self.kernel = DPLRKernel(H, cfg.d_state, cfg.channels, cfg.n_ssm, cfg.dt_min, cfg.dt_max, l_max=cfg.l_max)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0.0 else nn.Identity()

    def forward(self, u: Tensor) -> Tensor:                 # (B,H,L) -> (B,H,L)
        L = u.shape[-1]
        K = self.kernel(min(L, self.l_max)).to(u.dtype)
        return self.drop(fft_conv(u, K, self.D))


class S4Layer(nn.Module):
    """Official S4Block as configured by configs/model/layer/pSpikeSSM.yaml: GELU(FFTConv(u)), tied dropout.

    ``output_linear`` (Linear(H,2H)+GLU) is built as the official module does but its call is
    commented out there, so it never runs: kept only for the state_dict layout."""

    def __init__(self, cfg: PSpikeSSMConfig):
        super().__init__()
        H = cfg.d_model
        self.layer = FFTConvDPLR(cfg)
        self.activation = nn.GELU()
        self.drop = TiedDropout(cfg.dropout)
        self.output_linear = nn.Sequential(nn.Linear(H, 2 * H), nn.GLU(dim=-1))

    def forward(self, u: Tensor) -> Tensor:
        return self.drop(self.activation(self.layer(u)))


# -------------------------------------------------------------------------------------- block
UniformFn = Callable[[int, int, tuple], Tensor]


class PSpikeBlock(nn.Module):
    def __init__(self, cfg: PSpikeSSMConfig, index: int):
        super().__init__()
        H = cfg.d_model
        self.cfg = cfg
        self.index = index
        self.inp_b = nn.Parameter(torch.zeros(H))
        self.inp_a = nn.Parameter(torch.ones(H))
        self.inp2_b = nn.Parameter(torch.zeros(H))
        self.inp2_a = nn.Parameter(torch.ones(H))
        self.out_b = nn.Parameter(torch.zeros(H))
        self.out_a = nn.Parameter(torch.ones(H))
        self.activation = nn.GELU()
        self.layer = S4Layer(cfg)
        if cfg.bidirectional:
            self.reverse_layer = S4Layer(cfg)
            self.bidirectional_linear = nn.Linear(2 * H, H)
            self.bidirectional_linear1 = nn.Linear(H, int(H / 2))     # unused (official)
            self.bidirectional_linear2 = nn.Linear(H, int(H / 2))     # unused (official)
        else:
            self.bidirectional_linear1 = nn.Linear(H, H)
        if cfg.norm != "none":
            self.norm = _Norm(cfg.norm, H)
        self.drop = TiedDropout(cfg.dropout)

    @staticmethod
    def _ch(v: Tensor) -> Tensor:
        return v.unsqueeze(-1)                             # (H,) -> (H,1), broadcast over (B,H,L)

    def sample(self, p: Tensor, u: Tensor) -> Tensor:
        """The block's SpikeSampler (a method, so fine-tuning can round p as the chip does)."""
        return spike_sample(p, u)

    def _mix(self, linear: nn.Linear, s: Tensor) -> Tensor:
        """SpikeMixer: GELU(Linear over channels) on (B,C,L) spikes -> (B,H,L)."""
        return self.activation(linear(s.transpose(-1, -2))).transpose(-1, -2)

    def forward(self, x: Tensor, uniforms: Optional[UniformFn] = None, rec: Optional[dict] = None) -> Tensor:
        cfg = self.cfg
        p_in = self._ch(self.inp_a) * x + self._ch(self.inp_b)
        if cfg.prenorm and cfg.norm != "none":
            p_in = self.norm(p_in)
        if uniforms is None:
            u1, u2 = self._torch_uniform(p_in), self._torch_uniform(p_in)         # U1 then U2, as drawn officially
        else:
            u1 = self._uniform(uniforms, 1, p_in)
            u2 = self._uniform(uniforms, 2, p_in)
        s_in = self.sample(p_in, u1)
        p_ssm = self.layer(s_in) * self._ch(self.out_a) + self._ch(self.out_b)
        r = {}
        if cfg.bidirectional:
            p_in_rev = self._ch(self.inp2_a) * x + self._ch(self.inp2_b)
            s_in_rev = self.sample(p_in_rev, u2)
            p_ssm_rev = self.reverse_layer(s_in_rev)
            s_ssm = self.sample(p_ssm, u1)
            s_ssm_rev = self.sample(p_ssm_rev, u1)
            y = self._mix(self.bidirectional_linear, torch.cat([s_ssm, s_ssm_rev], dim=-2))
            r.update(p_in_rev=p_in_rev, s_in_rev=s_in_rev, p_ssm_rev=p_ssm_rev, s_ssm_rev=s_ssm_rev)
        else:
            s_ssm = self.sample(p_ssm, u2)
            y = self._mix(self.bidirectional_linear1, s_ssm)
        if cfg.residual:
            y = x + self.drop(y)
        if not cfg.prenorm and cfg.norm != "none":
            y = self.norm(y)
        if rec is not None:
            i = self.index
            r.update(p_in=p_in, s_in=s_in, p_ssm=p_ssm, s_ssm=s_ssm, u1=u1, u2=u2, stream=y)
            for k in ("p_in", "s_in", "p_ssm", "s_ssm", "p_in_rev", "s_in_rev", "p_ssm_rev", "s_ssm_rev",
                      "u1", "u2", "stream"):
                if k in r:
                    rec[f"layer{i}.{k}"] = r[k]
        return y

    def authors_storage_is_bhl(self) -> bool:
        """Whether the official activation that ``torch.rand_like`` copies has (B,H,L) storage (the
        official code keeps (B,L,H) shapes; rand_like keeps strides, so it fills the storage in that
        order).  BatchNorm transposes to (B,H,L), runs contiguous and transposes back, so a prenorm
        BatchNorm leaves (B,H,L) storage; LayerNorm runs on (B,L,H).  Without a prenorm norm the
        activation follows the block input: the encoder's (B,L,H) in block 0, a postnorm BatchNorm's
        (B,H,L) after it.  Checked on both official fixtures (their recorded uniforms are torch seed 7
        drawn in this order)."""
        cfg = self.cfg
        if cfg.prenorm and cfg.norm != "none":
            return cfg.norm == "batch"
        return self.index > 0 and not cfg.prenorm and cfg.norm == "batch"

    def _torch_uniform(self, like: Tensor) -> Tensor:
        B, H, L = like.shape
        if self.authors_storage_is_bhl():
            return torch.rand(B, H, L, dtype=like.dtype, device=like.device)
        return torch.rand(B, L, H, dtype=like.dtype, device=like.device).transpose(-1, -2)

    def _uniform(self, fn: UniformFn, which: int, like: Tensor) -> Tensor:
        u = fn(self.index, which, tuple(like.shape))
        if not isinstance(u, Tensor) or tuple(u.shape) != tuple(like.shape):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(f"uniforms({self.index}, {which}, {tuple(like.shape)}) returned {got}; "
                             f"expected a tensor of shape {tuple(like.shape)}")
        return u.to(dtype=like.dtype, device=like.device)


class PSpikeBackbone(nn.Module):
    def __init__(self, cfg: PSpikeSSMConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(PSpikeBlock(cfg, i) for i in range(cfg.n_layers))
        if cfg.prenorm and cfg.norm != "none":
            self.norm = _Norm(cfg.norm, cfg.d_model)

    def forward(self, x: Tensor, uniforms: Optional[UniformFn] = None, rec: Optional[dict] = None) -> Tensor:
        for block in self.layers:
            x = block(x, uniforms=uniforms, rec=rec)
        if self.cfg.prenorm and self.cfg.norm != "none":
            x = self.norm(x)
        return x


class PSpikeSSM(nn.Module):
    def __init__(self, config: PSpikeSSMConfig):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config)
        self.backbone = PSpikeBackbone(config)
        self.decoder = nn.Linear(config.d_model, config.d_output)

    def encode(self, x: Tensor) -> Tensor:
        return encode(self.encoder, self.config, x)

    def forward(self, x: Tensor, record: bool = False, uniforms: Optional[UniformFn] = None):
        """x (B,L,d_input) float in [0,1] (raw levels / input_levels), or (B,L) long tokens.

        Every call samples spikes (train and eval alike).  ``uniforms(layer, which, shape)``, if
        given, supplies U1 (which=1) and U2 (which=2) of layer ``layer``, shape (B,H,L); default
        torch.rand.  Returns logits (B,d_output); with record=True also a dict of (B,H,L) tensors:
        ``stream_in`` (encoder output); per layer i ``layer{i}.p_in``, ``.s_in``, ``.p_ssm``, ``.s_ssm``
        (+ ``.p_in_rev``, ``.s_in_rev``, ``.p_ssm_rev``, ``.s_ssm_rev`` in bidirectional blocks),
        ``.u1``, ``.u2`` (the uniforms used) and ``.stream`` (block output); ``stream_out`` (after
        the final norm when prenorm; the decoder averages it over time)."""
        h = self.encode(x).transpose(-1, -2)                # (B,H,L)
        rec = {"stream_in": h} if record else None
        h = self.backbone(h, uniforms=uniforms, rec=rec)
        if rec is not None:
            rec["stream_out"] = h
        logits = self.decoder(h.mean(-1))
        return (logits, rec) if record else logits

    def ssm_parameters(self):
        """(name, parameter) of the kernels' dt/A/B/P (small lr, no weight decay; as in s4)."""
        for name, p in self.named_parameters():
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] == "kernel" and parts[-1] in SSM_PARAM_NAMES:
                yield name, p
