"""Tests of the reference model side: LIF/SDN, S4D kernels, SpikingSSM, checkpoints, datasets, training."""
import math
import os

import numpy as np
import pytest
import torch

from neurocompile.models.checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from neurocompile.models.config import SpikingSSMConfig
from neurocompile.models.neurons import SDN, lif_sequence, random_inputs, sdn_agreement, spike_fn
from neurocompile.models.spikingssm import SpikingSSM
from neurocompile.models.ssm_kernel import init_kernel_params, materialize_kernel, ssm_convolution

torch.set_num_threads(2)


# ----------------------------------------------------------------------------------------- neurons
def test_lif_matches_hand_computed_sequence():
    # tau 0.5: u = .6 | .3+.8=1.1 spike | 0+.3 | .15+1=1.15 spike | .5 | .25+.5=.75 | .375+.5=.875 | .4375+.6=1.0375 spike
    y = torch.tensor([[0.6, 0.8, 0.3, 1.0, 0.5, 0.5, 0.5, 0.6]], dtype=torch.float64)
    s, mem = lif_sequence(y, tau=0.5, return_mem=True)
    assert s.tolist() == [[0, 1, 0, 1, 0, 0, 0, 1]]
    assert torch.allclose(mem, torch.tensor([[0, 0.3, 0, 0.15, 0, 0.25, 0.375, 0.4375]], dtype=torch.float64))
    # tau 0.125 (the shipped SDN's): the exact update order u = tau*u; u += y; s = u >= 1; u *= 1-s
    s = lif_sequence(torch.tensor([0.5, 0.6, 1.2, 0.0, 0.9, 0.2, 0.95]).double(), tau=0.125)
    assert s.tolist() == [0, 0, 1, 0, 0, 0, 0]    # u: .5 .6625 1.2828 0 .9 .3125 .9890


def test_lif_threshold_is_inclusive():
    s = lif_sequence(torch.tensor([1.0, 0.0, 0.999]).double(), tau=0.125)
    assert s.tolist() == [1, 0, 0]


def test_surrogate_gradient():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.5], requires_grad=True)
    out = spike_fn(x)
    assert out.tolist() == [0, 0, 1, 1, 1]
    out.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.0, 0.5, 1.0, 0.75, 0.0]))


def test_sdn_agrees_with_exact_lif_on_random_inputs():
    sdn = SDN(0.125)
    assert sum(p.numel() for p in sdn.parameters()) == 153
    assert not any(p.requires_grad for p in sdn.parameters())
    agree = sdn_agreement(sdn.model, 0.125, seed=999, n=128, L=256)
    assert agree > 0.99
    g = torch.Generator().manual_seed(5)
    y = random_inputs(16, 128, g)
    mem = sdn.model(y.unsqueeze(1)).squeeze(1)
    assert torch.equal(sdn(y), (mem + y - 1.0 >= 0).float())
    assert ((sdn(y) == lif_sequence(y, 0.125)).float().mean()) > 0.97


def test_sdn_is_causal():
    sdn = SDN(0.125)
    y = torch.randn(1, 64)
    y2 = y.clone()
    y2[0, 40:] += 5.0
    assert torch.equal(sdn.predict_membrane(y)[0, :41], sdn.predict_membrane(y2)[0, :41])


