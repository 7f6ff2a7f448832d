"""Train a SpikingSSM or a P-SpikeSSM on a built-in dataset and write a neurocompile checkpoint (DIR/ckpt.pt).

    python -m neurocompile.models.train --dataset digits --out examples/digits --epochs 40
    python -m neurocompile.models.train --model pspikessm --dataset digits --out runs/pspike --prenorm

P-SpikeSSM samples its spikes at random in every forward pass (training and test alike, as the
official code), so its test accuracy is a Monte-Carlo figure: the mean (and standard deviation)
of the accuracy over ``--mc-passes`` independent passes over the test set.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .checkpoint import save_checkpoint
from .config import SpikingSSMConfig
from .pspikessm import PSpikeSSM, PSpikeSSMConfig
from .spikingssm import SpikingSSM


def build_parser() -> argparse.ArgumentParser:
    from ..cli import HelpFormatter, Parser, bounded

    p = Parser(prog="neurocompile train", formatter_class=HelpFormatter,
                                description="Train a SpikingSSM (SDN neuron by default) or a P-SpikeSSM (--model "
                                "pspikessm) and write DIR/ckpt.pt in the neurocompile checkpoint format.  The training "
                                f"state is saved to DIR/{STATE_FILE} after every epoch and every {SAVE_SECONDS / 60:.0f} minutes within one; "
                                "--resume continues from it.")
    p.add_argument("--model", choices=["spikingssm", "pspikessm"], default="spikingssm", help="model family")
    p.add_argument("--dataset", required=True, choices=["digits", "fashion-mnist", "fashion-mnist-32", "listops"],
                   help="listops: token inputs, the model gets an Embedding encoder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (DIR/ckpt.pt is written)")
    p.add_argument("--resume", action="store_true",
                   help=f"continue the run saved in DIR/{STATE_FILE} (same options; gives the same weights as an "
                        "uninterrupted run)")
    p.add_argument("--d-model", type=bounded(int, 1, 4096), default=64, help="channels H (1..4096)")
    p.add_argument("--n-layers", type=bounded(int, 1, 64), default=2, help="layers (1..64)")
    p.add_argument("--d-state", type=bounded(int, 2, 1024), default=32, help="SSM state size N (2..1024)")
    p.add_argument("--epochs", type=bounded(int, 1, 100_000), default=40,
                   help="training epochs (1..100000, default 40). What the defaults cost and reach, measured on a 2-core CPU for the "
                        "examples (examples/*/TRAINING.md): digits, 40 epochs, 72 s, 97.8 %% (exact LIF); P-SpikeSSM "
                        "digits, 60 epochs, 96 s on a quiet machine, 97.7 %%; listops (--d-state 4 --bidirectional "
                        "--kernel diag_b), 40 epochs, 952 s, ~31 %%; fashion-mnist, 2 epochs on 40,000 images, 2169 s, "
                        "82 %%. The first epoch prints its measured time and the expected total")
    p.add_argument("--batch-size", type=bounded(int, 1, 65536), default=64, help="training batch size (1..65536)")
    p.add_argument("--lr", type=bounded(float, 0.0, 10.0), default=0.01,
                   help="AdamW learning rate, 0..10 (SSM kernel parameters: min(lr, 0.001))")
    p.add_argument("--weight-decay", type=bounded(float, 0.0, 10.0), default=0.01,
                   help="AdamW weight decay, 0..10 (not on SSM, norm, D, ln_vth)")
    p.add_argument("--dropout", type=bounded(float, 0.0, 0.99), default=0.0, help="dropout probability (0..0.99)")
    # numpy's global seed takes 32 bits: a larger seed would be refused by numpy, not by us
    p.add_argument("--seed", type=bounded(int, 0, 2 ** 32 - 1), default=0,
                   help="seed of the initialisation, the batch order and the spikes (0..2**32-1)")
    p.add_argument("--norm", choices=["batch", "layer", "none"], default=None,
                   help="normalisation (default: layer for SpikingSSM, batch for P-SpikeSSM)")
    p.add_argument("--prenorm", action="store_true", help="normalise before each block's SSM (default: after)")
    p.add_argument("--bidirectional", action="store_true",
                   help="SpikingSSM: two-sided kernels; P-SpikeSSM: bidirectional blocks (a second, reverse S4 layer)")
    p.add_argument("--max-train", type=bounded(int, 0, 10 ** 9), default=0, metavar="N",
                   help="train on the first N samples only (0: all)")
    p.add_argument("--max-test", type=bounded(int, 0, 10 ** 9), default=0, metavar="N",
                   help="evaluate on the first N test samples only (0: all)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="torch device (auto: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    s = p.add_argument_group("SpikingSSM (--model spikingssm)")
    s.add_argument("--neuron", choices=["sdn", "lif"], default="sdn", help="neuron used while training")
    s.add_argument("--kernel", choices=["s4d", "diag_b"], default="s4d",
                   help="kernel parameterisation (diag_b: trainable B, s4 SSMKernelDiag)")
    s.add_argument("--shared-vth", action="store_true", help="one learnable threshold per layer")
    g = p.add_argument_group("P-SpikeSSM (--model pspikessm)")
    g.add_argument("--causal", action="store_true",
                   help="one-sided (causal) SSM kernels instead of the official two-sided ones")
    g.add_argument("--no-residual", action="store_true", help="no residual connection (official residual: null)")
    g.add_argument("--n-ssm", type=bounded(int, 1, 4096), default=1, help="independent (A,B,P) copies per layer (1: shared; 1..4096)")
    g.add_argument("--mc-passes", type=bounded(int, 1, 1000), default=8, metavar="K",
                   help="test accuracy = mean over K random passes (1..1000)")
    return p


STATE_FILE = "train-state.pt"
SAVE_SECONDS = 600.0      # within an epoch, the state is saved at most this often
# options of one family only: given for the other, they are refused rather than ignored
ONLY_FOR = {"pspikessm": ("causal", "no_residual", "n_ssm", "mc_passes"),
            "spikingssm": ("neuron", "kernel", "shared_vth")}
# options that do not change the weights a run computes: free to differ when resuming
RESUME_FREE = ("resume", "no_progress", "device", "max_test", "out")


def model_inputs(x: np.ndarray, levels) -> torch.Tensor:
    """Dataset samples -> what the model reads: token ids (n, L) long, or levels / levels as float32."""
    if levels is None:
        return torch.as_tensor(np.asarray(x)[..., 0] if np.ndim(x) == 3 else x, dtype=torch.long)
    return torch.as_tensor(np.asarray(x).astype(np.float32) / levels)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def make_optimizer(model: SpikingSSM, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; SSM kernel A/dt(/B) at lr min(lr, 0.001) without weight decay (s4 convention)."""
    ssm = {id(p) for _, p in model.ssm_parameters()}
    ssm_params = [p for p in model.parameters() if p.requires_grad and id(p) in ssm]
    no_wd = [p for n, p in model.named_parameters()
             if p.requires_grad and id(p) not in ssm and (p.dim() < 2 or n.endswith("ln_vth") or n.endswith(".D"))]
    no_wd_ids = {id(p) for p in no_wd}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ssm and id(p) not in no_wd_ids]
    return torch.optim.AdamW([{"params": rest, "weight_decay": weight_decay},
                              {"params": no_wd, "weight_decay": 0.0},
                              {"params": ssm_params, "lr": min(lr, 0.001), "weight_decay": 0.0}], lr=lr)


