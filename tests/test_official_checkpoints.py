"""Official Lightning checkpoints: fixtures written by the authors' own code, the restricted reader, detection,
mapping to our SpikingSSM, and refusal of anything that could run code or is corrupt.

The fixtures and their .expected.npz (logits from the authors' code, float64, eval) are described in
tests/fixtures/official/README.md.
"""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from neurocompile.models import torchzip
from neurocompile.models.checkpoint import KINDS, CheckpointError, build_model, load_checkpoint, read_checkpoint
from neurocompile.models.config import SpikingSSMConfig
from neurocompile.models.spikingssm import SpikingSSM
from official_layout import official_state_dict, write_official

torch.set_num_threads(2)
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "official")

SPIKINGSSM = {
    "spikingssm_causal_s4d_linear":
        "official SpikingSSM (Lightning 2.0.4): 2 layers, H=8, N=8, L=784, causal, S4D kernels (S4DKernel, fixed B), "
        "per-channel threshold, Linear(1 input), 10 outputs, postnorm LayerNorm (stored, never applied)",
    "spikingssm_bidir_diagb_embedding_sharedvth":
        "official SpikingSSM (Lightning 2.0.4): 2 layers, H=16, N=4, L=64, bidirectional, trainable-B diagonal "
        "kernels (SSMKernelDiag), shared threshold, Embedding(18 tokens), 10 outputs, postnorm BatchNorm "
        "(stored, never applied)",
    "spikingssm_bidir_prenorm_batchnorm":
        "official SpikingSSM (Lightning 2.0.4): 2 layers, H=8, N=8, L=784, bidirectional, S4D kernels (S4DKernel, "
        "fixed B), per-channel threshold, Linear(1 input), 10 outputs, prenorm BatchNorm",
    "spikingssm_novth_prenorm_layernorm":
        "official SpikingSSM (Lightning 2.0.4): 2 layers, H=8, N=8, L=784, causal, S4D kernels (S4DKernel, fixed B), "
        "no threshold scaling (learnable_vth=False), Linear(1 input), 10 outputs, prenorm LayerNorm",
}
PSPIKESSM = {
    "pspikessm_unidirectional_prenorm_bn":
        "official P-SpikeSSM (Lightning 2.0.4): 2 layers, H=8, N=8, n_ssm=1, unidirectional blocks, DPLR S4 kernels "
        "(rank 1, two-sided, bilinear, dt=softplus, l_kernel=784), prenorm BatchNorm + final BatchNorm, no residual, "
        "Linear(1 input), 10 outputs",
    "pspikessm_bidirectional_postnorm_bn":
        "official P-SpikeSSM (Lightning 2.0.4): 2 layers, H=8, N=8, n_ssm=2, bidirectional blocks, DPLR S4 kernels "
        "(rank 1, two-sided, bilinear, dt=softplus, l_kernel=64), postnorm BatchNorm (applied), residual, "
        "Embedding(18 tokens), 10 outputs",
}
# Every global the authors' Lightning 2.0.4 files reference (protocol 2 names; __builtin__.long is int).
OFFICIAL_GLOBALS = {
    "__builtin__ dict", "__builtin__ list", "__builtin__ long", "collections OrderedDict", "collections defaultdict",
    "omegaconf.base ContainerMetadata", "omegaconf.base Metadata", "omegaconf.dictconfig DictConfig",
    "omegaconf.listconfig ListConfig", "omegaconf.nodes AnyNode", "torch FloatStorage", "torch LongStorage",
    "torch._utils _rebuild_tensor_v2", "typing Any"}


def fixture(name, ext=".ckpt"):
    return os.path.join(FIXTURES, name + ext)


def _no_stand_ins(obj):
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int, float, bool)) and _no_stand_ins(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_no_stand_ins(v) for v in obj)
    return obj is None or isinstance(obj, (str, int, float, bool))