# ------------------------------------------------------------------------------------------ kernels
def _random_params(variant, H=3, N=8, ch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = {k: v.double() for k, v in init_kernel_params(variant, H, N, ch, generator=g).items()}
    if variant == "diag_b":
        p["B"] = torch.randn(p["B"].shape, generator=g, dtype=torch.float64)
        p["A_real"] = p["A_real"] + 0.3 * torch.randn(p["A_real"].shape, generator=g, dtype=torch.float64)
    else:
        p["log_A_real"] = p["log_A_real"] + 0.3 * torch.randn(p["log_A_real"].shape, generator=g, dtype=torch.float64)
    return p


def _recurrence(p, variant, u):
    """Direct float64 recurrence h[t] = dA h[t-1] + dB u[t], y = 2 Re(C h), written from the doc's conventions."""
    C = torch.view_as_complex(p["C"].contiguous())                       # (ch,H,n)
    if variant == "s4d":
        A = -torch.exp(p["log_A_real"]) + 1j * p["A_imag"]
        dt = torch.exp(p["log_dt"])
        B = torch.ones_like(A)
    else:
        A = -torch.exp(p["A_real"]) - 1j * p["A_imag"]
        dt = torch.exp(p["inv_dt"][:, 0])
        B = torch.view_as_complex(p["B"].contiguous())[0]
    dA = torch.exp(A * dt[:, None])
    dB = (dA - 1) / A * B
    h = torch.zeros(C.shape[0], *A.shape, dtype=torch.complex128)
    ys = []
    for t in range(u.shape[-1]):
        h = dA * h + dB * u[:, t, None]
        ys.append(2 * (C * h).sum(-1).real)
    return torch.stack(ys, -1)                                            # (ch,H,L)


@pytest.mark.parametrize("variant", ["s4d", "diag_b"])
def test_kernel_matches_recurrence(variant):
    p = _random_params(variant, ch=2)
    L = 50
    K = materialize_kernel(p, variant, L, dtype=torch.float64)
    assert K.shape == (2, 3, L) and K.dtype == torch.float64
    impulse = torch.zeros(3, L, dtype=torch.float64)
    impulse[:, 0] = 1
    assert torch.allclose(K, _recurrence(p, variant, impulse), atol=1e-9, rtol=0)
    u = torch.randn(3, L, dtype=torch.float64)
    D = torch.randn(1, 3, dtype=torch.float64)
    y = ssm_convolution(u[None], K[:1], D)[0]
    assert torch.allclose(y, _recurrence(p, variant, u)[0] + D[0, :, None] * u, atol=1e-9, rtol=0)


def test_kernel_init_shapes_and_values():
    a = init_kernel_params("s4d", 4, 8, 1)
    assert {k: tuple(v.shape) for k, v in a.items()} == {"C": (1, 4, 4, 2), "log_dt": (4,), "log_A_real": (4, 4),
                                                         "A_imag": (4, 4)}
    assert torch.allclose(torch.exp(a["log_A_real"]), torch.full((4, 4), 0.5))
    assert torch.allclose(a["A_imag"][0], math.pi * torch.arange(4.0))
    assert (a["log_dt"] >= math.log(0.001) - 1e-6).all() and (a["log_dt"] <= math.log(0.1) + 1e-6).all()
    b = init_kernel_params("diag_b", 4, 8, 2)
    assert {k: tuple(v.shape) for k, v in b.items()} == {"inv_dt": (4, 1), "C": (2, 4, 4, 2), "B": (1, 4, 4, 2),
                                                         "A_real": (4, 4), "A_imag": (4, 4)}
    # same continuous system from both sign conventions
    b2 = dict(b, C=a["C"].expand(2, -1, -1, -1)[:1].clone(), inv_dt=a["log_dt"][:, None])
    b2 = {k: v for k, v in b2.items()}
    b2["C"] = a["C"]
    ka = materialize_kernel(a, "s4d", 20)
    kb = materialize_kernel(b2, "diag_b", 20)
    assert torch.allclose(ka, kb, atol=1e-6)


def test_bidirectional_convolution_matches_direct_sum():
    g = torch.Generator().manual_seed(1)
    B, H, L = 2, 3, 17
    u = torch.randn(B, H, L, generator=g, dtype=torch.float64)
    K = torch.randn(2, H, L, generator=g, dtype=torch.float64)
    D = torch.randn(1, H, generator=g, dtype=torch.float64)
    y = ssm_convolution(u, K, D)
    ref = torch.zeros_like(u)
    for t in range(L):
        for s in range(L):
            ref[..., t] += (K[0, :, t - s] if s <= t else K[1, :, s - t - 1]) * u[..., s]
    ref += D[0, :, None] * u
    assert torch.allclose(y, ref, atol=1e-10)
    # causal: no dependence on the future
    y1 = ssm_convolution(u, K[:1], D)
    u2 = u.clone()
    u2[..., 10:] = 0
    assert torch.allclose(ssm_convolution(u2, K[:1], D)[..., :10], y1[..., :10], atol=1e-10)


# ------------------------------------------------------------------------------------------- model
def _small_cfg(**kw):
    base = dict(d_model=8, n_layers=2, d_state=8, l_max=24)
    base.update(kw)
    return SpikingSSMConfig(**base)


def test_state_dict_layout_and_record():
    torch.manual_seed(0)
    m = SpikingSSM(_small_cfg(kernel="diag_b", bidirectional=True)).eval()
    sd = m.state_dict()
    for k, shape in {"encoder.weight": (8, 1), "backbone.s4_layers.1.D": (1, 8), "backbone.s4_layers.0.ln_vth": (8, 1),
                     "backbone.s4_layers.0.kernel.inv_dt": (8, 1), "backbone.s4_layers.0.kernel.C": (2, 8, 4, 2),
                     "backbone.s4_layers.0.kernel.B": (1, 8, 4, 2),
                     "backbone.s4_layers.0.neuron.model.conv1.weight": (8, 1, 8),
                     "backbone.s4_layers.0.output_linear.0.weight": (16, 8, 1), "backbone.norms.1.weight": (8,),
                     "decoder.weight": (10, 8)}.items():
        assert tuple(sd[k].shape) == shape, k
    x = torch.rand(3, 24, 1)
    logits, rec = m(x, neuron="lif", record=True)
    assert logits.shape == (3, 10)
    assert rec["stream_in"].shape == (3, 8, 24)
    assert [t.shape for t in rec["spikes"]] == [(3, 8, 24)] * 2
    # record is consistent: layer-0 LIF input -> exact LIF -> spikes; stream = stream_in + GLU(mixer(spikes))
    assert torch.equal(lif_sequence(rec["ssm"][0], 0.125), rec["spikes"][0])
    glu = m.backbone.s4_layers[0].output_linear(rec["spikes"][0])
    assert torch.allclose(rec["stream"][0], rec["stream_in"] + glu)
    assert torch.allclose(logits, m.decoder(rec["stream"][1].mean(-1)))
    assert not any(p.requires_grad for n, p in m.named_parameters() if ".neuron." in n)


def test_shared_vth_and_no_vth_and_embedding():
    assert tuple(SpikingSSM(_small_cfg(shared_vth=True)).state_dict()["backbone.s4_layers.0.ln_vth"].shape) == (1,)
    assert "backbone.s4_layers.0.ln_vth" not in SpikingSSM(_small_cfg(learnable_vth=False)).state_dict()
    m = SpikingSSM(_small_cfg(encoder="embedding", n_tokens=5))
    assert m(torch.randint(0, 5, (2, 24))).shape == (2, 10)


def test_prenorm_false_never_applies_norms():
    torch.manual_seed(0)
    m = SpikingSSM(_small_cfg()).eval()
    x = torch.rand(2, 24, 1)
    before = m(x, neuron="lif")
    with torch.no_grad():
        for n in m.backbone.norms:
            n.weight.mul_(3.0).add_(0.7)
            n.bias.add_(-2.0)
    assert torch.equal(before, m(x, neuron="lif"))
    torch.manual_seed(0)
    mp = SpikingSSM(_small_cfg(prenorm=True)).eval()
    b = mp(x)
    with torch.no_grad():
        mp.backbone.norms[0].bias.add_(-2.0)
    assert not torch.equal(b, mp(x))


def test_lif_mode_is_trainable_with_bptt():
    m = SpikingSSM(_small_cfg(n_layers=1))
    m(torch.rand(2, 24, 1), neuron="lif").sum().backward()
    assert m.backbone.s4_layers[0].kernel.C.grad is not None
    assert m.backbone.s4_layers[0].kernel.C.grad.abs().sum() > 0


def test_config_validation():
    cfg = _small_cfg()
    assert SpikingSSMConfig.from_dict(cfg.to_dict()) == cfg
    for bad, field in [({"d_modle": 8}, "d_modle"), ({"d_state": 7}, "d_state"), ({"kernel": "s4"}, "kernel"),
                       ({"tau": 0.0}, "tau"), ({"d_model": "8"}, "d_model"), ({"bidirectional": 1}, "bidirectional"),
                       ({"encoder": "embedding"}, "n_tokens")]:
        with pytest.raises(ValueError, match=field):
            SpikingSSMConfig.from_dict(dict(cfg.to_dict(), **bad))


# ------------------------------------------------------------------------------------- checkpoints
@pytest.fixture()
def ckpt(tmp_path):
    torch.manual_seed(0)
    m = SpikingSSM(_small_cfg()).eval()
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, m, {"dataset": "digits", "seed": 0, "metrics": {"test_acc_lif": 0.5}})
    return m, path