@torch.no_grad()
def evaluate(model: SpikingSSM, x: np.ndarray, y: np.ndarray, levels: int, neuron: str, device,
             batch_size: int = 256, progress: bool = False) -> float:
    model.eval()
    correct = 0
    starts = range(0, len(y), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=f"test ({neuron})", unit="batch", leave=False)
    for s in starts:
        xb = model_inputs(x[s:s + batch_size], levels).to(device)
        pred = model(xb, neuron=neuron).argmax(-1).cpu().numpy()
        correct += int((pred == y[s:s + batch_size]).sum())
    return correct / max(1, len(y))


@torch.no_grad()
def evaluate_mc(model: PSpikeSSM, x: np.ndarray, y: np.ndarray, levels: int, device, passes: int = 8,
                seed: int = 0, batch_size: int = 256, progress: bool = False) -> dict:
    """Monte-Carlo test accuracy of a P-SpikeSSM (random spikes in every pass).

    Runs ``passes`` independent passes over the test set (RNG forked and seeded with ``seed``, so
    the figure is reproducible and training's RNG is untouched).  Returns the per-pass accuracies,
    their mean and sample standard deviation, the accuracy of the pass-averaged softmax, and the
    mean firing rate of every spike population (over all passes)."""
    model.eval()
    n = len(y)
    accs, probs, rates = [], torch.zeros(n, model.config.d_output, dtype=torch.float64), {}
    bars = None
    if progress:
        from tqdm import tqdm
        bars = tqdm(total=passes * math.ceil(n / batch_size), desc="test (MC passes)", unit="batch", leave=False)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for k in range(passes):
            correct = 0
            for s in range(0, n, batch_size):
                xb = model_inputs(x[s:s + batch_size], levels).to(device)
                logits, rec = model(xb, record=True)
                pred = logits.argmax(-1).cpu().numpy()
                correct += int((pred == y[s:s + batch_size]).sum())
                probs[s:s + len(pred)] += torch.softmax(logits.double(), -1).cpu()
                for name, t in rec.items():
                    if ".s_" in name:
                        tot, cnt = rates.get(name, (0.0, 0))
                        rates[name] = (tot + float(t.sum()), cnt + t.numel())
                if bars is not None:
                    bars.update(1)
            accs.append(correct / max(1, n))
    if bars is not None:
        bars.close()
    ensemble = float((probs.argmax(-1).numpy() == y).mean()) if n else 0.0
    return {"test_acc_mc": float(np.mean(accs)),
            "test_acc_mc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "test_acc_passes": [float(a) for a in accs], "test_acc_mc_ensemble": ensemble,
            "spike_rates": {k: v[0] / max(1, v[1]) for k, v in sorted(rates.items())}}


