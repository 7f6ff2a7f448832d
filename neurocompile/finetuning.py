"""Quantisation-aware fine-tuning: train the float model through the integers ``export`` will write.

``neurocompile finetune CHECKPOINT --out DIR`` loads a checkpoint (ours or the authors' Lightning
file), trains it with ``train``'s own loop (``models.train.fit``: AdamW, cosine schedule, state in
DIR/finetune-state.pt after every epoch, ``--resume`` bit for bit), and writes DIR/ckpt.pt in our
format after every epoch, its provenance (the source file and its digest, the options) in its meta.

In the forward pass the quantities the compiler rounds are rounded exactly as ``quantize`` rounds
them for the same options (``passes.quantizers.QUANTIZERS``), gradients straight through:

* SSM kernels (``--kernel-bits``): the kernel the chip streams -- the S4D kernel materialised in
  float64, D in its first tap (or the two-sided kernel streamed causally), divided by the learnable
  threshold exp(ln_vth) -- computed with the compiler's own functions, then rounded per channel with
  error feedback (``quant.quantize_kernel_taps``);
* the GLU mixers' Dense weights (``--weight-bits``, capped at the target's synapse width);
* the linear encoder's weights per raw input level and its bias (``--weight-bits``, the synapse width):
  a mantissa per channel at 2**-e, e bounded below by the stream's fixed point
  (``passes.quantizers.fake_encoder``).

Scales and exponents are recomputed from the current weights at every step, not frozen from a first
export: the compiler recomputes them at export, so the exponents a step trained against are the ones
the exported checkpoint gets, and a channel whose peak moves keeps its full mantissa range (a frozen
exponent would clip it, or waste bits, once the weights move away from the first export).  One value
is the first export's: the stream's fixed point, which bounds the encoder's exponents from below.  It
follows from every layer's range at once, and the exponents sit above it unless a weight is large
enough to fill its mantissa at the stream's own scale.

Not rounded in the forward pass (the float model keeps them): the residual-stream width, an Embedding
encoder and the decoder (16-bit readout), the GLU's sigmoid table and the LIF thresholds and decay (exact
after the threshold fold).  The neuron trained through is the SDN by default (the model's training
neuron; ``neuron="lif"`` trains through the exact LIF the chip runs); the report gives the float
accuracy with the exact LIF and the integer accuracy (the emulator on the exported program, as
``validate`` computes it) before and after.  SpikingSSM with conv-lowered SSMs only: P-SpikeSSM, the
recurrent lowering and a prenorm BatchNorm (its batch statistics move while training) are refused.
"""
from __future__ import annotations

import contextlib
import os
import time
import types
from dataclasses import asdict, dataclass

import numpy as np

STATE_FILE = "finetune-state.pt"
CHECKPOINT_FILE = "ckpt.pt"
NEURONS = ("sdn", "lif")