def test_checkpoint_round_trip(ckpt):
    m, path = ckpt
    kind, cfg, sd, meta = load_checkpoint(path)
    assert kind == "spikingssm" and cfg == m.config and meta["metrics"]["test_acc_lif"] == 0.5
    m2 = build_model(cfg, sd)
    x = torch.rand(2, 24, 1)
    assert torch.equal(m(x, neuron="lif"), m2(x, neuron="lif"))
    assert [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp")] == []


def _rewrite(path, mutate):
    obj = torch.load(path, weights_only=True)
    mutate(obj)
    torch.save(obj, path)


@pytest.mark.parametrize("case, pattern", [
    ("missing", "no such checkpoint file"),
    ("truncated", "truncated or corrupt"),
    ("text", "not a neurocompile checkpoint"),
    ("npz", "not a neurocompile checkpoint"),
    ("tensor", "not a neurocompile checkpoint"),
    ("foreign_dict", "not a neurocompile checkpoint"),
    ("pickle", "refused"),
    ("nan", "'backbone.s4_layers.1.D' contains NaN"),
    ("kind", "unknown model kind 'transformer'"),
    ("version", "unsupported checkpoint version 7"),
    ("shape", "'decoder.weight' has shape"),
    ("missing_key", "missing 1 tensor"),
    ("extra_key", "unexpected tensor"),
    ("config", "config field 'd_state'"),
])
def test_checkpoint_errors(ckpt, tmp_path, case, pattern):
    _, path = ckpt
    if case == "missing":
        path = str(tmp_path / "nope.pt")
    elif case == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif case == "text":
        open(path, "w").write("hello, not a checkpoint\n")
    elif case == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, x=np.zeros(3))
    elif case == "tensor":
        torch.save(torch.zeros(3), path)
    elif case == "foreign_dict":
        torch.save({"state_dict": {}, "epoch": 3}, path)
    elif case == "pickle":
        torch.save({"format": "neurocompile-checkpoint", "obj": _Evil()}, path)
    elif case == "nan":
        _rewrite(path, lambda o: o["state_dict"]["backbone.s4_layers.1.D"].__setitem__((0, 2), float("nan")))
    elif case == "kind":
        _rewrite(path, lambda o: o.__setitem__("kind", "transformer"))
    elif case == "version":
        _rewrite(path, lambda o: o.__setitem__("version", 7))
    elif case == "shape":
        _rewrite(path, lambda o: o["state_dict"].__setitem__("decoder.weight", torch.zeros(3, 8)))
    elif case == "missing_key":
        _rewrite(path, lambda o: o["state_dict"].pop("backbone.s4_layers.0.kernel.A_imag"))
    elif case == "extra_key":
        _rewrite(path, lambda o: o["state_dict"].__setitem__("backbone.extra", torch.zeros(1)))
    elif case == "config":
        _rewrite(path, lambda o: o["config"].__setitem__("d_state", 5))
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and os.path.basename(path) in msg
    assert isinstance(info.value, ValueError)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


