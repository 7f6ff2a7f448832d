"""Quantisation-aware fine-tuning: train the float model through the integers ``export`` will write.

``neurocompile finetune CHECKPOINT --out DIR`` loads a checkpoint (ours or the authors' Lightning
file), trains it with ``train``'s own loop (``models.train.fit``: AdamW, cosine schedule, state in
DIR/finetune-state.pt after every epoch, ``--resume`` bit for bit), and writes DIR/ckpt.pt in our
format after every epoch, its provenance (the source file and its digest, the options) in its meta.
The weights written are the best of the starting weights and every epoch's, by the integer accuracy
on held-out training samples (``selection``: at 8 bits one epoch can cost more than the rounding did).
The targets are the labels, or with ``distill`` a share of the starting float model's answers
(``soft_targets``).

In the forward pass the quantities the compiler rounds are rounded exactly as ``quantize`` rounds
them for the same options (``passes.quantizers.QUANTIZERS``), gradients straight through:

* a causal SpikingSSM layer that export lowers to a diagonal recurrence (``--ssm-lowering recurrent``, or
  ``auto`` where it chooses one): its decays (``--decay-bits``), input and output gains and D (the
  synapse width) as ``quantize.recurrent_coefficients`` rounds them, the forward value the kernel those
  integers realise (the state's and messages' rounding, which depends on the data, is not modelled);
* SSM kernels (``--kernel-bits``): the kernel the chip streams, D in its present tap (the two-sided
  kernel streamed causally), computed in float64 by the compiler's own functions and rounded per
  channel with error feedback (``quant.quantize_kernel_taps``).  SpikingSSM: the S4D kernel divided
  by the learnable threshold exp(ln_vth) (the threshold fold); P-SpikeSSM: the S4 DPLR kernel of
  every S4 layer (and reverse layer), the value rounded being the compiler's dense real recurrence
  (``materialize.streamed_kernel``) and the gradient the layer's own Woodbury kernel's;
* the mixers' Dense weights (``--weight-bits``, capped at the target's synapse width): SpikingSSM's
  GLU convolution, P-SpikeSSM's spike mixer;
* the linear encoder's weights per raw input level and its bias (``--weight-bits``, the synapse width):
  a mantissa per channel at 2**-e, e bounded below by the stream's fixed point
  (``passes.quantizers.fake_encoder``);
* the residual stream (``--act-bits``, its width): the encoder's output and every residual add land on
  the stream's per-channel fixed point, half up (``passes.quantizers.fake_stream``);
* P-SpikeSSM's firing probabilities (``--prob-bits``): p on the sampler's 2**-bits grid, half up, before
  it meets the uniform (``passes.quantizers.fake_probability``).

BatchNorms run on their running statistics throughout (frozen): export folds those statistics into
the samplers' affines (P-SpikeSSM) or the stream's affine, so a step must train against them.

Scales and exponents are recomputed from the current weights at every step, not frozen from a first
export: the compiler recomputes them at export, so the exponents a step trained against are the ones
the exported checkpoint gets, and a channel whose peak moves keeps its full mantissa range (a frozen
exponent would clip it, or waste bits, once the weights move away from the first export).  The
stream's fixed point (per channel), which the stream is rounded to and which bounds the encoder's
exponents from below, follows from every layer's worst-case range at once (the proof): it is
recompiled from the current weights every ``STREAM_REFRESH_STEPS`` steps and at each epoch's start
(a whole compile: 0.1-0.4 s on the Fashion examples), so a channel whose range crosses a power of two
trains at the resolution its export will get (with one frozen from the first export, two of the
SpikingSSM Fashion example's 64 channels lost a bit at ``--act-bits 8``).

Not rounded in the forward pass (the float model keeps them): the products inside an integer rule
(the sampler's and a stream affine's multipliers, whose error bound each export reports; GELU's Phi
and the GLU's sigmoid tables), an Embedding encoder's mantissas (their rounding onto the stream is modelled) and the decoder (16-bit readout), and the
LIF thresholds and decay (exact after the threshold fold).  SpikingSSM trains through the SDN
by default (the model's training neuron; ``neuron="lif"`` trains through the exact LIF the chip runs);
P-SpikeSSM samples its spikes from torch's RNG as in training.  The report gives the float accuracy
(exact LIF; P-SpikeSSM: the Monte-Carlo mean with its interval) and the integer accuracy (the emulator
on the exported program, as ``validate`` computes it) before and after.  Refused: a SpikingSSM prenorm
BatchNorm (it folds into the kernels, which the kernel quantiser does not model).
"""
from __future__ import annotations

