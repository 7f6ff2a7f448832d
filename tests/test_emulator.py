"""The integer emulator's two back ends (compiled numba loop, node-by-node torch) against the plain
numpy oracle over neurocompile.arith: every trace identical, at shapes that straddle the compiled
loop's time blocks, with and without the two-accumulator split, two-sided kernels, per-step biases,
token inputs, and Dense sums too wide for int32."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from neurocompile import emulator
from neurocompile.compiled_layer import TIME_BLOCK
from neurocompile.program import Program, ProgramNode
from programs import assert_same, oracle, random_program, random_raw


@pytest.mark.parametrize("backend", emulator.BACKENDS)
@pytest.mark.parametrize("seed,H,L,n_layers,kw", [
    (3, 8, 12, 2, {}),
    (4, 19, 2 * TIME_BLOCK + 5, 3, {"two_sided": (1,), "bias": (0, 2)}),
    (5, 33, TIME_BLOCK, 1, {"tokens": 11}),
    (6, 9, 21, 2, {"two_sided": (0, 1), "bias": (1,)}),
])
def test_backend_equals_numpy_oracle(backend, seed, H, L, n_layers, kw):
    program = random_program(seed=seed, H=H, L=L, n_layers=n_layers, d_in=2, **kw)
    raw = random_raw(program, 5, seed)
    want = oracle(program, raw)
    got = emulator.emulate(program, raw, record=True, device="cpu", backend=backend, batch_size=2)
    assert set(got) == set(want)
    assert_same(got, want)
    assert any(program.op(n).split for n in program.topo() if n.endswith(".ssm")) or n_layers == 1
    for name in program.spike_nodes:
        assert 0.02 < got[name].mean() < 0.6, (name, got[name].mean())     # real activity, not a silent network


def test_compiled_backend_fuses_every_layer_and_runs_other_nodes_by_rule():
    program = random_program(seed=2, n_layers=3)
    assert sorted(emulator.fused_layers(program)) == ["layer0.ssm", "layer1.ssm", "layer2.ssm"]
    # a program whose LIF output also feeds something else is not the fusable pattern: node by node
    odd = _unfused(program)
    assert "layer0.ssm" not in emulator.fused_layers(odd)
    raw = random_raw(odd, 3, 1)
    assert_same(emulator.emulate(odd, raw, record=True, backend="compiled"), oracle(odd, raw))


def _unfused(program):
    """The program with a probe on layer0's spikes, so layer0 runs node by node (compiled pointwise)."""
    nodes = list(program.nodes)
    extra = ProgramNode("probe", program.op("layer0.mixer"), 0)
    edges = program.edges + (("layer0.neuron", "probe", "main"),)
    return Program(tuple(nodes[:5] + [extra] + nodes[5:]), edges, program.model, {**program.delays, "probe": 1})


def _emulated_logits(program, raw, progress=None):
    return {"logits": emulator.emulate(program, raw, backend="compiled")["logits"]}


def test_a_worker_started_after_an_emulator_run_can_emulate():
    """A child forked after the parent had run the emulator hung now and then in the full suite: in
    MKL's allocator (torch.fft), whose lock a parent thread held at the fork.  Workers are fresh
    interpreters (``neurocompile.worker``): with a thread of the parent busy in MKL the whole time,
    a worker's emulator run gives the parent's integers, and 100 workers in a row all finish."""
    import threading
    import time

    from neurocompile.execute import LocalExecutor, Task, run_in_child
    from worker_tasks import echo
    program = _unfused(random_program(seed=2, n_layers=2, H=16, L=24))
    raw = random_raw(program, 4, 1)
    stop = threading.Event()

    def busy():                                    # MKL (matmuls, FFTs) in another thread of the parent
        while not stop.is_set():
            torch.fft.rfft(torch.randn(16, 128) @ torch.randn(128, 128), dim=-1)
            time.sleep(0.001)
    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        want = emulator.emulate(program, raw, record=True, backend="compiled")["logits"]
        got = run_in_child(_emulated_logits, (program, raw), timeout_s=120)["logits"]
        assert np.array_equal(got, want)
        emulator.emulate(program, raw, backend="compiled")
        out = LocalExecutor(2, timeout_s=60, retries=0).run([Task(f"n{k}", echo, (k,)) for k in range(100)])
        assert [int(r["k"][0]) for r in out] == list(range(100))
    finally:
        stop.set()
        thread.join()