# ------------------------------------------------------------------------------------------ onnx
def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from neurocompile.models.onnx_export import export_onnx

    torch.manual_seed(0)
    m = SpikingSSM(_small_cfg(l_max=16, bidirectional=True)).eval()
    p1, p2 = str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")
    export_onnx(m, p1)
    export_onnx(m, p2)
    assert open(p1, "rb").read() == open(p2, "rb").read()
    x = torch.rand(2, 16, 1)
    out = ReferenceEvaluator(p1).run(None, {"x": x.numpy()})[0]
    assert np.allclose(out, m(x, neuron="sdn").detach().numpy(), atol=1e-4)


# -------------------------------------------------------------------------------------- datasets
def test_digits_dataset():
    from neurocompile.datasets import load_dataset

    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert tr.x.shape == (1437, 64, 1) and te.x.shape == (360, 64, 1)
    assert tr.levels == 16 and tr.x.max() == 16 and tr.y.dtype == np.int64
    assert np.array_equal(load_dataset("digits", "test").x, te.x)


def test_npz_dataset_and_input_format(tmp_path):
    from neurocompile.datasets import load_dataset
    from neurocompile.errors import DatasetError
    from neurocompile.input_format import InputFormat

    p = str(tmp_path / "d.npz")
    fmt = InputFormat(levels=16)
    np.savez(p, x=np.array([[0.0, 0.5, 1.0, 0.52]]), y=np.array([3]))
    d = load_dataset(p, "test")
    values, raw = fmt.prepare(d.x, p, d.levels)
    assert d.x.shape == (1, 4, 1) and values[0, :, 0].tolist() == [0.0, 0.5, 1.0, 0.52]   # the float model: as given
    assert raw[0, :, 0].tolist() == [0, 8, 16, 8]                                          # integer runs: rounded
    np.savez(p, x=np.array([[0, 7]]), y=np.array([1]), levels=np.array(7))
    d = load_dataset(p, "test")
    assert d.levels == 7
    values, raw = fmt.prepare(d.x, p, d.levels)              # other levels: re-quantized to ours
    assert raw[0, :, 0].tolist() == [0, 16] and values[0, 1, 0] == 1.0
    np.savez(p, x=np.array([[0, 9]]), y=np.array([1]), levels=np.array(7))
    with pytest.raises(DatasetError, match="d.npz"):
        fmt.prepare(load_dataset(p, "test").x, p, 7)
    np.savez(p, x=np.array([[0.0, 1.5]]), y=np.array([1]))
    with pytest.raises(DatasetError, match=r"input range \[0, 1\]"):
        fmt.prepare(load_dataset(p, "test").x, p)
    tokens = InputFormat(kind="tokens", vocab=5)
    assert tokens.prepare(np.array([[1, 4]]), p)[1].tolist() == [[1, 4]]
    with pytest.raises(DatasetError, match="token ids must lie in 0..4"):
        tokens.prepare(np.array([[1, 5]]), p)
    np.savez(p, z=np.zeros(3))
    with pytest.raises(DatasetError, match="needs arrays 'x' and 'y'"):
        load_dataset(p, "test")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("mnist-ish", "test")


