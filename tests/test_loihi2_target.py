"""The Lava target on programs compiled by the real pipeline (the hand-made-program tests are in
test_lava_target.py): the floating_pt models against the float network, and a torch-free runtime."""
import sys

import numpy as np
import pytest

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_compiler import compile_float_graph, float_graph, float_reference  # noqa: E402

from neurocompile.targets.loihi2 import lava_missing

pytestmark = pytest.mark.lava            # every test here runs Lava (deselected without it: see conftest.py)
if lava_missing() is None:
    from neurocompile.targets.loihi2.runner import run_lava


@pytest.fixture(scope="module")
def small():
    g = float_graph(H=10, L=16, n_layers=2, seed=3)
    return g, compile_float_graph(g)


def test_floating_pt_mode_tracks_the_float_network(small):
    g, program = small
    levels = np.random.default_rng(1).integers(0, 17, size=(4, 16, 1))
    lava = run_lava(program, levels, mode="floating_pt", record=True, timeout_s=300)
    f_logits, f_spikes = float_reference(g, levels)
    # same float64 arithmetic in another order: only a membrane within ~1e-12 of threshold could flip
    for name, spikes in f_spikes.items():
        assert (lava[name] == spikes).mean() > 0.995
    assert np.allclose(lava["logits"], f_logits, rtol=1e-6, atol=1e-6)


def test_artifact_runs_on_lava_without_torch(small, tmp_path):
    """The runtime side needs numpy and lava only: run the worker with torch made unimportable."""
    import subprocess

    from neurocompile.artifact import save_program

    _, program = small
    art, inputs, out = tmp_path / "p.loihi2", tmp_path / "in.npz", tmp_path / "out.npz"
    save_program(program, str(art))
    levels = np.random.default_rng(4).integers(0, 17, size=(2, 16, 1))
    np.savez(inputs, levels=levels)
    code = ("import sys; sys.modules['torch'] = None; from neurocompile.targets.loihi2.worker import main; "
            f"sys.exit(main([{str(art)!r}, {str(inputs)!r}, {str(out)!r}, 'fixed_pt', 'sim', '0']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert np.array_equal(np.load(out)["logits"].shape, (2, program.n_classes))


def test_run_lava_after_the_parent_fixed_a_multiprocessing_start_method(small):
    """validate runs tqdm and torch before Lava; either may fix the start method Lava then sets."""
    import multiprocessing

    multiprocessing.get_start_method()            # fixes the default context in this process
    _, program = small
    out = run_lava(program, np.zeros((1, 16, 1), dtype=np.int64), record=False, timeout_s=300)
    assert out["logits"].shape == (1, program.n_classes)