import contextlib
import os
import time
import types
from dataclasses import asdict, dataclass

import numpy as np

STATE_FILE = "finetune-state.pt"
STREAM_REFRESH_STEPS = 8         # the stream's fixed point follows the weights every this many steps
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
    holdout: int | None = None      # the last N training samples choose the epoch written (None: 10 %, <= 1000)
    distill: float = 0.0            # the targets' share taken from the starting float model's softmax

    def __post_init__(self):
        if self.neuron not in NEURONS:
            raise ValueError(f"--neuron must be one of {', '.join(NEURONS)}, got {self.neuron!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.max_train < 0 or self.max_test < 0 or \
                (self.holdout is not None and self.holdout < 0):
            raise ValueError("--epochs and --batch-size must be >= 1, --max-train, --max-test and --holdout >= 0")
        if not 0.0 <= self.lr <= 10.0 or not 0.0 <= self.weight_decay <= 10.0:
            raise ValueError("--lr and --weight-decay must be in 0..10")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError("--distill must be in 0..1")

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
    if kind not in FAMILIES:
        return f"{kind} models are not supported"
    if kind == "spikingssm" and config.prenorm and config.norm == "batch":
        return "a prenorm BatchNorm folds into the kernels, which its quantiser does not model"
    return ""


def _streamed(K, D, bidirectional: bool):
    """Torch twin of ``materialize.streamed_kernel``: (ch, H, L) taps and D -> the (H, K) kernel the chip
    streams (the same array, differentiable)."""
    import torch

    L = K.shape[-1]
    if bidirectional:
        t = torch.cat([K[1][:, :L - 1].flip(-1), K[0]], dim=1)
        return torch.cat([t[:, :L - 1], t[:, L - 1:L] + D[:, None], t[:, L:]], dim=1)
    return torch.cat([K[0][:, :1] + D[:, None], K[0][:, 1:]], dim=1)


def _unstreamed(q, bidirectional: bool, L: int):
    """The streamed (H, K) kernel back to (ch, H, L) taps with D folded in (D = 0 for the convolution):
    the official two-sided layout, where k1[L-1] meets no input."""
    import torch

    if bidirectional:
        return torch.stack([q[:, L - 1:], torch.cat([q[:, :L - 1].flip(-1), torch.zeros_like(q[:, :1])], dim=1)])
    return q[None]


def _kernel_integers():
    from .ir import SSMConv
    from .passes.quantizers import QUANTIZERS
    return QUANTIZERS[SSMConv][1]


def quantized_kernel(layer, L: int, bits: int):
    """A SpikingSSM layer's LIF-input kernel rounded as export rounds it -> ((ch, H, L) torch kernel with
    D and the threshold folded in, straight-through gradients; (integer taps, exponents))."""
    import torch

    from .frontend import threshold_gain
    from .ir import ChannelAffine, SSMConv
    from .models.ssm_kernel import materialize_kernel
    from .passes.fold import conv_then_affine
    from .passes.materialize import two_sided_as_causal
    from .passes.quantizers import fake_quantize

    cfg = layer.cfg
    K = materialize_kernel({n: p.double() for n, p in layer.kernel.params().items()}, layer.kernel.variant, L,
                           dtype=torch.float64)        # the compiler's own function: value and gradient in one
    D = layer.D.reshape(-1).double()
    t = _streamed(K, D, cfg.bidirectional)
    k, d = K.detach().cpu().numpy(), D.detach().cpu().numpy()
    value, lag = two_sided_as_causal(k[0], k[1], d) if cfg.bidirectional else (t.detach().cpu().numpy(), 0)
    if cfg.learnable_vth:
        ln_vth = layer.ln_vth.double()
        value = conv_then_affine(SSMConv(value, lag, np.zeros((value.shape[0], 0))),
                                 ChannelAffine(threshold_gain(ln_vth.detach().cpu().numpy(), value.shape[0]),
                                               np.zeros(value.shape[0])), L).kernel
        t = t * torch.exp(-ln_vth).reshape(-1, 1)
    q, ints = fake_quantize(t, _kernel_integers(), bits, value)
    return _unstreamed(q, cfg.bidirectional, L), ints


def quantized_recurrent_kernel(layer, L: int, options, target):
    """A causal SpikingSSM layer that export lowers to a recurrence -> ((1, H, L) torch kernel, D and the
    threshold folded in, straight-through gradients; the recurrence's rounded coefficients, as
    ``quantize.recurrent_coefficients`` writes them).  The value is the kernel those coefficients
    realise (decays at ``--decay-bits``, gains and D at the synapse width); the gradient is the layer's."""
    import torch

    from .frontend import threshold_gain
    from .ir import ChannelAffine, S4DKernelParams
    from .models.ssm_kernel import materialize_kernel
    from .passes.fold import recurrence_then_affine
    from .passes.materialize import s4d_modes
    from .passes.quantize import recurrent_coefficients
    from .passes.quantizers import _straight_through, recurrent_kernel

    params = {n: p.double() for n, p in layer.kernel.params().items()}
    K = materialize_kernel(params, layer.kernel.variant, L, dtype=torch.float64)
    D = layer.D.reshape(-1).double()
    t = _streamed(K, D, False)
    op = s4d_modes(S4DKernelParams({n: p.detach().cpu() for n, p in params.items()}, layer.kernel.variant, False,
                                   D.detach().cpu().numpy()), {n: p.detach().cpu() for n, p in params.items()})
    if layer.cfg.learnable_vth:
        ln_vth = layer.ln_vth.double()
        op = recurrence_then_affine(op, ChannelAffine(threshold_gain(ln_vth.detach().cpu().numpy(), len(op.D)),
                                                      np.zeros(len(op.D))), L)
        t = t * torch.exp(-ln_vth).reshape(-1, 1)
    coefficients = recurrent_coefficients(op, options, target)
    return _unstreamed(_straight_through(t, recurrent_kernel(coefficients, L)), False, L), coefficients


def quantized_dplr_kernel(conv, L: int, bits: int, bidirectional: bool):
    """A P-SpikeSSM S4 layer's kernel (``FFTConvDPLR``) rounded as export rounds it -> ((ch, H, L) torch
    kernel with D folded in, straight-through gradients; (integer taps, exponents)).  The value rounded
    is the compiler's (the dense real recurrence, ``materialize.streamed_kernel``); the gradient flows
    through the layer's own kernel (the official Woodbury form), equal to it within float64 rounding."""
    from .ir import DPLRKernelParams
    from .passes.materialize import streamed_kernel
    from .passes.quantizers import fake_quantize

    K = conv.kernel(L)
    D = conv.D.reshape(-1).double()
    op = DPLRKernelParams({n: t.detach().cpu().numpy() for n, t in conv.kernel.params().items()}, bidirectional,
                          conv.D.detach().cpu().reshape(-1).numpy())
    value, _ = streamed_kernel(op, L)
    q, ints = fake_quantize(_streamed(K.double(), D, bidirectional), _kernel_integers(), bits, value)
    return _unstreamed(q, bidirectional, L), ints


def quantized_dense(weight, bits: int):
    """A mixer's Dense weight (out, in) rounded as export rounds it -> (torch weight, (mantissas, exponents))."""
    from .ir import Dense
    from .passes.quantizers import QUANTIZERS, fake_quantize

    q, ints = fake_quantize(weight.double(), QUANTIZERS[Dense][1], bits)
    return q.to(weight.dtype), ints


def quantized_weight(conv, bits: int):
    """A GLU mixer's Dense weight (2H, H, 1) rounded as export rounds it -> (torch weight, (mantissas, exponents))."""
    q, ints = quantized_dense(conv.weight[..., 0], bits)
    return q[..., None], ints


def _patch(module, name: str, fn, saved: list) -> None:
    """Replace ``module.name`` by ``fn`` bound to it, as an instance attribute (the state_dict is untouched);
    ``saved`` gets the call that undoes it."""
    module.__dict__[name] = types.MethodType(fn, module)
    saved.append(lambda: module.__dict__.pop(name, None))


def _spikingssm_quantisers(model, bits: dict, saved: list) -> tuple:
    """Every layer's LIF-input kernel (convolution taps, or a recurrence's coefficients where export lowers the
    layer to one) and GLU mixer weight.  -> (modules whose output is on the residual
    stream, modules whose input is): every GLU (the chip adds it, rounded onto the stream, to the stream)."""
    import torch

    from .models.ssm_kernel import ssm_convolution

    def lif_input(layer, u):
        if layer in recurrent:
            K, _ = quantized_recurrent_kernel(layer, u.shape[-1], bits["options"], bits["target"])
        else:
            K, _ = quantized_kernel(layer, u.shape[-1], bits["kernel"])
        return ssm_convolution(u, K.to(u.dtype), torch.zeros(1, K.shape[1], dtype=u.dtype, device=u.device))

    layers = list(model.backbone.s4_layers)
    chosen = lowerings(bits["program"], bits["options"], len(layers))
    recurrent = [layer for layer, lowering in zip(layers, chosen) if lowering == "recurrent"]

    def mixer(conv, x):
        w, _ = quantized_weight(conv, bits["weight"])
        return torch.nn.functional.conv1d(x, w.to(x.device), conv.bias)

    for layer in model.backbone.s4_layers:
        _patch(layer, "lif_input", lif_input, saved)
        _patch(layer.output_linear[0], "forward", mixer, saved)
    return [layer.output_linear for layer in model.backbone.s4_layers], []


def _pspikessm_quantisers(model, bits: dict, saved: list) -> tuple:
    """Every S4 layer's kernel (forward and reverse), every mixer's Dense weight and every sampler's
    probability.  -> (modules whose output is on the residual stream: every block, the final prenorm
    norm; modules whose input is: a post-norm, which reads the residual add)."""
    import torch

    from .models.dplr_kernel import fft_conv
    from .models.pspikessm import spike_sample
    from .passes.quantizers import fake_probability

    cfg = model.config

    def conv_forward(conv, u):
        K, _ = quantized_dplr_kernel(conv, min(u.shape[-1], conv.l_max), bits["kernel"], cfg.ssm_bidirectional)
        return conv.drop(fft_conv(u, K.to(u.dtype), torch.zeros(1, K.shape[1], dtype=u.dtype, device=u.device)))

    def mixer(linear, x):
        w, _ = quantized_dense(linear.weight, bits["weight"])
        return torch.nn.functional.linear(x, w.to(x.device), linear.bias)

    def sample(block, p, u):
        return spike_sample(fake_probability(p, bits["prob"]), u)

    for block in model.backbone.layers:
        for s4 in [block.layer] + ([block.reverse_layer] if cfg.bidirectional else []):
            _patch(s4.layer, "forward", conv_forward, saved)
        _patch(block.bidirectional_linear if cfg.bidirectional else block.bidirectional_linear1,
               "forward", mixer, saved)
        _patch(block, "sample", sample, saved)
    normed = cfg.norm != "none"
    outputs = list(model.backbone.layers) + ([model.backbone.norm] if normed and cfg.prenorm else [])
    return outputs, [block.norm for block in model.backbone.layers] if normed and not cfg.prenorm else []


FAMILIES = {"spikingssm": _spikingssm_quantisers, "pspikessm": _pspikessm_quantisers}


def _frozen_batchnorm(norm, x):
    """BatchNorm with its running statistics, in training too: export folds those statistics, so a step
    must train against them (batch statistics would move what the chip's affines compute)."""
    import torch
    return torch.nn.functional.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                          False, 0.0, norm.eps)