class Progress(NamedTuple):
    """Where a saved run stands: ``epoch`` epochs done and ``step`` batches of the next."""
    epoch: int
    step: int
    epoch_generator: object      # the batch-order generator's state before that epoch's order was drawn
    partial: tuple               # (loss sum, samples) of the epoch so far
    train_loss: float
    seconds: float


def save_train_state(path: str, run_args: dict, epoch: int, train_loss: float, seconds: float, model, opt, sched,
                     gen: torch.Generator, device, *, step: int = 0, epoch_gen=None, partial=(0.0, 0),
                     extra=None) -> None:
    """Everything a run needs to continue bit for bit: weights, optimizer and schedule, the batch-order
    generator and torch's global RNG (dropout, stochastic spikes).  ``epoch`` epochs are done, and
    ``step`` batches of the next one (mid-epoch: ``epoch_gen`` is the generator's state before that
    epoch's batch order was drawn, ``partial`` the epoch's running loss sum and sample count);
    ``extra``: the caller's own state (tensors, numbers, strings), given back by ``load_train_state``.
    Written atomically, so an interrupted run leaves the previous state intact; and kept when the
    command is ended by a signal or Ctrl-C (which removes the command's other outputs)."""
    from ..fileio import write_atomic

    state = {"format": "neurocompile-train-state", "version": 2, "args": run_args, "epoch": epoch,
             "step": step, "epoch_generator": epoch_gen if step else None,
             "partial_loss": float(partial[0]), "partial_count": int(partial[1]),
             "train_loss": train_loss, "seconds": seconds,
             "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "generator": gen.get_state(), "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None, "extra": extra}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, lambda fh: torch.save(state, fh), survives=True)   # what --resume needs after a kill