# ------------------------------------------------------------------------------ authors' fixtures
@pytest.mark.parametrize("name", sorted(SPIKINGSSM))
def test_official_spikingssm_reproduces_authors_logits(name):
    kind, cfg, sd, meta = load_checkpoint(fixture(name))
    assert kind == "spikingssm" and meta["detected"] == SPIKINGSSM[name]
    assert meta["family"] == "SpikingSSM" and meta["lightning_version"] == "2.0.4"
    assert _no_stand_ins(meta["hyper_parameters"]) and meta["hyper_parameters"]["model"]["_name_"] == "spikingssm"
    assert set(sd) == set(SpikingSSM(cfg).state_dict())
    model = build_model(cfg, sd).double()
    ex = np.load(fixture(name, ".expected.npz"))
    with torch.no_grad():
        logits, rec = model(torch.from_numpy(ex["x"]), neuron="sdn", record=True)
    ref = torch.from_numpy(ex["logits"])
    # Both sides run float64; they differ only in FFT/einsum summation order (~1e-16 relative per op,
    # observed <= 2.3e-16 absolute on these logits). A spike could flip only if a current landed within
    # ~1e-15 of the threshold, so spikes must match exactly and logits to 1e-12 (1000x headroom).
    assert np.array_equal(rec["spikes"][0].numpy().astype(np.uint8), ex["spikes_layer0"])
    assert torch.allclose(rec["ssm"][0], torch.from_numpy(ex["ssm_layer0"]), rtol=0, atol=1e-12)
    assert torch.allclose(logits, ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(logits.argmax(-1), ref.argmax(-1))
    assert 0.01 < float(rec["spikes"][0].mean()) < 0.5          # the comparison exercised real spiking


def test_official_config_mapping_details():
    _, cfg, _, _ = load_checkpoint(fixture("spikingssm_bidir_diagb_embedding_sharedvth"))
    assert (cfg.encoder, cfg.n_tokens, cfg.kernel, cfg.bidirectional, cfg.shared_vth, cfg.norm, cfg.prenorm,
            cfg.l_max, cfg.tau) == ("embedding", 18, "diag_b", True, True, "batch", False, 64, 0.125)
    _, cfg, _, _ = load_checkpoint(fixture("spikingssm_causal_s4d_linear"))
    # sMNIST stores no length (the trainer drops dataset.__l_max); MNIST's is fixed at 784 in code
    assert (cfg.d_input, cfg.d_output, cfg.l_max, cfg.input_levels, cfg.dropout) == (1, 10, 784, 255, 0.1)


@pytest.mark.parametrize("name", sorted(PSPIKESSM))
def test_official_pspikessm_detected(name):
    kind, cfg, sd, meta = read_checkpoint(fixture(name))
    assert kind == "pspikessm" and meta["detected"] == PSPIKESSM[name] and meta["family"] == "P-SpikeSSM"
    bidir = "bidirectional_postnorm" in name
    assert cfg.bidirectional is bidir and cfg.ssm_bidirectional is True
    assert cfg.residual is bidir and cfg.prenorm is not bidir and cfg.norm == "batch"
    assert sd["backbone.layers.0.layer.layer.kernel.C"].shape == (2, 8, 4, 2)
    assert ("backbone.layers.1.reverse_layer.layer.kernel.P" in sd) is bidir
    assert "encoder.weight" in sd and sd["decoder.weight"].shape == (10, 8)
    assert not any(k.startswith(("model.", "encoder.0.", "decoder.0.")) for k in sd)


@pytest.mark.parametrize("name", sorted(PSPIKESSM))
def test_official_pspikessm_reproduces_authors_logits_and_kernels(name):
    """Fed the uniforms the authors' forward drew, our P-SpikeSSM gives their logits (float64, only the
    summation order differs); its kernels are the ones their DPLR kernel module computed."""
    from neurocompile.models.dplr_kernel import materialize_dplr_kernel

    kind, cfg, sd, _ = load_checkpoint(fixture(name))
    model = build_model(cfg, sd).double().eval()
    ex = np.load(fixture(name, ".expected.npz"))
    uniforms = lambda layer, which, shape: torch.as_tensor(ex[f"u_layer{layer}_{which}"]).double().transpose(1, 2)
    x = torch.as_tensor(ex["x"])
    with torch.no_grad():
        logits = model(x if cfg.encoder == "embedding" else x.double(), uniforms=uniforms).numpy()
    np.testing.assert_allclose(logits, ex["logits"], rtol=1e-12, atol=1e-12)
    for i in range(cfg.n_layers):
        for half, prefix in (("fwd", "layer"), ("rev", "reverse_layer")):
            if f"k_layer{i}_{half}" not in ex.files:
                continue
            p = f"backbone.layers.{i}.{prefix}.layer.kernel."
            params = {k[len(p):]: v.double() for k, v in sd.items() if k.startswith(p)}
            K = materialize_dplr_kernel(params, cfg.l_max).numpy()
            np.testing.assert_allclose(K, ex[f"k_layer{i}_{half}"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SPIKINGSSM) + sorted(PSPIKESSM))
def test_fixture_pickles_reference_only_documented_globals(name):
    with zipfile.ZipFile(fixture(name)) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    import pickletools
    found = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert found <= OFFICIAL_GLOBALS and "omegaconf.dictconfig DictConfig" in found
    assert os.path.getsize(fixture(name)) < 300_000


# ------------------------------------------------------------------------- official layout writer
def _model(**kw):
    torch.manual_seed(0)
    base = dict(d_model=8, n_layers=2, d_state=8, l_max=32)
    base.update(kw)
    return SpikingSSM(SpikingSSMConfig(**base)).eval()


@pytest.mark.parametrize("kw, words", [
    (dict(kernel="diag_b", bidirectional=True, prenorm=True, norm="layer"),
     "bidirectional, trainable-B diagonal kernels (SSMKernelDiag), per-channel threshold"),
    (dict(encoder="embedding", n_tokens=5, learnable_vth=False, norm="batch"),
     "causal, S4D kernels (S4DKernel, fixed B), no threshold scaling (learnable_vth=False), Embedding(5 tokens)"),
    (dict(d_input=3, d_output=4, shared_vth=True, prenorm=True, norm="batch"),
     "shared threshold, Linear(3 inputs), 4 outputs, prenorm BatchNorm"),
])
def test_official_layout_round_trip(tmp_path, kw, words):
    m = _model(**kw)
    path = str(tmp_path / "last.ckpt")
    write_official(path, m)
    kind, cfg, sd, meta = load_checkpoint(path)
    assert words in meta["detected"] and cfg == m.config
    x = torch.randint(0, 5, (2, 32)) if m.config.encoder == "embedding" else torch.rand(2, 32, m.config.d_input)
    assert torch.equal(build_model(cfg, sd)(x), m(x))


def test_official_size_model(tmp_path):
    m = _model(d_model=512, n_layers=6, d_state=64, l_max=1024, bidirectional=True)
    path = str(tmp_path / "last.ckpt")
    write_official(path, m, dataset={"_name_": "cifar", "grayscale": True})   # sCIFAR stores no length
    kind, cfg, sd, meta = load_checkpoint(path)
    assert meta["detected"] == (
        "official SpikingSSM (Lightning 2.0.4): 6 layers, H=512, N=64, L=1024, bidirectional, S4D kernels "
        "(S4DKernel, fixed B), per-channel threshold, Linear(1 input), 10 outputs, postnorm LayerNorm (stored, never applied)")
    assert cfg == SpikingSSMConfig(**dict(m.config.to_dict(), input_levels=255))
    ref = m.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    x = torch.rand(1, 1024, 1)
    with torch.no_grad():
        assert torch.equal(build_model(cfg, sd)(x), m(x))


def test_missing_sequence_length_is_one_line_error(tmp_path):
    path = str(tmp_path / "nolen.ckpt")
    write_official(path, _model(), dataset={"_name_": "copying"})
    with pytest.raises(CheckpointError, match=r"nolen.ckpt: cannot tell the sequence length.*'copying'") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_unknown_lightning_model(tmp_path):
    path = str(tmp_path / "s4.ckpt")
    torch.save({"pytorch-lightning_version": "2.0.4", "state_dict": {"model.layers.0.layer.kernel.C": torch.zeros(1)},
                "hyper_parameters": {"model": {"_name_": "model"}}}, path)
    with pytest.raises(CheckpointError, match=r"does not know \(model._name_='model'"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------ restricted reader
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilPath:
    def __reduce__(self):
        import pathlib
        return (pathlib.PurePosixPath, ("/etc/passwd",))


def _write_archive(path, pickle_bytes, members=()):
    """A torch-style zip with a hand-made data.pkl (and extra (name, bytes) members)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        for name, data in members:
            z.writestr(name, data)


def test_os_system_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.ckpt")
    torch.save({"pytorch-lightning_version": "2.0.4", "state_dict": {}, "hyper_parameters": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"evil.ckpt: refused to load: the pickle references (posix|os)\.system, "
                                              r"which is not on the allow-list \(loading it could run code\)") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and not marker.exists()
    # protocol 4 names globals through the stack (STACK_GLOBAL): the unpickler's find_class refuses it
    path4 = str(tmp_path / "evil4.ckpt")
    torch.save({"x": _Evil(str(marker))}, path4, pickle_protocol=4)
    with pytest.raises(CheckpointError, match=r"references (posix|os)\.system"):
        load_checkpoint(path4)
    assert not marker.exists()


@pytest.mark.parametrize("obj, name", [(_EvilPath(), "pathlib.PurePosixPath"),
                                       (np.float64(0.5), "numpy"),
                                       (torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear")])
def test_non_allow_listed_classes_are_refused_by_name(tmp_path, obj, name):
    path = str(tmp_path / "foreign.ckpt")
    torch.save({"pytorch-lightning_version": "2.0.4", "state_dict": {}, "callbacks": {"best": obj}}, path)
    with pytest.raises(CheckpointError, match=rf"refused to load: the pickle references {name}"):
        load_checkpoint(path)


@pytest.mark.parametrize("program, what", [
    (b"\x80\x02c__builtin__\nset\n)R}b.", "sets the state of a set object"),                # BUILD on a non-stand-in
    (b"\x80\x02c__builtin__\nbytearray\n\x8a\x05\x00\x00\x00\x00\x01\x85R.", "references builtins.bytearray"),  # 4 GiB alloc
    (b"\x80\x02c__builtin__\ndict\n)R.", "calls builtins.dict"),                              # REDUCE on a value-only name
    (b"\x80\x02c__builtin__\ndict\n)\x81.", "instantiates builtins.dict"),                    # NEWOBJ outside stand-ins
    (b"(cos\nsystem\nS'true'\no.", "references os.system"),                                 # protocol 0 OBJ
    (b"\x80\x02\x82\x01.", "uses the EXT1 opcode"),                                          # copyreg extension registry
])
def test_handmade_pickles_are_refused(tmp_path, program, what):
    path = str(tmp_path / "hand.ckpt")
    _write_archive(path, program)
    with pytest.raises(CheckpointError, match=r"hand.ckpt: refused to load: the pickle " + what):
        load_checkpoint(path)


def test_reader_matches_torch_on_plain_archives(tmp_path):
    path = str(tmp_path / "plain.pt")
    obj = {"a": torch.arange(12, dtype=torch.float64).reshape(3, 4)[:, 1:3], "b": [1, 2.5, "s", None, (3, True)],
           "c": torch.tensor(3, dtype=torch.int64), "d": torch.zeros(0), "e": {1: b"bytes"}, "f": torch.randn(2, 2).to(torch.bfloat16)}
    obj["view"] = obj["a"][0]
    torch.save(obj, path)
    got = torch.load(path, weights_only=True)
    mine = torchzip.plain(torchzip.load(path))
    assert mine.keys() == got.keys()
    for k in ("a", "c", "d", "f", "view"):
        assert torch.equal(mine[k], got[k]) and mine[k].dtype == got[k].dtype and mine[k].shape == got[k].shape
    assert mine["b"] == got["b"] and mine["e"] == got["e"]


def test_tensor_records_are_bounds_checked():
    storage = torchzip._Storage(torch.arange(6.0))
    assert torch.equal(torchzip._rebuild_tensor_v2(storage, 1, (2, 2), (2, 1)), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(torchzip.ArchiveError, match="reaches element 6 of a storage of 6"):
        torchzip._rebuild_tensor_v2(storage, 2, (2, 2), (3, 1))
    with pytest.raises(torchzip.ArchiveError, match="absurd"):     # a zero-stride view claiming 10^12 elements
        torchzip._rebuild_tensor_v2(storage, 0, (10**6, 10**6), (0, 0))
    with pytest.raises(torchzip.ArchiveError, match="non-negative"):
        torchzip._rebuild_tensor_v2(storage, 0, (2,), (-1,))


# ------------------------------------------------------------------------------------ integrity
def _flip_bit_in_member(src, dst, member_suffix):
    data = bytearray(open(src, "rb").read())
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member_suffix))
    # local header: 30 bytes + name + extra, then the stored (uncompressed) member bytes
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    open(dst, "wb").write(bytes(data))
    return info.filename


def test_flipped_bit_in_tensor_data_is_refused(tmp_path):
    src = fixture("spikingssm_causal_s4d_linear")
    bad = str(tmp_path / "flipped.ckpt")
    with zipfile.ZipFile(src) as z:    # the largest storage: a mixer weight
        biggest = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size).filename
    member = _flip_bit_in_member(src, bad, biggest)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    msg = str(info.value)
    assert msg == f"{bad}: truncated or corrupt checkpoint: member '{member}' is corrupt (CRC-32 mismatch)"


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_official_file_is_refused(tmp_path, fraction):
    data = open(fixture("spikingssm_bidir_diagb_embedding_sharedvth"), "rb").read()
    path = str(tmp_path / "cut.ckpt")
    open(path, "wb").write(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=r"cut.ckpt: truncated or corrupt") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_member_sizes_are_bounded_before_reading(tmp_path, monkeypatch):
    path = str(tmp_path / "sizes.ckpt")
    torch.save({"w": torch.zeros(4096)}, path)
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    # a storage member larger than the tensor the pickle declares
    grown = str(tmp_path / "grown.ckpt")
    with zipfile.ZipFile(grown, "w") as z:
        for name, data in members.items():
            z.writestr(name, data + b"\0" * 64 if name.endswith("/data/0") else data)
    with pytest.raises(CheckpointError, match=r"member '.*/data/0' holds 16448 bytes but the pickle declares 4096 x torch.float32 \(16384 bytes\)"):
        load_checkpoint(grown)
    # an absurd declared size is refused from the directory alone (limit lowered to keep the test small)
    monkeypatch.setattr(torchzip, "MAX_MEMBER_BYTES", 8192)
    with pytest.raises(CheckpointError, match=r"member 'sizes/data/0' declares 16384 bytes \(absurd; refusing to read it\)"):
        load_checkpoint(path)
