"""Stop a training command right after a saved state, as a kill between epochs (or batches) would."""
import pytest

from neurocompile.models import train as train_module


class Interrupted(Exception):
    pass


def run_stopped_after_epoch(monkeypatch, epoch: int, command) -> None:
    """Run ``command()`` with the training loop stopped once epoch ``epoch``'s state is saved."""
    save = train_module.save_train_state

    def save_then_stop(path, run_args, done, *rest, **kw):
        save(path, run_args, done, *rest, **kw)
        if done == epoch:
            raise Interrupted()
    monkeypatch.setattr(train_module, "save_train_state", save_then_stop)
    with pytest.raises(Interrupted):
        command()
    monkeypatch.setattr(train_module, "save_train_state", save)


def run_stopped_mid_epoch(monkeypatch, epoch: int, step: int, command) -> None:
    """Run ``command()`` with the state saved after every batch, and the loop stopped once the state
    after ``step`` batches of epoch ``epoch`` (counted from 1) is saved."""
    save = train_module.save_train_state

    def save_then_stop(path, run_args, done, *rest, **mid):
        save(path, run_args, done, *rest, **mid)
        if done == epoch - 1 and mid.get("step") == step:
            raise Interrupted()
    monkeypatch.setattr(train_module, "SAVE_SECONDS", 0.0)
    monkeypatch.setattr(train_module, "save_train_state", save_then_stop)
    with pytest.raises(Interrupted):
        command()
    monkeypatch.setattr(train_module, "save_train_state", save)
