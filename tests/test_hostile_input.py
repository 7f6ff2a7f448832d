"""Careless and hostile input, one family at a time: nothing destroyed, nothing mis-compiled, nothing
leaked, and one line `neurocompile: error: <file>: <problem>` with exit 2 for every refusal.
(The seeded fuzz sample in test_fuzz_sample.py runs the same paths on thousands of mutants.)"""
import io
import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from neurocompile.artifact import load_program, save_program
from neurocompile.cli import main as cli
from neurocompile.errors import ArtifactError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")


def one_line_error(capsys, code, *names):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("neurocompile: error:"), err
    for name in names:
        assert name in err, (name, err)
    return err


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "digits.loihi2"
    assert cli(["export", DIGITS, "-o", str(path)]) == 0
    return path


@pytest.fixture()
def work(tmp_path, artifact):
    """Copies of the checkpoint and artifact, with their bytes and modes, to check nothing changed."""
    ckpt, art = tmp_path / "c.pt", tmp_path / "a.loihi2"
    ckpt.write_bytes(open(DIGITS, "rb").read())
    art.write_bytes(artifact.read_bytes())
    os.chmod(art, 0o640)
    before = {p: (p.read_bytes(), stat.S_IMODE(os.stat(p).st_mode)) for p in (ckpt, art)}
    yield ckpt, art
    for p, (data, mode) in before.items():
        assert p.read_bytes() == data and stat.S_IMODE(os.stat(p).st_mode) == mode, f"{p.name} was changed"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


# ------------------------------------------------------------------ inputs are never destroyed
@pytest.mark.parametrize("case", ["export-onto-checkpoint", "simulate-onto-artifact", "plot-onto-artifact",
                                  "json-onto-checkpoint", "json-onto-artifact", "device-node"])
