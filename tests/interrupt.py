"""Stop a training command right after an epoch's state is saved, as a kill between epochs would."""
import pytest

from neurocompile.models import train as train_module


class Interrupted(Exception):
    pass


def run_stopped_after_epoch(monkeypatch, epoch: int, command) -> None:
    """Run ``command()`` with the training loop stopped once epoch ``epoch``'s state is saved."""
    save = train_module.save_train_state

    def save_then_stop(path, run_args, done, *rest):
        save(path, run_args, done, *rest)
        if done == epoch:
            raise Interrupted()
    monkeypatch.setattr(train_module, "save_train_state", save_then_stop)
    with pytest.raises(Interrupted):
        command()
    monkeypatch.setattr(train_module, "save_train_state", save)
