"""Careless and hostile input, round two (issue 14), one family at a time: special files and symlinked
outputs, hangs and unbounded reads, tracebacks, wrong-but-accepted, exit status after a complete
output, signals, and the minor false refusals.  Each test runs the real CLI on real files."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

from artifact_edits import edit_manifest as _edit_manifest, exported, rezip as _rezip
from test_hostile_input import one_line_error
from neurocompile.cli import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
PSPIKE = os.path.join(ROOT, "examples", "pspikessm-digits", "ckpt.pt")
PY = sys.executable


class Hung(BaseException):
    """Raised by SIGALRM when a command blocks (not an OSError, so the CLI cannot swallow it)."""


@pytest.fixture()
def alarm():
    def fire(signum, frame):
        raise Hung()
    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return exported(tmp_path_factory, DIGITS)


@pytest.fixture(scope="module")
def pspike_art(tmp_path_factory):
    return exported(tmp_path_factory, PSPIKE)


def _ckpt_obj(path=DIGITS):
    return torch.load(path, weights_only=True)


def _save(obj, path, protocol=2):
    torch.save(obj, str(path), pickle_protocol=protocol)
    return path


def _rename_node(src: bytes, old: str, new: str) -> bytes:
    """What a hostile exporter writes: node ``old`` renamed ``new`` everywhere its name appears."""
    def swap(text: str) -> str:
        if text == old or text.startswith(old + ".") and text.endswith(".npy"):
            return new + text[len(old):]
        return text

    def fix(m):
        for n in m["nodes"]:
            if n["name"] == old:
                n["name"] = new
            n["arrays"] = {f: swap(v) for f, v in n["arrays"].items()}
        m["edges"] = [[swap(a), swap(b), p] for a, b, p in m["edges"]]
        m["delays"] = {swap(k): v for k, v in m["delays"].items()}
        m["arrays"] = {swap(k): v for k, v in m["arrays"].items()}
        for r in m["report"]["ranges"]:
            r["node"] = swap(r["node"])
        for r in m["report"]["operations"]:
            r["stage"] = swap(r["stage"])
        m["report"]["quantization_error"] = {swap(k): v for k, v in m["report"]["quantization_error"].items()}

    out = _edit_manifest(src, fix)
    return _rezip(out, lambda name, data: (swap(name), data))


def _digits_npz(path, n=3):
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 17, (n, 64)), y=rng.integers(0, 10, n))
    return path


# ================================================================ 1. a symlink is never replaced
def test_an_output_symlink_is_written_through_and_kept(tmp_path):
    target = tmp_path / "real.loihi2"
    target.write_text("old")
    link = tmp_path / "link.loihi2"
    link.symlink_to(target.name)
    assert cli(["export", DIGITS, "-o", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == target.name
    assert target.read_bytes()[:2] == b"PK"
    dangling = tmp_path / "dangling.loihi2"
    dangling.symlink_to("made-by-export.loihi2")
    assert cli(["export", DIGITS, "-o", str(dangling)]) == 0
    assert dangling.is_symlink() and (tmp_path / "made-by-export.loihi2").read_bytes()[:2] == b"PK"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_a_link_to_an_open_descriptor_is_refused_not_replaced(tmp_path):
    """`ln -s /proc/self/fd/1 s; neurocompile export ck.pt -o s > f` replaced `s` by the artifact (as
    root, `-o /dev/stdout` replaced /dev/stdout itself)."""
    link = tmp_path / "s"
    link.symlink_to("/proc/self/fd/1")
    out = tmp_path / "f"
    with open(out, "wb") as fh:
        res = subprocess.run([PY, "-m", "neurocompile", "export", DIGITS, "-o", str(link)], stdout=fh,
                             stderr=subprocess.PIPE, cwd=tmp_path, timeout=300)
    _one_line_process(res, str(link), "refusing")
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    assert out.read_bytes() == b""
    assert os.path.islink("/dev/stdout")


@pytest.mark.parametrize("kind", ["fifo", "socket", "link-to-device"])
def test_special_files_are_refused_as_outputs(kind, tmp_path, capsys, alarm):
    out = tmp_path / "out.loihi2"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(out))
    else:
        out.symlink_to("/dev/null")
    one_line_error(capsys, cli(["export", DIGITS, "-o", str(out)]), str(out), "refusing")
    assert (stat.S_ISFIFO if kind == "fifo" else stat.S_ISSOCK if kind == "socket" else stat.S_ISLNK)(
        os.lstat(out).st_mode)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# ================================================================ 2. hangs and unbounded reads
@pytest.mark.parametrize("what", ["checkpoint", "artifact", "data"])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom"])
def test_only_regular_files_are_read(what, special, art, tmp_path, capsys, alarm):
    """A FIFO blocked forever; /dev/zero and /dev/urandom were read until memory ran out."""
    if special == "fifo":
        path = str(tmp_path / ("in.npz" if what == "data" else "in"))
        os.mkfifo(path)
    else:
        path = special
    args = {"checkpoint": ["export", path, "-o", str(tmp_path / "o.loihi2")],
            "artifact": ["inspect", path],
            "data": ["simulate", str(art), "--data", path, "--engine", "emulator"]}[what]
    one_line_error(capsys, cli(args), path, "not a regular")


def _flooded_checkpoint(path, noops: int):
    """The digits checkpoint with ``noops`` NONE/POP pairs after the pickle's PROTO opcode: a valid
    pickle that inflates from a few hundred KB to millions of opcodes."""
    with zipfile.ZipFile(DIGITS) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                data = data[:2] + b"N0" * noops + data[2:]
            zout.writestr(info.filename, data)
    return path


def test_a_pickle_opcode_flood_is_refused_before_it_runs(tmp_path, capsys):
    """A 260 KB checkpoint of 255 MB of no-op opcodes ran past 300 s: the scan now stops at its bound."""
    ck = _flooded_checkpoint(tmp_path / "flood.pt", 1_200_000)
    assert os.path.getsize(ck) < 200_000
    one_line_error(capsys, cli(["export", str(ck), "-o", str(tmp_path / "o.loihi2")]), str(ck), "opcodes")
    ok = _flooded_checkpoint(tmp_path / "some.pt", 10_000)         # a few no-ops are still a valid pickle
    assert cli(["export", str(ok), "-o", str(tmp_path / "o.loihi2")]) == 0


@pytest.mark.parametrize("argv", [
    ["validate", "C", "A", "--data", "digits", "--mc-passes", "10000000"],
    ["validate", "C", "A", "--data", "digits", "--lava-samples", "100000000"],
    ["validate", "C", "A", "--data", "digits", "--batch-size", "1000000000"],
    ["validate", "C", "A", "--data", "digits", "--max-samples", "100000000000"],
    ["simulate", "A", "--data", "digits", "--count", "100000000000"],
    ["simulate", "A", "--data", "digits", "--timeout", "1e300"],
    ["export", "C", "--input-levels", "100000000"],
])
def test_every_count_option_has_a_stated_bound(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    assert exc.value.code == 2
    assert "must be in" in capsys.readouterr().err
    help_text = subprocess.run([PY, "-m", "neurocompile", argv[0], "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    option = next(a for a in argv if a.startswith("--") and a != "--data")
    assert ".." in help_text.rsplit(option, 1)[1].split("\n  -", 1)[0], help_text


# ================================================================ 3. tracebacks
@pytest.mark.parametrize("field", ["tau", "dt_min", "dropout"])
def test_config_numbers_beyond_float_range_are_one_line(field, tmp_path, capsys):
    obj = _ckpt_obj()
    obj["config"][field] = 10 ** 400
    ck = _save(obj, tmp_path / "big.pt")
    one_line_error(capsys, cli(["export", str(ck), "-o", str(tmp_path / "o.loihi2")]), str(ck))


@pytest.mark.parametrize("section,field", [("layer", "dt_min"), ("layer", "dt_max"), ("model", "dropout")])
def test_lightning_config_numbers_beyond_float_range_are_one_line(section, field, tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from official_layout import write_official
    from neurocompile.models.checkpoint import build_model, load_checkpoint

    kind, config, sd, _ = load_checkpoint(DIGITS)
    ck = tmp_path / "official.ckpt"
    write_official(str(ck), build_model(config, sd, kind))
    obj = torch.load(str(ck), weights_only=False)
    hp = obj["hyper_parameters"]["model"]
    (hp["layer"] if section == "layer" else hp)[field] = 10 ** 400
    _save(obj, ck)
    one_line_error(capsys, cli(["export", str(ck), "-o", str(tmp_path / "o.loihi2")]), str(ck))


@pytest.mark.parametrize("direction", ["spikingssm-artifact-says-pspikessm", "pspikessm-artifact-says-spikingssm"])
def test_an_edited_model_kind_is_refused_by_validate(direction, art, pspike_art, tmp_path, capsys):
    src, ck, kind = ((art, DIGITS, "pspikessm") if direction.startswith("spikingssm")
                     else (pspike_art, PSPIKE, "spikingssm"))
    bad = tmp_path / "kind.loihi2"
    bad.write_bytes(_edit_manifest(src.read_bytes(), lambda m: m["model"].__setitem__("kind", kind)))
    code = cli(["validate", ck, str(bad), "--data", "digits", "--lava-samples", "0", "--max-samples", "4"])
    one_line_error(capsys, code, str(bad))


@pytest.mark.parametrize("name", ["labels", "logits", "meta_engine", "meta_indices", "layer0.neuron.v", "../evil",
                                  "a/b", "layer1.x\x1b[2J"])
def test_node_names_cannot_collide_with_trace_keys(name, art, tmp_path, capsys):
    """A node named like a key of the traces file corrupted the .npz (or a TypeError on Lava); `../`
    could appear as a member name."""
    bad = tmp_path / "named.loihi2"
    bad.write_bytes(_rename_node(art.read_bytes(), "layer1.mixer", name))
    out = tmp_path / "t.npz"
    code = cli(["simulate", str(bad), "--data", "digits", "--engine", "emulator", "--count", "2",
                "--record", "spikes,ssm,stream,dense,voltage", "-o", str(out)])
    if code != 0:
        one_line_error(capsys, code, str(bad))
        assert not out.exists()
        return
    with zipfile.ZipFile(out) as z:
        assert not [n for n in z.namelist() if ".." in n.split("/")]
    saved = np.load(out)
    from neurocompile.datasets import load_dataset
    assert np.array_equal(saved["labels"], load_dataset("digits", "test").y[:2])
    assert saved["logits"].shape == (2, 10) and str(saved["engine"]) == "emulator"
    assert saved["dense/" + name].ndim == 3


@pytest.mark.parametrize("seed", [str(2 ** 64), str(10 ** 30), "-1"])
@pytest.mark.parametrize("command", ["simulate", "validate"])
def test_seeds_out_of_the_stated_range_are_refused(seed, command, capsys):
    argv = (["simulate", "A", "--data", "digits"] if command == "simulate"
            else ["validate", "C", "A", "--data", "digits"]) + ["--seed", seed]
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    assert exc.value.code == 2 and "must be in 0..9223372036854775807" in capsys.readouterr().err


def test_the_largest_seed_runs(pspike_art, capsys):
    assert cli(["simulate", str(pspike_art), "--data", "digits", "--engine", "emulator", "--seed",
                str(2 ** 63 - 1)]) == 0
    capsys.readouterr()
    code = cli(["validate", PSPIKE, str(pspike_art), "--data", "digits", "--lava-samples", "0", "--max-samples", "4",
                "--mc-passes", "2", "--seed", str(2 ** 63 - 1)])
    one_line_error(capsys, code, "--seed", "--mc-passes")


def _one_line_process(res, *words):
    err = [ln for ln in res.stderr.decode(errors="replace").splitlines() if ln.strip()]
    assert res.returncode == 2, (res.returncode, err)
    assert len(err) == 1 and err[0].startswith("neurocompile: error:"), err
    for w in words:
        assert w in err[0], (w, err)


def test_too_little_address_space_is_one_line(tmp_path):
    """`ulimit -v 1500000`: importing torch failed with an ImportError traceback."""
    res = subprocess.run(["bash", "-c", f"ulimit -v 1500000; exec {PY} -m neurocompile export {DIGITS} -o o.loihi2"],
                         capture_output=True, cwd=tmp_path, timeout=300)
    _one_line_process(res)
    assert os.listdir(tmp_path) == []


def test_a_deleted_working_folder_is_one_line(tmp_path):
    """From a deleted working folder, export printed a oneMKL fatal error and no `neurocompile:` line."""
    res = subprocess.run(["bash", "-c", f"mkdir gone && cd gone && rmdir ../gone && "
                                        f"exec {PY} -m neurocompile export {DIGITS} -o o.loihi2"],
                         capture_output=True, cwd=tmp_path, timeout=300)
    _one_line_process(res, "folder")


# ================================================================ 4. wrong but accepted
@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """The digits checkpoint with one weight changed, exported, its optional file digest removed."""
    d = tmp_path_factory.mktemp("other")
    obj = _ckpt_obj()
    key = next(k for k, v in obj["state_dict"].items() if v.is_floating_point() and v.numel() > 10)
    obj["state_dict"][key] = -obj["state_dict"][key]
    ck = _save(obj, d / "other.pt")
    a = d / "other.loihi2"
    assert cli(["export", str(ck), "-o", str(a)]) == 0

    def drop(m):
        m["report"]["source"].pop("checkpoint_sha256", None)
    stripped = d / "stripped.loihi2"
    stripped.write_bytes(_edit_manifest(a.read_bytes(), drop))
    return ck, a, stripped


def test_validate_pairs_by_the_weights_not_an_optional_claim(other_weights, art, tmp_path, capsys):
    _, _, stripped = other_weights
    code = cli(["validate", DIGITS, str(stripped), "--data", "digits", "--lava-samples", "0", "--max-samples", "8"])
    one_line_error(capsys, code, str(stripped), "weights")
    # and the digest cannot simply be dropped either
    bare = tmp_path / "bare.loihi2"
    bare.write_bytes(_edit_manifest(art.read_bytes(), lambda m: m["report"]["source"].pop("weights_sha256", None)))
    one_line_error(capsys, cli(["inspect", str(bare)]), str(bare))


@pytest.mark.parametrize("field,value", [("n_layers", 7), ("d_model", 999), ("d_output", 3)])
def test_inspect_never_prints_claims_the_integers_contradict(field, value, art, tmp_path, capsys):
    bad = tmp_path / "claims.loihi2"
    bad.write_bytes(_edit_manifest(art.read_bytes(), lambda m: m["model"].__setitem__(field, value)))
    code = cli(["inspect", str(bad)])
    out = capsys.readouterr()
    if code == 0:
        assert "2 layers, H=64" in out.out and "10 classes" in out.out, out.out
    else:
        assert code == 2 and len(out.err.strip().splitlines()) == 1 and str(bad) in out.err


def test_inspect_labels_what_it_cannot_verify(art, capsys):
    assert cli(["inspect", str(art)]) == 0
    out = capsys.readouterr().out
    detected = next(ln for ln in out.splitlines() if "detected:" in ln)
    assert "recorded at export" in detected


def test_terminal_escapes_from_a_checkpoint_never_reach_the_terminal(tmp_path, capsys):
    obj = _ckpt_obj()
    obj["meta"]["detected"] = "evil\x1b]0;owned\x07\x1b[2J\rline\nnext\x9b31m"
    ck = _save(obj, tmp_path / "esc.pt")
    a = tmp_path / "esc.loihi2"
    assert cli(["export", str(ck), "-o", str(a)]) == 0
    assert cli(["inspect", str(a)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\x9b" not in out
    assert "evil\\x1b]0;owned" in out


def test_nan_metrics_give_strict_json(tmp_path, capsys):
    obj = _ckpt_obj()
    obj["meta"]["metrics"] = {"loss": float("nan"), "acc": float("inf"), "ok": 0.5}
    ck = _save(obj, tmp_path / "nan.pt")
    a = tmp_path / "nan.loihi2"
    assert cli(["export", str(ck), "-o", str(a)]) == 0
    capsys.readouterr()
    assert cli(["inspect", str(a), "--json"]) == 0

    def strict(name):
        raise ValueError(name)
    report = json.loads(capsys.readouterr().out, parse_constant=strict)
    assert report["source"]["train_metrics"]["ok"] == 0.5
    with zipfile.ZipFile(a) as z:
        json.loads(z.read("manifest.json"), parse_constant=strict)


def test_traces_and_plot_through_a_folder_link_are_the_same_file(art, tmp_path, capsys):
    """`simulate -o t.npz --plot d/t.npz` with d -> . overwrote the traces with the PNG."""
    (tmp_path / "d").symlink_to(".")
    code = cli(["simulate", str(art), "--data", "digits", "--engine", "emulator", "-o", str(tmp_path / "t.npz"),
                "--plot", str(tmp_path / "d" / "t.npz")])
    one_line_error(capsys, code, "same file")
    assert not (tmp_path / "t.npz").exists()


def test_an_empty_output_name_is_refused(art, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, cli(["export", DIGITS, "-o", ""]), "empty")
    one_line_error(capsys, cli(["simulate", str(art), "--data", "digits", "--engine", "emulator", "-o", ""]), "empty")
    assert os.listdir(tmp_path) == []


def test_members_the_manifest_does_not_declare_are_refused(art, tmp_path, capsys):
    data = art.read_bytes()
    bad = tmp_path / "extra.loihi2"
    bad.write_bytes(data)
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("payload.bin", b"\0" * 100_000)
    one_line_error(capsys, cli(["inspect", str(bad)]), str(bad), "payload.bin", "not declared")


# ================================================================ 5. exit status says whether the output exists
def test_an_unencodable_output_name_still_exits_0_with_the_output(tmp_path):
    env = dict(os.environ, PYTHONIOENCODING="ascii")
    res = subprocess.run([PY, "-m", "neurocompile", "export", DIGITS, "-o", "sortie-été.loihi2"], capture_output=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sortie-été.loihi2").read_bytes()[:2] == b"PK"
    assert b"wrote sortie-\\xe9t\\xe9.loihi2" in res.stdout


def test_an_output_name_that_is_not_utf8_still_exits_0_with_the_output(tmp_path):
    name = b"bad-\xff\xfe.loihi2"
    res = subprocess.run([PY.encode(), b"-m", b"neurocompile", b"export", DIGITS.encode(), b"-o", name],
                         capture_output=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert os.listdir(os.fsencode(tmp_path)) == [name]
    assert b"bad-\\xff\\xfe.loihi2" in res.stdout


def test_stdout_on_a_full_device(art, tmp_path):
    """export's summary cannot be written: the artifact exists, so exit 0 and a warning; inspect's
    output is stdout itself, so it fails in one line."""
    with open("/dev/full", "w") as full:
        res = subprocess.run([PY, "-m", "neurocompile", "export", DIGITS, "-o", "o.loihi2"], stdout=full,
                             stderr=subprocess.PIPE, cwd=tmp_path, timeout=300)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "o.loihi2").read_bytes()[:2] == b"PK"
        err = res.stderr.decode().strip().splitlines()
        assert len(err) == 1 and err[0].startswith("neurocompile: warning:") and "o.loihi2" in err[0], err
        res = subprocess.run([PY, "-m", "neurocompile", "inspect", str(art)], stdout=full, stderr=subprocess.PIPE,
                             timeout=300)
    _one_line_process(res, "stdout")


# ================================================================ 6. signals
def _wait_for(pred, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1])
def test_hup_quit_usr1_while_export_runs_end_cleanly(sig, tmp_path):
    """SIGHUP, SIGQUIT or SIGUSR1 left `.tmp-*` files (and SIGQUIT a core); handled like SIGTERM now."""
    proc = subprocess.Popen([PY, "-c", "import sys, time; from neurocompile import cli, fileio\n"
                             "real = fileio.write_atomic\n"
                             "def slow(path, write, inputs=()):\n"
                             "    def w(fh):\n"
                             "        write(fh); fh.flush(); open('writing', 'w').close(); time.sleep(60)\n"
                             "    real(path, w, inputs)\n"
                             "import neurocompile.artifact as a; a.write_atomic = slow\n"
                             f"sys.exit(cli.main(['export', {DIGITS!r}, '-o', 'o.loihi2']))"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    assert _wait_for(lambda: (tmp_path / "writing").exists() or proc.poll() is not None)
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")], "the export is writing"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert err.decode().strip() == "neurocompile: terminated"
    assert sorted(os.listdir(tmp_path)) == ["writing"]


def test_what_a_killed_export_left_is_cleared_by_the_next(tmp_path):
    """SIGKILL cannot be caught: the temporaries name their process, and the next run clears those of
    dead processes (and keeps a live one's)."""
    proc = subprocess.Popen([PY, "-c", "import time, neurocompile.fileio as f\n"
                             "f.write_atomic('o.loihi2', lambda fh: (fh.write(b'partial'), fh.flush(), time.sleep(60)))"],
                            cwd=tmp_path)
    assert _wait_for(lambda: any(f.startswith(".tmp-") for f in os.listdir(tmp_path)))
    proc.kill()
    proc.wait()
    left = [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert left and left[0].startswith(f".tmp-{proc.pid}-")
    alive = tmp_path / f".tmp-{os.getpid()}-abc-o.loihi2"        # a live writer's temp file stays
    alive.write_bytes(b"in progress")
    assert cli(["export", DIGITS, "-o", str(tmp_path / "o.loihi2")]) == 0
    assert sorted(os.listdir(tmp_path)) == sorted(["o.loihi2", alive.name])


@pytest.mark.lava
def test_what_a_killed_lava_run_left_is_cleared_by_the_next(art, tmp_path):
    """SIGKILL during a Lava run left its scratch folder in $TMPDIR and its shared memory."""
    import tempfile
    tmpdir = tempfile.mkdtemp(prefix="nc", dir="/tmp")          # short: Lava's sockets live under TMPDIR
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = os.path.join(tmpdir, f"shard-{dead.pid}-abcd_123")
    os.makedirs(stale)
    shm = f"psm_neurocompile_test_{os.getpid()}"
    open(f"/dev/shm/{shm}", "wb").close()
    with open(os.path.join(stale, "shared-memory.log"), "w") as fh:
        fh.write(shm + "\n")
    env = dict(os.environ, TMPDIR=str(tmpdir))
    res = subprocess.run([PY, "-m", "neurocompile", "simulate", str(art), "--data", "digits", "--engine", "lava"],
                         capture_output=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert os.listdir(tmpdir) == [] and not os.path.exists(f"/dev/shm/{shm}")
    os.rmdir(tmpdir)


@pytest.mark.lava
@pytest.mark.parametrize("how", ["ulimit -n 40", "long TMPDIR", "full TMPDIR"])
def test_a_lava_run_in_a_poor_environment_is_one_line(how, art, tmp_path):
    """A full TMPDIR or `ulimit -n 40` printed stray traceback lines of Lava's processes before the one line."""
    env, prefix = dict(os.environ), ""
    if how == "ulimit -n 40":
        prefix = "ulimit -n 40; "
    elif how == "long TMPDIR":
        deep = tmp_path / ("d" * 60)
        deep.mkdir()
        env["TMPDIR"] = str(deep)
    else:
        if not os.path.isdir("/dev/shm") or os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize < 1 << 30:
            pytest.fail("needs /dev/shm with 1 GiB free to make a small full folder")
        full = tmp_path / "full"
        full.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], capture_output=True)
        if res.returncode != 0:
            pytest.fail(f"cannot mount a 1 MiB tmpfs: {res.stderr}")
        env["TMPDIR"] = str(full)
    try:
        res = subprocess.run(["bash", "-c", f"{prefix}exec {PY} -m neurocompile simulate {art} --data digits "
                                            "--engine lava"], capture_output=True, env=env, cwd=tmp_path, timeout=600)
    finally:
        if how == "full TMPDIR":
            subprocess.run(["umount", str(tmp_path / "full")])
    _one_line_process(res, "Lava" if how == "ulimit -n 40" else "TMPDIR")


# ================================================================ 7. minor
def test_an_output_named_like_a_dataset_is_not_an_input(tmp_path, monkeypatch, art, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["validate", DIGITS, str(art), "--data", "digits", "--lava-samples", "0", "--max-samples", "8",
                "--json", "digits"]) == 0
    assert json.loads((tmp_path / "digits").read_text())["dataset"]["name"] == "digits"


def test_the_same_weights_saved_with_protocol_4_pair_with_their_artifact(art, tmp_path, capsys):
    ck = _save(_ckpt_obj(), tmp_path / "p4.pt", protocol=4)
    assert open(ck, "rb").read() != open(DIGITS, "rb").read()
    assert cli(["validate", str(ck), str(art), "--data", "digits", "--lava-samples", "0", "--max-samples", "8"]) == 0


def test_a_negative_input_range_parses_as_a_value(tmp_path, capsys):
    out = tmp_path / "neg.loihi2"
    assert cli(["export", DIGITS, "-o", str(out), "--input-range", "-5,5"]) == 0
    assert "over [-5, 5]" in capsys.readouterr().out


def test_input_levels_from_a_checkpoint_blame_the_checkpoint(tmp_path, capsys):
    obj = _ckpt_obj()
    obj["config"]["input_levels"] = 65536
    ck = _save(obj, tmp_path / "levels.pt")
    code = cli(["export", str(ck), "-o", str(tmp_path / "o.loihi2"), "--input-range", "0,1"])
    err = one_line_error(capsys, code, str(ck))
    assert "--input-levels" not in err


@pytest.mark.parametrize("what", ["checkpoint", "artifact", "data"])
def test_an_unreadable_file_is_named(what, art, tmp_path, capsys):
    path = "/proc/self/mem"
    args = {"checkpoint": ["export", path, "-o", str(tmp_path / "o.loihi2")], "artifact": ["inspect", path],
            "data": ["simulate", str(art), "--data", path, "--engine", "emulator"]}[what]
    err = one_line_error(capsys, cli(args), path)
    assert len(err) > len(f"neurocompile: error: {path}: ") + 5


def test_a_newline_in_a_path_is_escaped_not_cut(tmp_path, capsys):
    path = str(tmp_path / "two\nlines.pt")
    err = one_line_error(capsys, cli(["export", path, "-o", str(tmp_path / "o.loihi2")]))
    assert "two\\nlines.pt" in err


def test_an_overwritten_output_loses_setuid_setgid_sticky(tmp_path):
    out = tmp_path / "o.loihi2"
    out.write_text("old")
    os.chmod(out, 0o7755)
    assert cli(["export", DIGITS, "-o", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755


def test_a_seed_beyond_32_bits_is_not_seed_0(pspike_art, tmp_path, capsys):
    """`--seed 4294967296` silently equalled `--seed 0` (the PRNG kept the low 32 bits)."""
    spikes = {}
    for seed in ("0", str(2 ** 32), str(2 ** 63 - 1)):
        out = tmp_path / f"s{seed}.npz"
        assert cli(["simulate", str(pspike_art), "--data", "digits", "--engine", "emulator", "--count", "2",
                    "--record", "spikes", "--seed", seed, "-o", str(out)]) == 0
        with np.load(out) as t:
            spikes[seed] = np.concatenate([t[k].ravel() for k in sorted(t.files) if k.startswith("spikes/")])
    assert not np.array_equal(spikes["0"], spikes[str(2 ** 32)])
    assert not np.array_equal(spikes["0"], spikes[str(2 ** 63 - 1)])


def test_a_zip64_locator_claiming_several_disks_is_a_corrupt_checkpoint(tmp_path, capsys):
    """Found by the round-two fuzz run (a bit flip in a checkpoint's tail): zipfile.is_zipfile itself
    raises BadZipFile ("zipfiles that span multiple disks") when a ZIP64 end-record locator names a
    second disk.  That is a corrupt checkpoint: one line, exit 2, nothing written."""
    import struct
    data = open(DIGITS, "rb").read()
    end = data.rindex(b"PK\x05\x06")                                  # the end-of-central-directory record
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 1, 0, 2)           # disk 1 of 2
    bad = tmp_path / "spanned.pt"
    bad.write_bytes(data[:end] + locator + data[end:])
    with pytest.raises(zipfile.BadZipFile, match="span multiple disks"):
        zipfile.is_zipfile(str(bad))                                  # the library's own behaviour
    out = tmp_path / "out.loihi2"
    one_line_error(capsys, cli(["export", str(bad), "-o", str(out)]), "spanned.pt", "corrupt")
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["spanned.pt"]


# ------------------------------------------------ found by the full round-two fuzz run (seed 3)
def test_a_non_finite_batchnorm_scale_names_the_checkpoint(tmp_path, capsys):
    """fuzz ckpt-00911: a running_var of -1e30 made the error name the tensor but not the file."""
    obj = _ckpt_obj(PSPIKE)
    key = next(k for k in obj["state_dict"] if k.endswith("running_var"))
    obj["state_dict"][key] = torch.full_like(obj["state_dict"][key], -1e30)
    ck = _save(obj, tmp_path / "bn.pt")
    one_line_error(capsys, cli(["export", str(ck), "-o", str(tmp_path / "o.loihi2")]), str(ck),
                   "running_var", "not finite")
    assert sorted(os.listdir(tmp_path)) == ["bn.pt"]


def test_input_levels_beyond_the_format_in_a_checkpoint_name_the_file_and_the_field(tmp_path, capsys):
    """fuzz ckpt-01650: input_levels = 2**64 in the config blamed the --input-levels option."""
    obj = _ckpt_obj()
    obj["config"]["input_levels"] = 2 ** 64
    ck = _save(obj, tmp_path / "levels.pt")
    err = one_line_error(capsys, cli(["export", str(ck), "-o", str(tmp_path / "o.loihi2")]), str(ck),
                         "input_levels", "1..65535")
    assert "--input-levels" not in err


def test_a_singular_s4_discretisation_is_refused_in_one_line(tmp_path, capsys):
    """fuzz ckpt-01777 (kept in tests/fixtures/hostile): a duplicated archive member gave a
    torch.linalg.solve traceback while materialising an S4 DPLR kernel."""
    ck = os.path.join(ROOT, "tests", "fixtures", "hostile", "singular_dplr_discretisation.ckpt")
    out = tmp_path / "o.loihi2"
    one_line_error(capsys, cli(["export", ck, "-o", str(out)]), ck, "layer1.ssm", "cannot be materialised")
    assert not out.exists()


@pytest.mark.parametrize("when", ["while the output is renamed into place", "just after it is recorded"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_after_the_output_is_written_leaves_no_output(when, signum, tmp_path, capsys, monkeypatch):
    """fuzz env-01046: SIGUSR1 landed after export's artifact was complete, and the command exited
    138 with the artifact on disk.  A command that does not finish leaves no output (its exit status
    says whether the output exists): a signal inside the rename is held until the output is
    recorded, and a command ended by a signal removes what it had completed."""
    from neurocompile import fileio
    publish = fileio._publish

    def publish_then_signal(tmp, target, path):
        if when.startswith("while"):
            replace = os.replace
            monkeypatch.setattr(os, "replace", lambda a, b: (replace(a, b), os.kill(os.getpid(), signum)))
            publish(tmp, target, path)
        else:
            publish(tmp, target, path)
            os.kill(os.getpid(), signum)
    monkeypatch.setattr(fileio, "_publish", publish_then_signal)
    monkeypatch.chdir(tmp_path)
    code = cli(["export", DIGITS, "-o", "o.loihi2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == (130 if signum == signal.SIGINT else 128 + signum)
    assert len(err) == 1 and "o.loihi2 removed: the command did not finish" in err[0], err
    assert os.listdir(tmp_path) == []


def test_a_signal_as_the_temporary_file_is_created_leaves_nothing(tmp_path, capsys, monkeypatch):
    """fuzz env-00158: SIGHUP landed after mkstemp had created the temporary output but before its
    name was known to the cleanup, and a .tmp-* file stayed behind in the output's folder."""
    import tempfile
    mkstemp = tempfile.mkstemp

    def mkstemp_then_signal(*a, **k):
        made = mkstemp(*a, **k)
        os.kill(os.getpid(), signal.SIGHUP)
        return made
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_signal)
    monkeypatch.chdir(tmp_path)
    code = cli(["export", DIGITS, "-o", "o.loihi2"])
    assert code == 128 + signal.SIGHUP
    assert capsys.readouterr().err.strip().splitlines() == ["neurocompile: terminated"]
    assert os.listdir(tmp_path) == []