def test_npz_with_a_huge_claimed_shape_is_refused_before_loading(tmp_path):
    import io
    import zipfile

    from neurocompile.datasets import load_dataset
    from neurocompile.errors import DatasetError

    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3)))
    blob = buf.getvalue()
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (200000000, 3000), }"
    fake = np.lib.format.MAGIC_PREFIX + b"\x01\x00" + len(header + b" " * 10 + b"\n").to_bytes(2, "little") \
        + header + b" " * 10 + b"\n" + b"\0" * 48
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x.npy", fake)
        zf.writestr("y.npy", blob)
    with pytest.raises(DatasetError, match="claims shape"):
        load_dataset(str(p), "test")


# -------------------------------------------------------------------------------------- training
def test_train_command_writes_checkpoint(tmp_path):
    from neurocompile.models.train import main

    out = str(tmp_path / "run")
    assert main(["--dataset", "digits", "--out", out, "--d-model", "8", "--d-state", "4", "--n-layers", "1",
                 "--epochs", "1", "--max-train", "64", "--max-test", "32", "--no-progress"]) == 0
    kind, cfg, sd, meta = load_checkpoint(os.path.join(out, "ckpt.pt"))
    assert cfg.l_max == 64 and cfg.input_levels == 16 and cfg.d_model == 8
    assert set(meta["metrics"]) >= {"test_acc_sdn", "test_acc_lif", "train_loss"}
    assert "--max-train" in meta["command"] and meta["dataset"] == "digits"


def test_fashion_mnist_32_is_fashion_mnist_padded_to_32_by_32():
    """The sCIFAR-length stand-in: the same images and labels, 2 black pixels on each side, row by row."""
    from neurocompile.datasets import load_dataset

    small, padded = load_dataset("fashion-mnist", "test"), load_dataset("fashion-mnist-32", "test")
    assert padded.x.shape == (10000, 1024, 1) and padded.levels == 255 and padded.name == "fashion-mnist-32"
    np.testing.assert_array_equal(padded.y, small.y)
    images = padded.x.reshape(-1, 32, 32)
    np.testing.assert_array_equal(images[:, 2:30, 2:30], small.x.reshape(-1, 28, 28))
    assert not images[:, :2].any() and not images[:, 30:].any() and not images[:, :, :2].any() \
        and not images[:, :, 30:].any()
    assert len(load_dataset("fashion-mnist-32", "train")) == 60000
