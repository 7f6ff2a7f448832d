"""Keep the best: fine-tuning hands back the weights whose integer program is most accurate on
training samples it did not train on (the held-out samples), the starting weights included.

A fine-tuning step can lower the integer accuracy: at 8 bits, where PTQ loses almost nothing, one
epoch at the training learning rate moves a converged model more than the rounding did (the
Fashion-MNIST example, whole test split: 82.26 % -> 81.91 %).  So every epoch's weights, and the
starting weights, are compiled as ``export`` compiles them and run by the integer emulator on the
held-out samples; ``finetune`` writes the best.  The held-out samples are the last ones of the
training split (never the test split: choosing on it would grade the choice on what chose it), and
the training samples come before them, so the two never overlap.

The score is the emulator's accuracy, the chip's own arithmetic; a stochastic model (P-SpikeSSM) is
scored on one pass with the uniforms keyed by the run's seed and the sample's index, the same uniforms
for every candidate, so two candidates differ by their weights only.  Ties go to the later epoch (it
was trained against the rounding; a tie is noise).  Weights that ``export`` refuses score nothing and
are never chosen.
"""
from __future__ import annotations

import numpy as np

MAX_AUTO_HOLDOUT = 1000         # the default: 10 % of the training split, at most this many


def holdout_size(requested: int | None, n_train: int) -> int:
    """How many training samples to hold out: ``requested`` (0: none), or by default 10 % of the
    ``n_train`` training samples, at most ``MAX_AUTO_HOLDOUT``."""
    if requested is None:
        return min(MAX_AUTO_HOLDOUT, n_train // 10)
    if requested >= n_train:
        raise ValueError(f"--holdout {requested} leaves nothing to train on ({n_train} training samples)")
    return requested


class BestEpoch:
    """The best-scoring weights so far, for ``models.train.fit``'s ``extra`` (saved with the run's state,
    so ``--resume`` chooses as an uninterrupted run does).

    ``score(weights) -> accuracy or None`` compiles and runs them; ``epoch_end(epoch)`` scores the model's
    current weights; ``scores`` lists (epoch, accuracy or None), epoch 0 being the starting weights."""

    def __init__(self, model, score):
        self.model, self.score = model, score
        self.scores: list = []
        self.best_epoch: int | None = None
        self.best_weights: dict | None = None

    def consider(self, epoch: int) -> None:
        weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        accuracy = self.score(weights)
        self.scores.append((epoch, accuracy))
        if accuracy is not None and (self.best_epoch is None or accuracy >= dict(self.scores)[self.best_epoch]):
            self.best_epoch, self.best_weights = epoch, weights

    epoch_end = consider

    def chosen(self) -> dict:
        """-> {"epoch", "accuracy", "scores"} for the report and the checkpoint's meta."""
        return {"epoch": self.best_epoch, "accuracy": dict(self.scores).get(self.best_epoch),
                "scores": [[e, a] for e, a in self.scores]}

    def state_dict(self) -> dict:
        return {"scores": [[e, a] for e, a in self.scores], "best_epoch": self.best_epoch,
                "best_weights": self.best_weights}

    def load_state_dict(self, state: dict) -> None:
        self.scores = [(int(e), None if a is None else float(a)) for e, a in state["scores"]]
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.best_weights = state["best_weights"]


def integer_scorer(kind: str, config: dict, input_format, options, target, raw: np.ndarray, labels: np.ndarray,
                   first_sample: int, seed: int, device):
    """-> ``score(weights)``: the integer accuracy on (``raw``, ``labels``) of the program ``export`` makes
    of ``weights`` (None where it refuses them).  ``first_sample``: the data-file index of ``raw[0]``,
    which keys a stochastic sampler's uniforms."""
    from .emulator import emulate
    from .errors import NeurocompileError
    from .frontend import frontend_for
    from .pipeline import compile_graph, to_program

    def score(weights: dict) -> float | None:
        try:
            graph = frontend_for(kind).import_graph(config, weights, input_format, source="fine-tuning")
            program = to_program(compile_graph(graph, options, target), {"kind": kind}, target)
        except NeurocompileError:
            return None
        logits = emulate(program, raw, device=device, seed=seed, first_sample=first_sample)["logits"]
        return float((logits.argmax(1) == labels).mean())
    return score