def load_train_state(path: str, run_args: dict, model, opt, sched, gen: torch.Generator, device, extra=None):
    """Restore ``save_train_state``'s file (read without running pickled code) -> ``Progress``; ``extra``
    (an object with ``load_state_dict``) gets the caller's state saved with it."""
    from ..errors import CheckpointError
    from . import torchzip

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no saved training state to resume (train without --resume first)")
    try:
        state = torchzip.plain(torchzip.load(path))
    except torchzip.ArchiveError as exc:
        raise CheckpointError(f"{path}: unreadable training state: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != "neurocompile-train-state" or \
            state.get("version") not in (1, 2):
        raise CheckpointError(f"{path}: not a neurocompile training state")
    saved = state.get("args", {})
    changed = [k for k in sorted(set(saved) | set(run_args)) if saved.get(k) != run_args.get(k)]
    if changed:
        k = changed[0]
        raise CheckpointError(f"{path}: saved by a run with --{k.replace('_', '-')} {saved.get(k)!r}, not "
                              f"{run_args.get(k)!r}: resume with the same options")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if extra is not None:
            extra.load_state_dict(state["extra"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: corrupt training state ({str(exc).splitlines()[0][:200]})") from None
    step = int(state.get("step", 0))
    return Progress(int(state["epoch"]), step, state.get("epoch_generator") if step else None,
                    (float(state.get("partial_loss", 0.0)), int(state.get("partial_count", 0))),
                    float(state["train_loss"]), float(state.get("seconds", 0.0)))



def fit(model, forward, xt: torch.Tensor, yt: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
        weight_decay: float, seed: int, device, state_path: str, run_args: dict, resume: bool = False,
        show: bool = False, on_epoch=None, save_seconds: float | None = None, extra=None):
    """The training loop of ``train`` and ``finetune``: AdamW (``make_optimizer``) under a cosine
    schedule, batches in the order of a generator seeded with ``seed``, the state saved to
    ``state_path`` after every epoch and, within an epoch, after the first batch that ends
    ``save_seconds`` (default ``SAVE_SECONDS``) after the last save (an epoch of a large model takes
    hours on a CPU);
    ``resume`` continues from it, bit for bit, mid-epoch included.  ``forward(xb)`` -> logits;
    ``on_epoch(epoch, train_loss)`` runs after each epoch's state is saved.  ``extra``: the caller's
    own state, saved with the run's and restored on resume (``state_dict()``, ``load_state_dict(d)``),
    whose ``epoch_end(epoch)`` runs before each epoch's state is saved (a kill after the save cannot
    lose what it recorded).
    -> (last epoch's train loss, seconds trained)."""
    from tqdm import tqdm

    save_seconds = SAVE_SECONDS if save_seconds is None else save_seconds
    opt = make_optimizer(model, lr, weight_decay)
    steps_per_epoch = math.ceil(len(yt) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    at = Progress(0, 0, None, (0.0, 0), float("nan"), 0.0)
    if resume:
        at = load_train_state(state_path, run_args, model, opt, sched, gen, device, extra)
        where = f" and {at.step}/{steps_per_epoch} batches of epoch {at.epoch + 1}" if at.step else ""
        print(f"resuming {state_path} after epoch {at.epoch}/{epochs}{where}", flush=True)
    first, train_loss = at.epoch, at.train_loss
    t0 = time.time() - at.seconds
    bar = tqdm(range(first, epochs), desc="epochs", unit="epoch", disable=not show, initial=first, total=epochs)
    for epoch in bar:
        epoch_t0 = time.time()
        model.train()
        start, (tot, n) = (at.step, at.partial) if epoch == first else (0, (0.0, 0))
        gen_before = gen.get_state()
        if start:
            # the batch order this epoch drew before the stop; the generator ends where it ended then
            rng_now = gen.get_state()
            gen.set_state(at.epoch_generator)
            gen_before = gen.get_state()
            perm = torch.randperm(len(yt), generator=gen)
            if not torch.equal(gen.get_state(), rng_now):
                raise RuntimeError(f"{state_path}: the saved batch-order generator does not match its epoch")
        else:
            perm = torch.randperm(len(yt), generator=gen)
        last_save = time.time()
        batches = tqdm(range(start, steps_per_epoch), desc=f"epoch {epoch + 1}", unit="batch", leave=False,
                       disable=not show, initial=start, total=steps_per_epoch)
        for b in batches:
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            loss = loss_fn(forward(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
            batches.set_postfix(loss=f"{loss.item():.3f}")
            if b + 1 < steps_per_epoch and time.time() - last_save >= save_seconds:
                save_train_state(state_path, run_args, epoch, train_loss, time.time() - t0, model, opt, sched, gen,
                                 device, step=b + 1, epoch_gen=gen_before, partial=(tot, n),
                                 extra=None if extra is None else extra.state_dict())
                last_save = time.time()
        train_loss = tot / max(1, n)
        bar.set_postfix(loss=f"{train_loss:.4f}")
        if extra is not None:
            extra.epoch_end(epoch + 1)
        save_train_state(state_path, run_args, epoch + 1, train_loss, time.time() - t0, model, opt, sched, gen, device,
                         extra=None if extra is None else extra.state_dict())
        if on_epoch is not None:
            on_epoch(epoch + 1, train_loss)
        if not show:
            print(f"epoch {epoch + 1}/{epochs} train_loss {train_loss:.4f} ({time.time() - t0:.0f} s)", flush=True)
        if epoch == first and not start:
            _print_expected_time(time.time() - epoch_t0, epochs - first, show)
    return train_loss, time.time() - t0


def main(argv=None) -> int:
    from ..datasets import load_dataset

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..cli import given_options
    given = given_options(build_parser, argv)
    for family, names in ONLY_FOR.items():
        wrong = [n for n in names if n in given and args.model != family]
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} applies to --model {family} only, not --model {args.model}")
    device = _device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    train, test = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    xtr, ytr = train.x, train.y
    if args.max_train:
        xtr, ytr = xtr[:args.max_train], ytr[:args.max_train]
    xte, yte = test.x, test.y
    if args.max_test:
        xte, yte = xte[:args.max_test], yte[:args.max_test]
    n_classes = int(max(ytr.max(), yte.max()) + 1)
    tokens = train.levels is None
    encoder = dict(encoder="embedding", n_tokens=int(train.vocab or xtr.max() + 1)) if tokens else \
        dict(input_levels=int(train.levels))
    if args.model == "spikingssm":
        if args.norm == "none":
            parser.error("--norm none applies to --model pspikessm only (SpikingSSM has layer or batch norms)")
        cfg = SpikingSSMConfig(d_input=int(xtr.shape[2]), d_output=n_classes, d_model=args.d_model,
                               n_layers=args.n_layers, d_state=args.d_state, l_max=int(xtr.shape[1]),
                               kernel=args.kernel, dropout=args.dropout, bidirectional=args.bidirectional,
                               shared_vth=args.shared_vth, prenorm=args.prenorm, norm=args.norm or "layer", **encoder)
        model = SpikingSSM(cfg).to(device)
        forward = lambda xb: model(xb, neuron=args.neuron)       # noqa: E731
    else:
        cfg = PSpikeSSMConfig(d_input=int(xtr.shape[2]), d_output=n_classes, d_model=args.d_model,
                              n_layers=args.n_layers, d_state=args.d_state, l_max=int(xtr.shape[1]),
                              bidirectional=args.bidirectional, ssm_bidirectional=not args.causal,
                              n_ssm=args.n_ssm, prenorm=args.prenorm, norm=args.norm or "batch",
                              residual=not args.no_residual, dropout=args.dropout, **encoder)
        model = PSpikeSSM(cfg).to(device)
        forward = model
    show = not args.no_progress
    run_args = {k: v for k, v in sorted(vars(args).items()) if k not in RESUME_FREE}
    train_loss, train_time = fit(model, forward, model_inputs(xtr, train.levels), torch.as_tensor(ytr),
                                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 weight_decay=args.weight_decay, seed=args.seed, device=device,
                                 state_path=os.path.join(args.out, STATE_FILE), run_args=run_args,
                                 resume=args.resume, show=show)
    if args.model == "pspikessm":
        return _finish_pspike(args, argv, model, xte, yte, test.levels, device, show, train_loss, train_time, len(ytr),
                              n_classes)
    acc_sdn = evaluate(model, xte, yte, test.levels, "sdn", device, progress=show)
    acc_lif = evaluate(model, xte, yte, test.levels, "lif", device, progress=show)
    metrics = {"test_acc_sdn": acc_sdn, "test_acc_lif": acc_lif, "train_loss": train_loss,
               "n_train": int(len(ytr)), "n_test": int(len(yte)), "train_seconds": round(train_time, 1)}
    meta = {"dataset": args.dataset, "seed": args.seed,
            "command": "neurocompile train " + " ".join(argv), "argv": argv,
            "metrics": metrics, "epochs": args.epochs, "train_neuron": args.neuron,
            "device": str(device), "torch": str(torch.__version__)}
    path = os.path.join(args.out, "ckpt.pt")
    save_checkpoint(path, model.cpu(), meta)
    print(f"wrote {path}: test accuracy {100 * acc_sdn:.2f} % (SDN), {100 * acc_lif:.2f} % (exact LIF); "
          f"train loss {train_loss:.4f}; {train_time:.0f} s training")
    _warn_near_chance(acc_lif, n_classes, args.epochs)
    return 0


def _print_expected_time(epoch_s: float, epochs_left: int, show: bool) -> None:
    """After this run's first epoch: its time, measured here, and the run's expected total (an estimate)."""
    line = (f"first epoch: {epoch_s:.1f} s (measured here); expected for the {epochs_left} epoch(s) of this run: "
            f"~{epoch_s * epochs_left:.0f} s (estimate: first epoch x epochs)")
    if show:
        from tqdm import tqdm
        tqdm.write(line)
    else:
        print(line, flush=True)


def _warn_near_chance(accuracy: float, n_classes: int, epochs: int) -> None:
    from ..verdict import near_chance
    if near_chance(accuracy, n_classes):
        print(f"neurocompile: warning: the final test accuracy {100 * accuracy:.2f} % is near chance "
              f"({100 / n_classes:.1f} % with {n_classes} classes) after {epochs} epoch(s): train longer (--epochs)",
              file=sys.stderr)


def _finish_pspike(args, argv, model, xte, yte, levels, device, show, train_loss, train_time, n_train,
                   n_classes) -> int:
    t0 = time.time()
    mc = evaluate_mc(model, xte, yte, levels, device, passes=args.mc_passes, seed=args.seed, progress=show)
    metrics = {"test_acc_mc": mc["test_acc_mc"], "test_acc_mc_std": mc["test_acc_mc_std"],
               "test_acc_passes": mc["test_acc_passes"], "test_acc_mc_ensemble": mc["test_acc_mc_ensemble"],
               "mc_passes": args.mc_passes, "mc_seed": args.seed, "spike_rates": mc["spike_rates"],
               "train_loss": train_loss, "n_train": int(n_train), "n_test": int(len(yte)),
               "train_seconds": round(train_time, 1), "eval_seconds": round(time.time() - t0, 1)}
    meta = {"dataset": args.dataset, "seed": args.seed, "model": "pspikessm",
            "command": "neurocompile train " + " ".join(argv), "argv": argv,
            "metrics": metrics, "epochs": args.epochs, "train_neuron": "stochastic (Bernoulli spike sampler)",
            "device": str(device), "torch": str(torch.__version__)}
    path = os.path.join(args.out, "ckpt.pt")
    save_checkpoint(path, model.cpu(), meta)
    print(f"wrote {path}: test accuracy {100 * mc['test_acc_mc']:.2f} +- {100 * mc['test_acc_mc_std']:.2f} % "
          f"(mean +- std over {args.mc_passes} random passes; pass-averaged softmax "
          f"{100 * mc['test_acc_mc_ensemble']:.2f} %); train loss {train_loss:.4f}; {train_time:.0f} s training")
    _warn_near_chance(mc["test_acc_mc"], n_classes, args.epochs)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
