"""Test helper: write one of our SpikingSSM models as an official-layout Lightning ``.ckpt``.

For variants the authors' code was not run for (and the official-size model). The layout is what the
authors' s4 trainer saves (see tests/fixtures/official/NOTES.md), with ``hyper_parameters`` as plain dicts
instead of pickled OmegaConf objects and no training state beyond empty optimizer/scheduler lists.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

# ours -> official: the inverse of models/official.py's renames
_PREFIXES = (("backbone.", "model."), ("encoder.", "encoder.0."), ("decoder.", "decoder.0.output_transform."))


def official_state_dict(model) -> OrderedDict:
    out = OrderedDict()
    for k, v in model.state_dict().items():
        new, old = next((n, o) for o, n in _PREFIXES if k.startswith(o))
        out[new + k[len(old):]] = v.detach().cpu().clone()
    return out


def official_hparams(config, dataset: dict | None = None) -> dict:
    """The hydra config sections the authors' trainer stores (model, layer, dataset, encoder, decoder)."""
    layer = {"d_state": config.d_state, "bidirectional": config.bidirectional, "learnable_vth": config.learnable_vth,
             "shared_vth": config.shared_vth, "trainable_B": config.kernel == "diag_b", "lr": 0.001,
             "dt_min": config.dt_min, "dt_max": config.dt_max}
    return {
        "model": {"_name_": "spikingssm", "d_model": config.d_model, "n_layers": config.n_layers,
                  "prenorm": config.prenorm, "norm": config.norm, "dropout": config.dropout, "layer": layer},
        "dataset": dict(dataset) if dataset is not None else {"_name_": "synthetic", "l_max": config.l_max},
        "encoder": config.encoder,
        "decoder": {"_name_": "sequence", "mode": "pool"},
        "task": {"_name_": "base", "loss": "cross_entropy", "metrics": ["accuracy"]},
    }


def write_official(path: str, model, dataset: dict | None = None, version: str = "2.0.4") -> None:
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": version,
                "state_dict": official_state_dict(model), "hyper_parameters": official_hparams(model.config, dataset),
                "optimizer_states": [], "lr_schedulers": []}, path)
