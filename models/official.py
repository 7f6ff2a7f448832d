"""Official checkpoints: Lightning ``.ckpt`` files written by the authors' s4-framework training code.

A Lightning file holds ``state_dict`` (prefixes ``model.`` backbone, ``encoder.0.``, ``decoder.0.output_transform.``),
``hyper_parameters`` (the whole hydra config; read into plain dicts by ``torchzip``) and training state.
The family and its variant are told from the file alone: the state-dict keys and shapes decide, the stored
config supplies what weights cannot show (prenorm, sequence length, dt transform, residual).

- SpikingSSM (``model.s4_layers.{i}.*``) maps to ``SpikingSSMConfig`` and our state-dict layout.
- P-SpikeSSM (``model.layers.{i}.inp_a``, ...) is detected and returned as a plain config dict with the
  state dict renamed the same way, kind ``'pspikessm'``; whether it loads depends on ``checkpoint.KINDS``.

See ``tests/fixtures/official/NOTES.md`` for the forward semantics these mappings rely on.
"""
from __future__ import annotations

import re

from ..errors import CheckpointError
from .config import SpikingSSMConfig

LIGHTNING_VERSION_KEY = "pytorch-lightning_version"
FAMILIES = {"spikingssm": "SpikingSSM", "pspikessm": "P-SpikeSSM"}
_RENAMES = (("model.", "backbone."), ("encoder.0.", "encoder."), ("decoder.0.output_transform.", "decoder."))
# s4 datasets whose sequence length is fixed in code, not in the config (the s4 trainer drops the
# '__l_max' helper keys before saving, so an sMNIST or sCIFAR checkpoint stores no length at all).
_DATASET_LENGTHS = {"mnist": 784, "cifar": 1024}
# Image datasets read through torchvision ToTensor: 8-bit pixels scaled to [0, 1].
PIXEL_DATASETS = ("mnist", "cifar")


def is_lightning(obj) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)
            and (LIGHTNING_VERSION_KEY in obj or "hyper_parameters" in obj))


def _section(d, *keys) -> dict:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d if isinstance(d, dict) else {}


def _positive_int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


