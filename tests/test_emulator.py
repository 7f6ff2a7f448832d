"""The integer emulator's two back ends (compiled numba loop, torch tensors) against the plain numpy
oracle over neurocompile.arith: every trace identical, at shapes that straddle the compiled loop's
time blocks, with and without the two-accumulator split, and with Dense sums too wide for int32."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from neurocompile import emulator
from neurocompile.compiled_layer import TIME_BLOCK
from test_lava_target import assert_same, oracle, random_program


def _levels(seed, n, L, d_in=1):
    return np.random.default_rng(seed).integers(0, 256, (n, L, d_in))


@pytest.mark.parametrize("backend", emulator.BACKENDS)
@pytest.mark.parametrize("seed,H,L,n_layers", [(3, 8, 12, 2), (4, 19, 2 * TIME_BLOCK + 5, 3), (5, 33, TIME_BLOCK, 1)])
def test_backend_equals_numpy_oracle(backend, seed, H, L, n_layers):
    program = random_program(seed=seed, H=H, L=L, n_layers=n_layers, d_in=2)
    levels = _levels(seed, 5, L, d_in=2)
    want = oracle(program, levels)
    got = emulator.emulate(program, levels, record=True, device="cpu", backend=backend, batch_size=2)
    assert_same(got, want)
    assert any(layer.acc_split for layer in program.layers) or n_layers == 1
    for i, spikes in enumerate(got["spikes"]):
        assert 0.02 < spikes.mean() < 0.6, (i, spikes.mean())     # real activity, not a silent network


def test_both_backends_agree_on_voltage_and_wide_dense_sums():
    program = random_program(seed=7, H=16, L=40, n_layers=2)
    first = program.layers[0]                              # Dense sums beyond int32, the stream unchanged:
    wide = replace(first, mix_weight=first.mix_weight << 20, mix_bias=first.mix_bias << 20,
                   value_shift=first.value_shift + 20, gate_shift=first.gate_shift + 20)
    assert np.abs(wide.mix_weight).sum(1).max() > 2 ** 31
    program = replace(program, layers=(wide,) + program.layers[1:])
    levels = _levels(8, 3, 40)
    a = emulator.emulate(program, levels, record=True, device="cpu", backend="compiled")
    b = emulator.emulate(program, levels, record=True, device="cpu", backend="torch")
    assert_same(a, oracle(program, levels))
    for key in ("logits", "stream_in"):
        np.testing.assert_array_equal(a[key], b[key])
    for key in ("ssm", "spikes", "voltage", "stream"):
        for x, y in zip(a[key], b[key]):
            np.testing.assert_array_equal(x, y)


def test_without_record_only_logits_and_progress_counts_samples():
    program = random_program(seed=9)
    levels = _levels(9, 6, 12)
    seen = []
    out = emulator.emulate(program, levels, device="cpu", progress=seen.append)
    assert set(out) == {"logits"}
    np.testing.assert_array_equal(out["logits"], oracle(program, levels)["logits"])
    assert sorted(seen) == list(range(1, 7))


def test_convolution_results_off_the_integers_are_refused(monkeypatch):
    program = random_program(seed=10)
    real = emulator._ConvBuffers.convolve
    monkeypatch.setattr(emulator._ConvBuffers, "convolve", lambda self, parts, spec: real(self, parts, spec) + 0.4)
    with pytest.raises(ArithmeticError, match="layer 0: FFT convolution left the integers"):
        emulator.emulate(program, _levels(10, 2, 12), device="cpu", backend="compiled")
    with pytest.raises(ArithmeticError, match="left the integers"):
        emulator.rounded(torch.tensor([1.0, 2.4]))


def test_unknown_or_misplaced_backend_is_refused():
    program = random_program(seed=11)
    with pytest.raises(ValueError, match="unknown emulator backend 'fast'"):
        emulator.emulate(program, _levels(11, 1, 12), device="cpu", backend="fast")
    with pytest.raises(ValueError, match="runs on the CPU"):
        emulator.emulate(program, _levels(11, 1, 12), device="cuda", backend="compiled")


def test_machine_code_cache_is_keyed_by_the_rule_and_the_loop(tmp_path, monkeypatch):
    import hashlib

    from neurocompile import arith, compiled_layer
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    digest = hashlib.sha256(open(arith.__file__, "rb").read() + open(compiled_layer.__file__, "rb").read())
    assert compiled_layer.machine_code_cache() == str(tmp_path / "neurocompile" / "numba" / digest.hexdigest()[:16])
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert compiled_layer.machine_code_cache() is None          # unwritable: no caching, never a fallback