@dataclass
class StreamPoint:
    """The residual stream's per-channel fixed point (``stream_frac_bits``) the forward pass rounds to:
    export's, for the weights it was last computed from (``refresh``)."""
    frac: np.ndarray

    def refresh(self, model, kind: str, program, options, target) -> None:
        """Recompute it as export would for ``model``'s current weights: the proof sets it from every
        layer's worst-case range, so moving weights can move it.  Weights export would refuse keep the
        last one (the export after fine-tuning reports the refusal)."""
        from .errors import NeurocompileError
        from .frontend import frontend_for
        from .input_format import InputFormat
        from .pipeline import compile_graph

        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        try:
            graph = frontend_for(kind).import_graph(model.config.to_dict(), weights,
                                                    InputFormat.from_dict(program.model["input"]), source="fine-tuning")
            self.frac = np.asarray(compile_graph(graph, options, target).meta["stream_frac_bits"], dtype=np.int64)
        except NeurocompileError:
            pass


def _on_stream(outputs, inputs, encoder, stream: StreamPoint, saved: list) -> None:
    """Round what ``outputs`` (and the ``encoder``, channels last) write and what ``inputs`` read onto the
    residual stream's fixed point ``stream.frac`` (forward hooks, undone through ``saved``)."""
    from .passes.quantizers import fake_stream

    hooks = [encoder.register_forward_hook(lambda m, args, out: fake_stream(out, stream.frac, -1))]
    hooks += [m.register_forward_hook(lambda m, args, out: fake_stream(out, stream.frac, 1)) for m in outputs]
    hooks += [m.register_forward_pre_hook(lambda m, args: (fake_stream(args[0], stream.frac, 1), *args[1:]))
              for m in inputs]
    saved += [h.remove for h in hooks]