class _Weights:
    """The state dict with lookups that fail as one line naming the file."""

    def __init__(self, path: str, sd: dict):
        self.path, self.sd = path, sd

    def has(self, key: str) -> bool:
        return key in self.sd

    def shape(self, key: str, ndim: int | None = None) -> tuple:
        if key not in self.sd or not hasattr(self.sd[key], "shape"):
            raise CheckpointError(f"{self.path}: Lightning state_dict has no tensor {key!r}")
        shape = tuple(self.sd[key].shape)
        if ndim is not None and len(shape) != ndim:
            raise CheckpointError(f"{self.path}: tensor {key!r} has shape {shape}, expected {ndim} dimensions")
        return shape

    def integer(self, key: str) -> int:
        """A one-element integer tensor's value (e.g. a stored kernel length)."""
        t = self.sd.get(key)
        if not (hasattr(t, "numel") and t.numel() == 1 and not (t.is_floating_point() or t.is_complex())):
            raise CheckpointError(f"{self.path}: {key!r} must be a one-element integer tensor, got "
                                  f"{tuple(t.shape) if hasattr(t, 'shape') else type(t).__name__}")
        return int(t.reshape(-1)[0])

    def indices(self, prefix: str) -> int:
        """Number of blocks prefix{i}.*, checking they are numbered 0..n-1."""
        found = {int(m.group(1)) for k in self.sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
        if found != set(range(len(found))):
            raise CheckpointError(f"{self.path}: blocks {prefix}N are not numbered 0..{len(found) - 1}: {sorted(found)[:8]}")
        return len(found)


def rename_state_dict(path: str, sd: dict) -> dict:
    """Official prefixes -> ours: model. -> backbone., encoder.0. -> encoder., decoder.0.output_transform. -> decoder."""
    out = {}
    for k, v in sd.items():
        for old, new in _RENAMES:
            if isinstance(k, str) and k.startswith(old):
                out[new + k[len(old):]] = v
                break
        else:
            raise CheckpointError(f"{path}: unexpected tensor {k!r} in the Lightning state_dict "
                                  "(expected model.*, encoder.0.*, decoder.0.output_transform.*)")
    return out


def _encoder(w: _Weights):
    """(name, d_input, n_tokens, description) from encoder.0: Linear has a bias, Embedding has none."""
    rows, cols = w.shape("encoder.0.weight", 2)
    if w.has("encoder.0.bias"):
        return "linear", cols, 0, f"Linear({cols} input{'s' if cols > 1 else ''})"
    return "embedding", 1, rows, f"Embedding({rows} tokens)"


def _l_max(path: str, hp: dict, seq_len: int | None = None):
    """The length the config stores (which ``seq_len`` must then equal), else the user's ``seq_len``,
    else the fixed length of a known dataset (sMNIST 784, sCIFAR 1024: the kernels are computed for
    any length, so ``seq_len`` may run such a model on shorter sequences)."""
    dataset, layer = _section(hp, "dataset"), _section(hp, "model", "layer")
    name = dataset.get("_name_")
    stored = next((v for v in (dataset.get("__l_max"), dataset.get("l_max"), layer.get("l_max")) if _positive_int(v)), None)
    if stored is not None:
        if seq_len is not None and seq_len != stored:
            raise CheckpointError(f"{path}: the file stores sequence length {stored}; {seq_len} was asked for")
        return stored
    if seq_len is not None:
        return seq_len
    if name in _DATASET_LENGTHS:
        return _DATASET_LENGTHS[name]
    raise CheckpointError(f"{path}: cannot tell the sequence length: the stored config has no dataset.__l_max, "
                          f"dataset.l_max or model.layer.l_max (the s4 trainer drops __l_max before saving), and "
                          f"dataset {name!r} has no fixed length known to this build; give it with --seq-len L")


def _norm_kind(w: _Weights, key_prefix: str):
    """'batch' (running stats stored), 'layer', or None (no norm weights)."""
    if w.has(key_prefix + "running_mean"):
        return "batch"
    return "layer" if w.has(key_prefix + "weight") else None


_NORM_NAMES = {"batch": "BatchNorm", "layer": "LayerNorm"}


def _meta(obj: dict, hp: dict, family: str, detected: str) -> dict:
    return {"detected": detected, "family": family, "source": "lightning",
            "lightning_version": str(obj.get(LIGHTNING_VERSION_KEY, "unknown")),
            "epoch": obj.get("epoch"), "global_step": obj.get("global_step"), "hyper_parameters": hp}


# ----------------------------------------------------------------------------------------- SpikingSSM
def _read_spikingssm(path: str, obj: dict, w: _Weights, hp: dict, seq_len: int | None):
    model_hp, layer_hp = _section(hp, "model"), _section(hp, "model", "layer")
    n_layers = w.indices("model.s4_layers.")
    p = "model.s4_layers.0."
    H = w.shape(p + "D", 2)[-1]
    if w.has(p + "kernel.log_dt"):
        kernel, N, kdesc = "s4d", 2 * w.shape(p + "kernel.log_A_real", 2)[-1], "S4D kernels (S4DKernel, fixed B)"
    elif w.has(p + "kernel.inv_dt"):
        kernel, N, kdesc = "diag_b", 2 * w.shape(p + "kernel.A_real", 2)[-1], "trainable-B diagonal kernels (SSMKernelDiag)"
    else:
        raise CheckpointError(f"{path}: SpikingSSM layer 0 has neither kernel.log_dt (S4DKernel) nor kernel.inv_dt (SSMKernelDiag)")
    channels = w.shape(p + "kernel.C", 4)[0]
    if channels not in (1, 2):
        raise CheckpointError(f"{path}: SpikingSSM kernel.C has {channels} channels (expected 1 causal or 2 bidirectional)")
    if w.has(p + "ln_vth"):
        shared = w.shape(p + "ln_vth") == (1,)
        learnable, vdesc = True, "shared threshold" if shared else "per-channel threshold"
    else:
        learnable, shared, vdesc = False, False, "no threshold scaling (learnable_vth=False)"
    encoder, d_input, n_tokens, edesc = _encoder(w)
    d_output = w.shape("decoder.0.output_transform.weight", 2)[0]
    norm = _norm_kind(w, "model.norms.0.")
    if norm is None:
        raise CheckpointError(f"{path}: SpikingSSM without model.norms.0.* (the official backbone zips layers with "
                              "norms, so it would run no layer at all)")
    prenorm = bool(model_hp.get("prenorm", False))
    ndesc = f"prenorm {_NORM_NAMES[norm]}" if prenorm else f"postnorm {_NORM_NAMES[norm]} (stored, never applied)"
    l_max = _l_max(path, hp, seq_len)
    dataset = _section(hp, "dataset").get("_name_")
    try:
        config = SpikingSSMConfig(
            d_input=d_input, d_output=d_output, d_model=H, n_layers=n_layers, d_state=N, l_max=l_max,
            encoder=encoder, n_tokens=n_tokens, kernel=kernel, bidirectional=channels == 2,
            learnable_vth=learnable, shared_vth=shared, prenorm=prenorm, norm=norm, tau=0.125,
            dropout=float(model_hp.get("dropout", 0.0) or 0.0),
            dt_min=float(layer_hp.get("dt_min", 0.001)), dt_max=float(layer_hp.get("dt_max", 0.1)),
            **({"input_levels": 255} if dataset in PIXEL_DATASETS else {}))
    except (ValueError, TypeError, OverflowError) as exc:     # OverflowError: 10**400 as a float
        raise CheckpointError(f"{path}: official SpikingSSM with an unusable config: {exc}") from None
    detected = (f"official SpikingSSM (Lightning {obj.get(LIGHTNING_VERSION_KEY, 'unknown')}): {n_layers} layers, "
                f"H={H}, N={N}, L={l_max}, {'bidirectional' if channels == 2 else 'causal'}, {kdesc}, {vdesc}, "
                f"{edesc}, {d_output} outputs, {ndesc}")
    return "spikingssm", config, rename_state_dict(path, w.sd), _meta(obj, hp, "SpikingSSM", detected)


# ----------------------------------------------------------------------------------------- P-SpikeSSM
def _read_pspikessm(path: str, obj: dict, w: _Weights, hp: dict, seq_len: int | None):
    model_hp, layer_hp = _section(hp, "model"), _section(hp, "model", "layer")
    n_layers = w.indices("model.layers.")
    p = "model.layers.0."
    k = p + "layer.layer.kernel."
    H = w.shape(p + "inp_a", 1)[0]
    if not w.has(k + "P"):
        raise CheckpointError(f"{path}: P-SpikeSSM block without kernel.P: not the DPLR (S4) kernel every official config uses")
    rank, n_ssm, half, _ = w.shape(k + "P", 4)
    channels = w.shape(k + "C", 4)[0]
    block_bidirectional = w.has(p + "reverse_layer.layer.D")
    residual = model_hp.get("residual", "R")
    if isinstance(residual, dict):
        residual = residual.get("_name_")
    if residual not in (None, "R", "residual"):
        raise CheckpointError(f"{path}: P-SpikeSSM residual {residual!r} is not supported (only 'R' or none)")
    pool = model_hp.get("pool")
    if isinstance(pool, dict) and (pool.get("stride", 1) not in (1, None) or pool.get("expand") is not None):
        raise CheckpointError(f"{path}: P-SpikeSSM pooling {pool} is not supported (only stride 1 without expansion)")
    norm = _norm_kind(w, p + "norm.norm.")
    prenorm = bool(model_hp.get("prenorm", True))
    final_norm = _norm_kind(w, "model.norm.norm.")
    encoder, d_input, n_tokens, edesc = _encoder(w)
    d_output = w.shape("decoder.0.output_transform.weight", 2)[0]
    l_kernel = [w.integer(f"model.layers.{i}.layer.layer.kernel.l_kernel") for i in range(n_layers)]
    dt_transform = layer_hp.get("dt_transform", "exp")     # the s4 kernel's default when the config is silent
    # what our P-SpikeSSM fixes rather than configures (as every official config does)
    for ok, what in ((rank == 1, f"rank {rank} (only rank 1)"),
                     (dt_transform == "softplus", f"dt_transform {dt_transform!r} (only 'softplus')"),
                     (not prenorm or final_norm == norm, f"a final {final_norm} norm after {norm} prenorm blocks")):
        if not ok:
            raise CheckpointError(f"{path}: official P-SpikeSSM with {what} is not supported")
    dataset = _section(hp, "dataset").get("_name_")
    from .pspikessm import PSpikeSSMConfig
    try:
        config = PSpikeSSMConfig(
            d_input=d_input, d_output=d_output, d_model=H, n_layers=n_layers, d_state=2 * half,
            l_max=_l_max(path, hp, seq_len), encoder=encoder, n_tokens=n_tokens, bidirectional=block_bidirectional,
            ssm_bidirectional=channels == 2, n_ssm=n_ssm, prenorm=prenorm, norm=norm or "none",
            residual=residual is not None, dropout=float(model_hp.get("dropout", 0.0) or 0.0),
            dt_min=float(layer_hp.get("dt_min", 0.001)), dt_max=float(layer_hp.get("dt_max", 0.1)),
            **({"input_levels": 255} if dataset in PIXEL_DATASETS else {}))
    except (ValueError, TypeError, OverflowError) as exc:     # OverflowError: 10**400 as a float
        raise CheckpointError(f"{path}: official P-SpikeSSM with an unusable config: {exc}") from None
    if norm is None:
        ndesc = "no norm"
    elif prenorm:
        ndesc = f"prenorm {_NORM_NAMES[norm]}" + (f" + final {_NORM_NAMES[final_norm]}" if final_norm else "")
    else:
        ndesc = f"postnorm {_NORM_NAMES[norm]} (applied)"
    lk = l_kernel[0] if len(set(l_kernel)) == 1 else l_kernel
    detected = (f"official P-SpikeSSM (Lightning {obj.get(LIGHTNING_VERSION_KEY, 'unknown')}): {n_layers} layers, "
                f"H={H}, N={2 * half}, n_ssm={n_ssm}, {'bidirectional' if block_bidirectional else 'unidirectional'} "
                f"blocks, DPLR S4 kernels (rank {rank}, {'two-sided' if channels == 2 else 'causal'}, bilinear, "
                f"dt={dt_transform}, l_kernel={lk}), {ndesc}, {'residual' if residual else 'no residual'}, {edesc}, "
                f"{d_output} outputs")
    return "pspikessm", config, rename_state_dict(path, w.sd), _meta(obj, hp, "P-SpikeSSM", detected)


def read_lightning(path: str, obj: dict, seq_len: int | None = None):
    """-> (kind, config, state_dict in our layout, meta with 'detected' and plain 'hyper_parameters').
    ``seq_len``: the sequence length when the file stores none (checked against it otherwise)."""
    hp = obj.get("hyper_parameters")
    hp = hp if isinstance(hp, dict) else {}
    bad = [k for k in obj["state_dict"] if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{path}: Lightning state_dict key {str(bad[0])[:60]!r} is not a string")
    w = _Weights(path, obj["state_dict"])
    if any(isinstance(k, str) and k.startswith("model.s4_layers.") for k in w.sd):
        return _read_spikingssm(path, obj, w, hp, seq_len)
    if any(isinstance(k, str) and re.fullmatch(r"model\.layers\.\d+\.inp_a", k) for k in w.sd):
        return _read_pspikessm(path, obj, w, hp, seq_len)
    name = _section(hp, "model").get("_name_")
    raise CheckpointError(f"{path}: Lightning checkpoint of a model this build does not know (model._name_={name!r}; "
                          "expected SpikingSSM model.s4_layers.* or P-SpikeSSM model.layers.*.inp_a)")