def test_both_backends_agree_on_wide_dense_sums():
    program = random_program(seed=7, H=16, L=40, n_layers=2)
    dense, glu = program.op("layer0.mixer"), program.op("layer0.residual")    # Dense sums beyond int32:
    wide = {"layer0.mixer": replace(dense, weight=dense.weight << 20),
            "layer0.residual": replace(glu, bias=glu.bias << 20, value_shift=glu.value_shift + 20,
                                       gate_shift=glu.gate_shift + 20)}
    program = Program(tuple(ProgramNode(n.name, wide.get(n.name, n.op), n.layer) for n in program.nodes),
                      program.edges, program.model, program.delays)
    assert np.abs(program.op("layer0.mixer").weight).sum(1).max() > 2 ** 31
    raw = random_raw(program, 3, 8)
    a = emulator.emulate(program, raw, record=True, device="cpu", backend="compiled")
    b = emulator.emulate(program, raw, record=True, device="cpu", backend="torch")
    assert_same(a, oracle(program, raw))
    assert_same(a, b)


def test_without_record_only_logits_and_progress_counts_samples():
    program = random_program(seed=9)
    raw = random_raw(program, 6, 9)
    seen = []
    out = emulator.emulate(program, raw, device="cpu", progress=seen.append)
    assert set(out) == {"logits"}
    np.testing.assert_array_equal(out["logits"], oracle(program, raw)["logits"])
    assert sorted(seen) == list(range(1, 7))


def test_convolution_results_off_the_integers_are_refused(monkeypatch):
    program = random_program(seed=10)
    real = emulator._ConvBuffers.convolve
    monkeypatch.setattr(emulator._ConvBuffers, "convolve", lambda self, parts, spec: real(self, parts, spec) + 0.4)
    with pytest.raises(ArithmeticError, match="layer0.ssm: FFT convolution left the integers"):
        emulator.emulate(program, random_raw(program, 2, 10), device="cpu", backend="compiled")
    with pytest.raises(ArithmeticError, match="left the integers"):
        emulator.rounded(torch.tensor([1.0, 2.4]))


def test_unknown_or_misplaced_backend_device_and_inputs_are_refused():
    program = random_program(seed=11)
    raw = random_raw(program, 1, 11)
    with pytest.raises(ValueError, match="unknown emulator backend 'fast'"):
        emulator.emulate(program, raw, device="cpu", backend="fast")
    with pytest.raises(ValueError, match="unknown device"):
        emulator.emulate(program, raw, device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            emulator.emulate(program, raw, device="cuda")
    with pytest.raises(ValueError, match=r"inputs must be \(n, 12, 1\)"):
        emulator.emulate(program, raw[:, :5], device="cpu")
    with pytest.raises(ValueError, match="integers in 0..255"):
        emulator.emulate(program, raw + 300, device="cpu")


def test_machine_code_cache_is_keyed_by_the_rule_its_constants_and_the_kernels(tmp_path, monkeypatch):
    import hashlib

    from neurocompile import arith, compiled_layer, jit
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # the rule's constants are written in arith.py itself (no target file feeds the compiled kernels)
    digest = hashlib.sha256(b"".join(open(f, "rb").read() for f in (arith.__file__, jit.__file__,
                                                                       compiled_layer.__file__)))
    folder = jit.machine_code_cache(compiled_layer.__file__)
    assert folder == str(tmp_path / "neurocompile" / "numba" / digest.hexdigest()[:16])
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert jit.machine_code_cache(compiled_layer.__file__) is None    # unwritable: no caching, never a fallback