def lowerings(program, options, n_layers: int) -> list:
    """Per SSM layer, in order: 'conv' or 'recurrent', as ``program`` lowered it (without one: as
    ``options.ssm_lowering`` names it, 'auto' read as 'conv')."""
    from .ir import IntSSMConv, IntSSMRecurrent
    if program is None:
        return ["recurrent" if options.ssm_lowering == "recurrent" else "conv"] * n_layers
    return ["recurrent" if isinstance(n.op, IntSSMRecurrent) else "conv" for n in program.nodes
            if isinstance(n.op, (IntSSMConv, IntSSMRecurrent))]


@contextlib.contextmanager
def fake_quantized(model, options, target, program=None):
    """Inside: every SSM kernel, mixer weight and sampler probability of ``model`` (either family) is
    rounded as export rounds it, recomputed from the current weights at every call, BatchNorms use their
    running statistics, and with the compiled ``program`` (its input format and stream fixed point) the
    residual stream is rounded to its fixed point and the linear encoder's weights are rounded too.
    Yields the ``StreamPoint`` (None without a program), for the caller to refresh as the weights move."""
    import torch

    from .input_format import InputFormat
    from .ir import Dense, SSMConv
    from .passes.quantizers import fake_encoder, option_bits

    bits = {"kernel": option_bits(SSMConv, options, target), "weight": option_bits(Dense, options, target),
            "prob": options.prob_bits, "options": options, "target": target, "program": program}
    saved = []

    def encoder(linear, x):
        w, b, _ = fake_encoder(linear.weight, linear.bias, fmt, stream.frac, bits["weight"], target.register_max)
        return torch.nn.functional.linear(x, w.to(x.dtype), b.to(x.dtype))

    from .models.pspikessm import PSpikeSSM
    outputs, inputs = FAMILIES["pspikessm" if isinstance(model, PSpikeSSM) else "spikingssm"](model, bits, saved)
    stream = None
    if program is not None:
        stream = StreamPoint(np.asarray(program.report["stream_frac_bits"], dtype=np.int64))
        fmt = InputFormat.from_dict(program.model["input"])
        if fmt.kind == "levels":
            _patch(model.encoder, "forward", encoder, saved)
        _on_stream(outputs, inputs, model.encoder, stream, saved)
    for norm in model.modules():
        if isinstance(norm, torch.nn.BatchNorm1d):
            _patch(norm, "forward", _frozen_batchnorm, saved)
    try:
        yield stream
    finally:
        for undo in reversed(saved):
            undo()