@dataclass(frozen=True)
class FinetuneOptions:
    """The fine-tuning run's own knobs (the rounding's are ``CompileOptions``)."""
    epochs: int = 1
    max_train: int = 0              # train on the first N training samples (0: all)
    max_test: int = 0               # accuracies on the first N test samples (0: all)
    lr: float = 3e-3                # AdamW; the SSM's A / dt at min(lr, 0.001), as train
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0                   # batch order (and torch's RNG)
    neuron: str = "sdn"             # trained through: the SDN surrogate or the exact LIF

    def __post_init__(self):
        if self.neuron not in NEURONS:
            raise ValueError(f"--neuron must be one of {', '.join(NEURONS)}, got {self.neuron!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.max_train < 0 or self.max_test < 0:
            raise ValueError("--epochs and --batch-size must be >= 1, --max-train and --max-test >= 0")
        if not 0.0 <= self.lr <= 10.0 or not 0.0 <= self.weight_decay <= 10.0:
            raise ValueError("--lr and --weight-decay must be in 0..10")

    def run_key(self, **context) -> dict:
        """What makes two runs compute the same weights (``--resume`` refuses another): every knob but
        ``max_test``, and the ``context`` (dataset, source weights, rounding options)."""
        return {**{k: v for k, v in asdict(self).items() if k != "max_test"}, **context}


def split_options(values: dict) -> tuple:
    """(``FinetuneOptions``, ``CompileOptions``) built from the entries of ``values`` named as their
    fields, those entries popped: what is left is the caller's (``finetune``'s keywords, or a typo)."""
    from dataclasses import fields

    from .options import CompileOptions

    def built(kind):
        return kind(**{f.name: values.pop(f.name) for f in fields(kind) if f.name in values})
    return built(FinetuneOptions), built(CompileOptions)


def supported(kind: str, config, options) -> str:
    """Why this model / these options cannot be fine-tuned ('' when they can)."""
    if kind != "spikingssm":
        return f"{kind} models are not supported yet (SpikingSSM only: its samplers have no fine-tuning quantiser)"
    if options.ssm_lowering != "conv":
        return (f"--ssm-lowering {options.ssm_lowering}: the recurrence's decays have no fine-tuning quantiser yet "
                "(fine-tune with conv)")
    if config.prenorm and config.norm == "batch":
        return "a prenorm BatchNorm folds into the kernels with statistics that move while training"
    return ""


def _kernel_value(kernel: np.ndarray, D: np.ndarray, ln_vth, bidirectional: bool) -> np.ndarray:
    """The float64 kernel ``quantize`` rounds, computed by the compiler's own passes (materialize, fold)."""
    from .frontend import threshold_gain
    from .ir import ChannelAffine, SSMConv
    from .passes.fold import conv_then_affine
    from .passes.materialize import two_sided_as_causal

    if bidirectional:
        value, lag = two_sided_as_causal(kernel[0], kernel[1], D)
    else:
        value, lag = kernel[0].copy(), 0
        value[:, 0] += D
    if ln_vth is None:
        return value
    H, L = value.shape[0], kernel.shape[-1]
    return conv_then_affine(SSMConv(value, lag, np.zeros((H, 0))), ChannelAffine(threshold_gain(ln_vth, H), np.zeros(H)),
                            L).kernel


def quantized_kernel(layer, L: int, bits: int):
    """A SpikingSSM layer's LIF-input kernel rounded as export rounds it -> ((ch, H, L) torch kernel with
    D and the threshold folded in, straight-through gradients; (integer taps, exponents))."""
    import torch

    from .ir import SSMConv
    from .models.ssm_kernel import materialize_kernel
    from .passes.quantizers import QUANTIZERS, fake_quantize

    _, integers, _ = QUANTIZERS[SSMConv]
    cfg = layer.cfg
    K = materialize_kernel({n: p.double() for n, p in layer.kernel.params().items()}, layer.kernel.variant, L,
                           dtype=torch.float64)
    D = layer.D.reshape(-1).double()
    ln_vth = layer.ln_vth.double() if cfg.learnable_vth else None
    value = _kernel_value(K.detach().cpu().numpy(), D.detach().cpu().numpy(),
                          None if ln_vth is None else ln_vth.detach().cpu().numpy(),
                          cfg.bidirectional)
    if cfg.bidirectional:                      # the same kernel in torch, for the gradient
        t = torch.cat([K[1][:, :L - 1].flip(-1), K[0]], dim=1)
        t = torch.cat([t[:, :L - 1], t[:, L - 1:L] + D[:, None], t[:, L:]], dim=1)
    else:
        t = torch.cat([K[0][:, :1] + D[:, None], K[0][:, 1:]], dim=1)
    if ln_vth is not None:
        t = t * torch.exp(-ln_vth).reshape(-1, 1)
    q, ints = fake_quantize(t, integers, bits, value)
    if cfg.bidirectional:                      # back to (k0, k1) for ssm_convolution: k1[L-1] meets no input
        q = torch.stack([q[:, L - 1:], torch.cat([q[:, :L - 1].flip(-1), torch.zeros_like(q[:, :1])], dim=1)])
    else:
        q = q[None]
    return q, ints


def quantized_weight(conv, bits: int):
    """A GLU mixer's Dense weight (2H, H) rounded as export rounds it -> (torch weight, (mantissas, exponents))."""
    from .ir import Dense
    from .passes.quantizers import QUANTIZERS, fake_quantize

    _, integers, _ = QUANTIZERS[Dense]
    q, ints = fake_quantize(conv.weight[..., 0].double(), integers, bits)
    return q.to(conv.weight.dtype)[..., None], ints


@contextlib.contextmanager
def fake_quantized(model, options, target, program=None):
    """Inside: every layer of the SpikingSSM ``model`` computes its LIF input with the rounded kernel and
    its mixer with the rounded weight, both recomputed from the current weights at every call; with the
    compiled ``program`` (its input format and stream fixed point), the linear encoder's weights too."""
    import torch

    from .input_format import InputFormat
    from .ir import Dense, SSMConv
    from .passes.quantizers import fake_encoder, option_bits

    kernel_bits, weight_bits = option_bits(SSMConv, options, target), option_bits(Dense, options, target)
    saved = []

    def lif_input(layer, u):
        K, _ = quantized_kernel(layer, u.shape[-1], kernel_bits)
        from .models.ssm_kernel import ssm_convolution
        return ssm_convolution(u, K.to(u.dtype), torch.zeros(1, K.shape[1], dtype=u.dtype, device=u.device))

    def mixer(conv, x):
        w, _ = quantized_weight(conv, weight_bits)
        return torch.nn.functional.conv1d(x, w.to(x.device), conv.bias)

    def encoder(linear, x):
        w, b, _ = fake_encoder(linear.weight, linear.bias, fmt, stream_frac, weight_bits, target.register_max)
        return torch.nn.functional.linear(x, w.to(x.dtype), b.to(x.dtype))

    fmt = InputFormat.from_dict(program.model["input"]) if program is not None else None
    if fmt is not None and fmt.kind == "levels":
        stream_frac = np.asarray(program.report["stream_frac_bits"], dtype=np.int64)
        saved.append(model.encoder)
        model.encoder.forward = types.MethodType(encoder, model.encoder)
    for layer in model.backbone.s4_layers:
        conv = layer.output_linear[0]
        saved += [layer, conv]
        layer.lif_input = types.MethodType(lif_input, layer)       # instance attributes: the state_dict is untouched
        conv.forward = types.MethodType(mixer, conv)
    try:
        yield model
    finally:
        for module in saved:
            module.__dict__.pop("lif_input", None)
            module.__dict__.pop("forward", None)


def _generated_length(dataset: str, program) -> int | None:
    """The length to generate the built-in listops data at: the model's own (an authors' file storing
    L = 64 fine-tunes on 64-step data; validate takes it as --seq-len); None for data that is read."""
    return program.seq_len if dataset == "listops" else None


def accuracy(checkpoint: str, program, dataset: str, max_test: int, device) -> tuple:
    """(float accuracy with the exact LIF, integer accuracy, samples) on the test split, as ``validate``
    computes them: ``program`` (compiled from ``checkpoint``) run in the emulator, no Lava."""
    from .api import run_validation

    report = run_validation(checkpoint, program, dataset, max_samples=max_test, lava_samples=0,
                            device=device, seq_len=_generated_length(dataset, program)).report
    return report["accuracy"]["float"], report["accuracy"]["integer"], report["samples"]


def finetune(checkpoint: str, out: str, dataset: str | None = None, run: FinetuneOptions = FinetuneOptions(),
             options=None, target=None, *, resume: bool = False, input_range=None, input_levels: int | None = None,
             seq_len: int | None = None, device: str | None = None, show: bool = False,
             command: list | None = None) -> dict:
    """Fine-tune ``checkpoint`` (``run``: ``FinetuneOptions``) against the integers of ``options``
    (``CompileOptions``) on ``target`` and write ``out``/ckpt.pt; -> the report (accuracies before and
    after, the run's figures).  ``dataset``: a built-in name or an .npz with a train split (default: the
    dataset our checkpoint records).  ``input_range`` (low, high) / ``input_levels`` / ``seq_len``: as
    ``export`` takes them."""
    import torch

    from .emulator import check_device
    from .errors import CheckpointError, UnsupportedModelError
    from .fileio import check_output_path
    from .models.checkpoint import build_model, load_checkpoint, save_checkpoint
    from .models.train import fit
    from .options import CompileOptions
    from .pipeline import compile_checkpoint
    from .api import load_data
    from .target import get_target

    options = options or CompileOptions()
    target = target or get_target()
    device = check_device(device)
    kind, config, state_dict, meta = load_checkpoint(checkpoint, seq_len=seq_len)
    input_format = None
    if input_range is not None or input_levels is not None:
        from .input_format import InputFormat
        low, high = input_range or (0.0, 1.0)
        input_format = InputFormat(low=low, high=high, levels=input_levels or config.to_dict().get("input_levels", 255))
    why = supported(kind, config, options)
    if why:
        raise UnsupportedModelError(f"{checkpoint}: cannot fine-tune: {why}")
    if dataset is None:
        dataset = meta.get("dataset") if isinstance(meta, dict) else None
        if not isinstance(dataset, str):
            raise CheckpointError(f"{checkpoint}: records no training dataset; name one with --dataset")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out}: --out must be a folder (it is a file)")
    path, state_path = os.path.join(out, CHECKPOINT_FILE), os.path.join(out, STATE_FILE)
    program = compile_checkpoint(checkpoint, options, target, input_format=input_format, seq_len=seq_len,
                                 warn=lambda _: None)      # refuses what export refuses, before anything is written
    train, values, _ = load_data(program, dataset, "train", _generated_length(dataset, program))
    y = train.y
    if run.max_train:
        values, y = values[:run.max_train], y[:run.max_train]
    if resume and not os.path.isfile(state_path):
        raise CheckpointError(f"{state_path}: no saved fine-tuning state to resume (run without --resume first)")
    os.makedirs(out, exist_ok=True)
    check_output_path(path, [checkpoint])
    check_output_path(state_path, [checkpoint])
    before = accuracy(checkpoint, program, dataset, run.max_test, device)

    compiled = program.report["source"]           # the digests and detection compile_checkpoint already made
    source = {"checkpoint": os.path.abspath(checkpoint), "sha256": compiled["checkpoint_sha256"],
              "weights_sha256": compiled["weights_sha256"], "kind": kind, "detected": compiled["detected"]}
    key = run.run_key(dataset=dataset, source_weights_sha256=source["weights_sha256"], **options.to_dict(),
                      input_format=None if input_format is None else input_format.to_dict())
    torch_device = torch.device(device)
    model = build_model(config, state_dict, kind).to(torch_device)
    torch.manual_seed(run.seed)
    xt = torch.as_tensor(values, dtype=torch.long if np.issubdtype(values.dtype, np.integer) else torch.float32)
    record = {"dataset": dataset, "seed": run.seed, "epochs": run.epochs, "train_neuron": run.neuron,
              "command": " ".join(["neurocompile"] + list(command or ["(Python API) finetune"])),
              "finetune": {"source": source, "options": key, "target": target.name},
              "device": str(torch_device), "torch": str(torch.__version__)}

    def save(epoch, train_loss, metrics=None):
        save_checkpoint(path, model, {**record, "epochs_done": epoch,
                                      "metrics": metrics or {"train_loss": train_loss}}, kind=kind)

    t0 = time.time()
    with fake_quantized(model, options, target, program):
        train_loss, seconds = fit(model, lambda xb: model(xb, neuron=run.neuron), xt, torch.as_tensor(y),
                                  epochs=run.epochs, batch_size=run.batch_size, lr=run.lr,
                                  weight_decay=run.weight_decay, seed=run.seed, device=torch_device,
                                  state_path=state_path, run_args=key, resume=resume, show=show, on_epoch=save)
    model.eval()
    save(run.epochs, train_loss)           # also when a resumed run had nothing left to train
    after = accuracy(path, compile_checkpoint(path, options, target, input_format=input_format, seq_len=seq_len,
                                              warn=lambda _: None), dataset, run.max_test, device)
    metrics = {"train_loss": train_loss, "n_train": int(len(y)), "n_test": int(after[2]),
               "train_seconds": round(seconds, 1),
               "before": {"float_lif": before[0], "integer": before[1]},
               "after": {"float_lif": after[0], "integer": after[1]}}
    save(run.epochs, train_loss, metrics)
    return {"checkpoint": path, "source": checkpoint, "dataset": dataset, "options": options.to_dict(),
            "metrics": metrics, "seconds": round(time.time() - t0, 1)}


def format_report(r: dict) -> str:
    m, o = r["metrics"], r["options"]
    pct = lambda v: f"{100 * v:6.2f} %"      # noqa: E731
    return "\n".join([
        f"wrote {r['checkpoint']}: fine-tuned {r['source']} at --kernel-bits {o['kernel_bits']} --weight-bits "
        f"{o['weight_bits']} on {m['n_train']} {r['dataset']} training samples (train loss {m['train_loss']:.4f}, "
        f"{m['train_seconds']:.0f} s)",
        f"  accuracy on {m['n_test']} test samples   {'float (exact LIF)':>18}{'integer (emulator)':>20}",
        f"  {'before (PTQ)':<34}{pct(m['before']['float_lif']):>18}{pct(m['before']['integer']):>20}",
        f"  {'after fine-tuning':<34}{pct(m['after']['float_lif']):>18}{pct(m['after']['integer']):>20}"]
        + ([f"  WARNING: fine-tuning lowered the integer accuracy on these samples ({100 * m['before']['integer']:.2f} "
            f"-> {100 * m['after']['integer']:.2f} %): keep the original checkpoint, or fine-tune with a lower --lr "
            "or more training samples"]
           if m["after"]["integer"] < m["before"]["integer"] else []))