def test_outputs_never_replace_inputs(case, work, capsys):
    ckpt, art = work
    args = {"export-onto-checkpoint": ["export", str(ckpt), "-o", str(ckpt)],
            "simulate-onto-artifact": ["simulate", str(art), "--data", "digits", "--engine", "emulator", "-o", str(art)],
            "plot-onto-artifact": ["simulate", str(art), "--data", "digits", "--engine", "emulator", "--plot", str(art)],
            "json-onto-checkpoint": ["validate", str(ckpt), str(art), "--data", "digits", "--json", str(ckpt)],
            "json-onto-artifact": ["validate", str(ckpt), str(art), "--data", "digits", "--json", str(art)],
            "device-node": ["export", str(ckpt), "-o", "/dev/null"]}[case]
    one_line_error(capsys, cli(args), "refusing")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_an_overwritten_output_keeps_its_mode_and_a_new_one_gets_the_umask(work, tmp_path):
    ckpt, _ = work
    out = tmp_path / "out.loihi2"
    out.write_text("old")
    os.chmod(out, 0o600)
    assert cli(["export", str(ckpt), "-o", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and out.read_bytes()[:2] == b"PK"
    old = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.loihi2"
        assert cli(["export", str(ckpt), "-o", str(fresh)]) == 0
        assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o640
    finally:
        os.umask(old)


# ------------------------------------------------------------------ no "proven safe" for unsafe programs
@pytest.mark.parametrize("tensor,value,words", [
    ("backbone.s4_layers.0.output_linear.0.weight", 1e30, "layer0.residual: residual-stream channel"),
    ("encoder.weight", 1e30, "encoder: residual-stream channel"),
    ("backbone.s4_layers.1.kernel.log_dt", 3e4, "layer1.ssm: the kernel computed from its SSM parameters is not finite"),
    ("backbone.s4_layers.0.D", 1e30, "layer0.ssm: kernel channel"),
    ("backbone.s4_layers.0.ln_vth", -3e4, "ln_vth: exp(ln_vth) over- or underflows"),
])
def test_values_the_proof_cannot_hold_are_refused_naming_node_and_bound(tensor, value, words, tmp_path, capsys):
    raw = torch.load(DIGITS, weights_only=True)
    sd = {k: v.clone() for k, v in raw["state_dict"].items()}
    sd[tensor].view(-1)[0] = value
    path, out = tmp_path / "hostile.pt", tmp_path / "x.loihi2"
    torch.save(dict(raw, state_dict=sd), path)
    one_line_error(capsys, cli(["export", str(path), "-o", str(out)]), "hostile.pt", words)
    assert not out.exists()


# ------------------------------------------------------------------ the loader is a verifier
def _edit(src, dst, manifest=None, arrays=None):
    """Copy an artifact, editing its manifest (a function of the dict) and/or arrays (name -> array)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            blob = zin.read(item)
            if item == "manifest.json" and manifest:
                m = json.loads(blob)
                manifest(m)
                blob = json.dumps(m).encode()
            elif arrays and item in arrays:
                buf = io.BytesIO()
                np.save(buf, arrays[item])
                blob = buf.getvalue()
            zout.writestr(item, blob)


def _set_array(m, member, shape, dtype):
    m["arrays"][member] = {"shape": list(shape), "dtype": dtype}


@pytest.mark.parametrize("case,words", [
    ("shift", "shift outside"), ("empty-lut", "even length >= 2"), ("nan-float", "NaN or Inf"),
    ("stream-bits", "bit planes"), ("kernel-tap", "not provably safe"), ("int64-min-tap", r"beyond \+-2\*\*62"),
    ("unknown-type", "unknown node type"), ("wrong-param-type", "must be an integer"),
    ("dangling-edge", "unknown node"), ("version-1", "re-export"), ("delays", "delays disagree"),
])
def test_edited_artifacts_are_refused(case, words, artifact, tmp_path):
    bad = tmp_path / "bad.loihi2"
    m0 = json.loads(zipfile.ZipFile(artifact).read("manifest.json"))
    conv = next(n for n in m0["nodes"] if n["type"] == "IntSSMConv")
    glu = next(n for n in m0["nodes"] if n["type"] == "IntGLUResidual")
    k = np.load(io.BytesIO(zipfile.ZipFile(artifact).read(conv["arrays"]["kernel"]))).astype(np.int64)
    if case == "shift":
        _edit(artifact, bad, lambda m: _set_array(m, glu["arrays"]["out_shift"], (64,), "int64"),
              {glu["arrays"]["out_shift"]: np.full(64, 70, np.int64)})
    elif case == "empty-lut":
        _edit(artifact, bad, lambda m: _set_array(m, glu["arrays"]["lut"], (0,), "int64"),
              {glu["arrays"]["lut"]: np.zeros(0, np.int64)})
    elif case == "nan-float":
        kf = conv["arrays"]["kernel_float"]
        arr = np.load(io.BytesIO(zipfile.ZipFile(artifact).read(kf)))
        arr[0, 0] = np.nan
        _edit(artifact, bad, arrays={kf: arr})
    elif case == "stream-bits":
        def edit(m):
            next(n for n in m["nodes"] if n["name"] == conv["name"])["params"]["stream_bits"] = 60
        _edit(artifact, bad, edit)
    elif case in ("kernel-tap", "int64-min-tap"):
        k[0, 0] = 2 ** 40 if case == "kernel-tap" else np.iinfo(np.int64).min
        _edit(artifact, bad, lambda m: _set_array(m, conv["arrays"]["kernel"], k.shape, "int64"),
              {conv["arrays"]["kernel"]: k})
    elif case == "unknown-type":
        _edit(artifact, bad, lambda m: m["nodes"][3].__setitem__("type", "IntEval"))
    elif case == "wrong-param-type":
        _edit(artifact, bad, lambda m: next(n for n in m["nodes"] if n["name"] == conv["name"])["params"]
              .__setitem__("split", "0; import os"))
    elif case == "dangling-edge":
        _edit(artifact, bad, lambda m: m["edges"].append(["nowhere", conv["name"], "main"]))
    elif case == "version-1":
        _edit(artifact, bad, lambda m: m.__setitem__("version", 1))
    elif case == "delays":
        _edit(artifact, bad, lambda m: m["delays"].__setitem__(glu["name"], 0))
    with pytest.raises(ArtifactError, match=words) as info:
        load_program(str(bad))
    assert "\n" not in str(info.value) and "bad.loihi2" in str(info.value)


# ------------------------------------------------------------------ sizes are bounded before allocating
def test_a_member_claiming_gigabytes_is_refused_before_inflating(artifact, tmp_path):
    """Edit the central directory so one array claims 3 GB uncompressed: refused without reading it."""
    data = bytearray(artifact.read_bytes())
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = next(i for i in zf.infolist() if i.filename.endswith(".kernel.npy"))
    at = data.find(b"PK\x01\x02")                                       # central directory entries
    while data[at + 46:at + 46 + len(info.filename)] != info.filename.encode():
        at = data.find(b"PK\x01\x02", at + 4)
    data[at + 24:at + 28] = (3 * 10 ** 9).to_bytes(4, "little")       # uncompressed size
    big = tmp_path / "big.loihi2"
    big.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="holds 3000000000 bytes"):
        load_program(str(big))


def test_a_checkpoint_claiming_a_huge_sequence_is_refused(tmp_path, capsys):
    raw = torch.load(DIGITS, weights_only=True)
    path = tmp_path / "long.pt"
    torch.save(dict(raw, config=dict(raw["config"], l_max=10 ** 6)), path)
    one_line_error(capsys, cli(["export", str(path), "-o", str(tmp_path / "x.loihi2")]), "long.pt", "l_max = 1000000")


# ------------------------------------------------------------------ silent corruption
def test_a_flipped_bit_in_an_artifact_is_refused(artifact, tmp_path):
    data = bytearray(artifact.read_bytes())
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = next(i for i in zf.infolist() if i.filename.endswith("encoder.weight.npy"))
    data[info.header_offset + 30 + len(info.filename) + 5] ^= 0x10   # inside the member's deflated data
    bad = tmp_path / "flip.loihi2"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="flip.loihi2"):
        load_program(str(bad))


# ------------------------------------------------------------------ one line, never a traceback
def test_environment_errors_are_one_line(work, capsys):
    ckpt, art = work
    one_line_error(capsys, cli(["export", str(ckpt), "-o", "/proc/neurocompile-test.loihi2"]), "/proc")
    one_line_error(capsys, cli(["validate", str(ckpt), str(art), "--data", "digits", "--device", "bogus"]), "bogus")
    for flag, value in (("--batch-size", "-1"), ("--max-samples", "-3"), ("--timeout", "-5")):
        with pytest.raises(SystemExit) as info:
            cli(["validate", str(ckpt), str(art), "--data", "digits", flag, value])
        assert info.value.code == 2 and "must be" in capsys.readouterr().err


def test_labels_outside_the_classes_are_refused(work, tmp_path, capsys):
    _, art = work
    data = tmp_path / "labels.npz"
    np.savez(data, x=np.zeros((2, 64, 1), np.int64), y=np.array([3, 10]), levels=np.array(16))
    one_line_error(capsys, cli(["simulate", str(art), "--data", str(data), "--engine", "emulator"]), "labels.npz",
                   "classes 0..9")


def test_inspect_into_a_closed_pipe_is_quiet(artifact):
    res = subprocess.run(f"{sys.executable} -m neurocompile inspect {artifact} | head -1", shell=True,
                         capture_output=True, text=True, timeout=300)
    assert res.stdout.startswith("artifact") and "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr


def test_low_precision_exports_warn(work, tmp_path, capsys):
    ckpt, _ = work
    assert cli(["export", str(ckpt), "-o", str(tmp_path / "k2.loihi2"), "--kernel-bits", "2"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: layer0.ssm keeps its weights only to" in out
    assert cli(["export", str(ckpt), "-o", str(tmp_path / "k8.loihi2")]) == 0
    assert "WARNING" not in capsys.readouterr().out


@pytest.mark.lava
def test_sigterm_during_a_lava_run_ends_with_one_line_and_no_shared_memory(artifact, tmp_path):
    """`kill` or `timeout` sends SIGTERM: Python's default action ended the CLI at once, leaving the
    Lava run's ~70 /dev/shm segments behind.  Now it cleans up as for Ctrl-C."""
    import signal
    import time

    before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen([sys.executable, "-m", "neurocompile.cli", "simulate", str(artifact), "--data", "digits",
                             "--engine", "lava", "--count", "40", "-o", str(tmp_path / "t.npz")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if {n for n in set(os.listdir("/dev/shm")) - before if n.startswith("psm_")}:
            break                                     # the Lava network is up
        time.sleep(0.2)
    assert proc.poll() is None, "the Lava run ended before it could be terminated"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    lines = [ln.strip() for ln in err.decode().splitlines()]         # progress bars share stderr
    assert [ln for ln in lines if ln.endswith("neurocompile: terminated")]
    assert not any("Traceback" in ln for ln in lines)
    from lava_faults import leaked_lava_segments
    assert leaked_lava_segments(before) == set()
    assert os.listdir(tmp_path) == []                 # no partial traces