def soft_targets(model, xt, y, share: float, batch_size: int, device, forward):
    """Distillation as soft labels: (1 - share) * one-hot(y) + share * softmax of the starting float model's
    logits (``forward``, eval mode, no rounding), per training sample, computed once before training.
    Cross-entropy against them is (1 - share) * CE(labels) + share * CE(teacher): the rounded model learns
    to give the float model's answers, the ones PTQ's spikes already mostly agree with, rather than
    re-fitting the labels of a few thousand samples (which at 8 bits moves it more than the rounding)."""
    import torch

    model.eval()
    with torch.no_grad():
        probs = torch.cat([torch.softmax(forward(xt[i:i + batch_size].to(device)).double(), -1).cpu()
                           for i in range(0, len(xt), batch_size)])
    onehot = torch.nn.functional.one_hot(y.long(), probs.shape[1]).double()
    return ((1 - share) * onehot + share * probs).float()


def _generated_length(dataset: str, program) -> int | None:
    """The length to generate the built-in listops data at: the model's own (an authors' file storing
    L = 64 fine-tunes on 64-step data; validate takes it as --seq-len); None for data that is read."""
    return program.seq_len if dataset == "listops" else None


def accuracy(checkpoint: str, program, dataset: str, max_test: int, device) -> dict:
    """Float and integer accuracy on the test split, as ``validate`` computes them: ``program``
    (compiled from ``checkpoint``) run in the emulator, no Lava.  -> {"float_lif" | "float_mc",
    "integer", "samples"}, and for a stochastic model (P-SpikeSSM: Monte-Carlo means over validate's
    default passes) the 95 % intervals "float_ci", "integer_ci"."""
    from .api import run_validation

    report = run_validation(checkpoint, program, dataset, max_samples=max_test, lava_samples=0,
                            device=device, seq_len=_generated_length(dataset, program)).report
    acc = report["accuracy"]
    if "float_ci" in acc:
        return {"float_mc": acc["float"], "integer": acc["integer"], "float_ci": acc["float_ci"],
                "integer_ci": acc["integer_ci"], "mc_passes": report.get("mc_passes"), "samples": report["samples"]}
    return {"float_lif": acc["float"], "integer": acc["integer"], "samples": report["samples"]}


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
    from .input_format import InputFormat
    from .selection import BestEpoch, holdout_size, integer_scorer
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
    why = supported(kind, config, options) or \
        ("--neuron applies to SpikingSSM only (P-SpikeSSM samples its spikes)" if kind == "pspikessm" and
         run.neuron != "sdn" else "")
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
    train, values, raw = load_data(program, dataset, "train", _generated_length(dataset, program))
    held = holdout_size(run.holdout, len(train.y))          # the last `held` samples choose, the rest train
    n_fit = len(train.y) - held if not run.max_train else min(run.max_train, len(train.y) - held)
    values, y = values[:n_fit], train.y[:n_fit]
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
    stochastic = kind == "pspikessm"
    targets = torch.as_tensor(y)
    if run.distill:              # before the quantisers: the teacher is the float model as it starts
        targets = soft_targets(model, xt, targets, run.distill, run.batch_size, torch_device,
                               (lambda xb: model(xb)) if stochastic else (lambda xb: model(xb, neuron=run.neuron)))
    record = {"dataset": dataset, "seed": run.seed, "epochs": run.epochs,
              "train_neuron": None if stochastic else run.neuron,
              "command": " ".join(["neurocompile"] + list(command or ["(Python API) finetune"])),
              "finetune": {"source": source, "options": key, "target": target.name},
              "device": str(torch_device), "torch": str(torch.__version__)}

    best = None
    if held:
        first = len(train.y) - held
        best = BestEpoch(model, integer_scorer(kind, model.config.to_dict(), InputFormat.from_dict(program.model["input"]),
                                               options, target, raw[first:], train.y[first:], first, run.seed, device))
        if not resume:
            best.consider(0)                   # the starting weights compete too (a resumed run restores its scores)

    def save(epoch, train_loss, metrics=None):
        """DIR/ckpt.pt: the chosen weights so far (without held-out samples: the last epoch's)."""
        chosen = model if best is None or best.best_epoch in (None, epoch) else \
            build_model(config, best.best_weights, kind)
        save_checkpoint(path, chosen, {**record, "epochs_done": epoch,
                                       **({"chosen": {"holdout": held, **best.chosen()}} if best else {}),
                                       "metrics": metrics or {"train_loss": train_loss}}, kind=kind)

    t0 = time.time()
    with fake_quantized(model, options, target, program) as stream:
        steps = [0]                  # within the epoch: the state is saved, and resumed, at epoch ends

        def forward(xb):
            if steps[0] % STREAM_REFRESH_STEPS == 0:
                stream.refresh(model, kind, program, options, target)
            steps[0] += 1
            return model(xb) if stochastic else model(xb, neuron=run.neuron)

        def epoch_done(epoch, train_loss):
            steps[0] = 0
            save(epoch, train_loss)
        train_loss, seconds = fit(model, forward, xt, targets,
                                  epochs=run.epochs, batch_size=run.batch_size, lr=run.lr,
                                  weight_decay=run.weight_decay, seed=run.seed, device=torch_device,
                                  state_path=state_path, run_args=key, resume=resume, show=show, on_epoch=epoch_done,
                                  extra=best)
    model.eval()
    if best is not None and best.best_epoch not in (None, run.epochs):
        model.load_state_dict(best.best_weights)
    save(run.epochs, train_loss)           # also when a resumed run had nothing left to train
    after = accuracy(path, compile_checkpoint(path, options, target, input_format=input_format, seq_len=seq_len,
                                              warn=lambda _: None), dataset, run.max_test, device)
    metrics = {"train_loss": train_loss, "n_train": int(len(y)), "n_test": int(after.pop("samples")),
               "train_seconds": round(seconds, 1), "before": {k: v for k, v in before.items() if k != "samples"},
               "after": after}
    save(run.epochs, train_loss, metrics)
    return {"checkpoint": path, "source": checkpoint, "dataset": dataset, "options": options.to_dict(),
            "metrics": metrics, "chosen": {"holdout": held, **best.chosen()} if best else None,
            "seconds": round(time.time() - t0, 1)}


def _narrowed(o: dict) -> str:
    """The options of ``o`` besides kernel and weight bits, where they are not the defaults."""
    from .options import CompileOptions
    default = CompileOptions()
    return "".join(f" --{k.replace('_', '-')} {o[k]}" for k in ("act_bits", "prob_bits", "ssm_lowering", "decay_bits")
                   if o.get(k) is not None and o[k] != getattr(default, k))


def _chosen_lines(chosen) -> list:
    """How the written epoch was chosen (``selection.BestEpoch``), or how to have it chosen."""
    if not chosen:
        return ["  the last epoch is written (--holdout 0: no held-out samples to choose on)"]
    scores = ", ".join(f"{'start' if e == 0 else f'epoch {e}'} " + ("refused by export" if a is None else f"{100 * a:.2f} %")
                       for e, a in chosen["scores"])
    pick = ("the starting weights: no epoch beat them, so the checkpoint written is the original's weights"
            if chosen["epoch"] == 0 else f"epoch {chosen['epoch']}")
    return [f"  chosen by the integer accuracy on the last {chosen['holdout']} training samples (not trained on): "
            f"{scores} -> {pick}"]


def format_report(r: dict) -> str:
    m, o = r["metrics"], r["options"]
    pct = lambda v: f"{100 * v:6.2f} %"      # noqa: E731
    mc = "float_mc" in m["before"]
    fl = "float_mc" if mc else "float_lif"

    def row(label, a):
        line = f"  {label:<34}{pct(a[fl]):>18}{pct(a['integer']):>20}"
        if mc:
            line += "   95 % intervals " + ", ".join(f"[{100 * a[k][0]:.2f}, {100 * a[k][1]:.2f}]"
                                                   for k in ("float_ci", "integer_ci"))
        return line
    head = "float (MC mean)" if mc else "float (exact LIF)"
    passes = f", Monte-Carlo means over {m['before'].get('mc_passes')} passes" if mc else ""
    return "\n".join([
        f"wrote {r['checkpoint']}: fine-tuned {r['source']} at --kernel-bits {o['kernel_bits']} --weight-bits "
        f"{o['weight_bits']}{_narrowed(o)} on {m['n_train']} {r['dataset']} training samples (train loss {m['train_loss']:.4f}, "
        f"{m['train_seconds']:.0f} s)",
        f"  accuracy on {m['n_test']} test samples{passes}",
        f"  {'':<34}{head:>18}{'integer (emulator)':>20}",
        row("before (PTQ)", m["before"]), row("after fine-tuning", m["after"])]
        + _chosen_lines(r.get("chosen"))
        + ([f"  WARNING: fine-tuning lowered the integer accuracy on these samples ({100 * m['before']['integer']:.2f} "
            f"-> {100 * m['after']['integer']:.2f} %): keep the original checkpoint, or fine-tune with a lower --lr "
            "or more training samples"]
           if m["after"]["integer"] < m["before"]["integer"] else []))
