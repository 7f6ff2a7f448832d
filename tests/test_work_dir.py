"""The work-dir: a stop (Ctrl-C, SIGTERM, SIGHUP, a full disk) never erases a stored shard and the
rerun reuses every one; a work-dir that does not exist yet is created; what is not the store's own
regular file (a FIFO, /dev/zero, a folder, a link out of the work-dir) ends the run with one line,
never a hang, and nothing is written outside the work-dir."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from neurocompile.cli import main as cli
from neurocompile.execute import reap_stale_scratch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
CLI = [sys.executable, "-m", "neurocompile"]
FLOAT_ONLY = ["--data", "digits", "--max-samples", "16", "--batch-size", "8", "--lava-samples", "0",
              "--activity-samples", "0"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "digits.loihi2"
    assert cli(["export", DIGITS, "-o", str(path)]) == 0
    return str(path)


@pytest.fixture(scope="module")
def stored(artifact, tmp_path_factory):
    """A work-dir holding a float-only run's two shards."""
    work = tmp_path_factory.mktemp("stored") / "work"
    assert cli(["validate", DIGITS, artifact, *FLOAT_ONLY, "--work-dir", str(work)]) == 0
    return work


def _shard_files(work) -> list:
    return sorted(glob.glob(os.path.join(str(work), "shards", "*", "*.npz")))


def _shard_keys(work) -> list:
    keys = []
    for path in _shard_files(work):
        with np.load(path, allow_pickle=False) as data:
            keys.append(str(data["__shard__"][1]))
    return keys


def _messages(stderr: str) -> list:
    """stderr without the progress bars (a reused shard's bar is complete before the error)."""
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ln.startswith("neurocompile")]


def _run(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def test_a_missing_work_dir_is_created_when_its_parent_exists(artifact, tmp_path, capsys):
    assert cli(["validate", DIGITS, artifact, *FLOAT_ONLY, "--work-dir", str(tmp_path / "new")]) == 0
    assert len(_shard_files(tmp_path / "new")) == 2
    capsys.readouterr()
    assert cli(["validate", DIGITS, artifact, *FLOAT_ONLY, "--work-dir", str(tmp_path / "no" / "new")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and not (tmp_path / "no").exists()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "link-out", "shards-link-out"])
def test_what_is_not_a_stored_shard_ends_the_run_in_one_line_and_nothing_is_written_outside(
        artifact, stored, tmp_path, kind):
    work = tmp_path / "work"
    shutil.copytree(stored, work, symlinks=True)
    victim = _shard_files(work)[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"precious")
    os.unlink(victim)
    if kind == "fifo":
        os.mkfifo(victim)
    elif kind == "dev-zero":
        os.symlink("/dev/zero", victim)
    elif kind == "folder":
        os.mkdir(victim)
    elif kind == "link-out":
        os.symlink(outside / "precious", victim)
    else:
        shutil.rmtree(work / "shards")
        os.symlink(outside, work / "shards")
    t0 = time.monotonic()
    res = _run("validate", DIGITS, artifact, *FLOAT_ONLY, "--work-dir", str(work), timeout=90)
    lines = _messages(res.stderr)
    assert res.returncode == 2 and len(lines) == 1 and "refusing to" in lines[0], res.stderr
    assert time.monotonic() - t0 < 90
    assert sorted(os.listdir(outside)) == ["precious"] and (outside / "precious").read_bytes() == b"precious"


def test_a_fifo_in_the_scratch_folder_is_refused_not_opened(artifact, stored, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.mkfifo(scratch / f"shard-{dead.pid}-abcdefgh")
    with pytest.raises(Exception, match="FIFO.*refusing to read it"):
        reap_stale_scratch(str(scratch))
    work = tmp_path / "work"
    shutil.copytree(stored, work)
    (work / "scratch").mkdir()
    os.mkfifo(work / "scratch" / f"shard-{dead.pid}-abcdefgh")
    res = _run("validate", DIGITS, artifact, *FLOAT_ONLY, "--workers", "1", "--work-dir", str(work), timeout=90)
    lines = _messages(res.stderr)
    assert res.returncode == 2 and len(lines) == 1 and "refusing to read it" in lines[0], res.stderr


@pytest.mark.parametrize("what", ["file", "fifo", "dangling link"])
def test_a_scratch_place_that_is_not_a_folder_is_named_in_one_line(tmp_path, what):
    """benchmarks/fuzz.py store-00024: W/scratch a regular file gave "[Errno 17] File exists: 'W/scratch'"."""
    from neurocompile.errors import NeurocompileError
    from neurocompile.execute import LocalExecutor
    scratch = tmp_path / "scratch"
    if what == "file":
        scratch.write_text("mine")
    elif what == "fifo":
        os.mkfifo(scratch)
    else:
        os.symlink(tmp_path / "missing", scratch)
    with pytest.raises(NeurocompileError) as err:
        LocalExecutor(2, scratch=str(scratch)).run([])
    kind = {"file": "a regular file", "fifo": "a FIFO", "dangling link": "a symbolic link"}[what]
    assert str(err.value).startswith(f"{scratch}: is {kind}"), str(err.value)
    assert os.listdir(tmp_path) == ["scratch"]
    if what == "file":
        assert scratch.read_text() == "mine"


def test_a_work_dir_that_is_a_regular_file_is_called_one(tmp_path):
    """It was "is not a regular file, not a folder" (benchmarks/fuzz.py store-00006)."""
    from neurocompile.shard_store import WorkDirError, make_work_dir
    (tmp_path / "w").write_text("mine")
    with pytest.raises(WorkDirError, match=r"w: is a regular file, not a folder; refusing to use it as the work-dir"):
        make_work_dir(str(tmp_path / "w"))
    assert (tmp_path / "w").read_text() == "mine"


# ------------------------------------------------------------------------ stops keep every shard
LAVA_RUN = ["--data", "digits", "--max-samples", "8", "--batch-size", "8", "--lava-samples", "4",
            "--lava-shard-samples", "1", "--activity-samples", "0"]


def _start(artifact, work):
    return subprocess.Popen(CLI + ["validate", DIGITS, artifact, *LAVA_RUN, "--work-dir", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_lava_shards(proc, work, k: int, deadline_s: float = 300):
    deadline = time.monotonic() + deadline_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if sum(key.startswith("lava") for key in _shard_keys(work)) >= k:
                return
        except (OSError, ValueError, KeyError):
            pass                                      # a file being renamed into place
        time.sleep(0.2)
    raise AssertionError(f"the run ended or stalled before {k} Lava shard(s) were stored: {proc.poll()}")


@pytest.mark.lava
def test_ctrl_c_sigterm_and_sighup_leave_every_stored_shard_and_the_rerun_reuses_them(artifact, tmp_path):
    work = tmp_path / "new-work"                       # created by the first run
    for k, sig, code, word in ((1, signal.SIGINT, 130, "interrupted"), (2, signal.SIGTERM, 143, "terminated"),
                               (3, signal.SIGHUP, 129, "terminated")):
        proc = _start(artifact, work)
        _wait_for_lava_shards(proc, work, k)
        before = set(_shard_files(work))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code and err.strip().splitlines()[-1] == f"neurocompile: {word}", err
        assert before <= set(_shard_files(work)), f"{signal.Signals(sig).name} removed stored shards"
    stored_lava = sum(key.startswith("lava") for key in _shard_keys(work))
    assert stored_lava >= 3
    out = tmp_path / "r.json"
    assert cli(["validate", DIGITS, artifact, *LAVA_RUN, "--work-dir", str(work), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["lava_shards_reused"] == stored_lava and report["lava_bit_exact"] is True


@pytest.mark.lava
def test_a_full_disk_leaves_every_stored_shard_and_the_rerun_reuses_them(artifact, tmp_path):
    """A real full disk: the work-dir on a small tmpfs filled up once a Lava shard is stored (needs
    root to mount; elsewhere the test fails rather than pretends)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        work = mnt / "work"
        proc = _start(artifact, work)
        _wait_for_lava_shards(proc, work, 1)
        with open(mnt / "filler", "wb") as fh:         # every free byte taken
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        before = set(_shard_files(work))
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2 and "No space left on device" in lines[-1], err
        assert before <= set(_shard_files(work))
        stored_lava = sum(key.startswith("lava") for key in _shard_keys(work))
        os.unlink(mnt / "filler")
        out = tmp_path / "r.json"
        assert cli(["validate", DIGITS, artifact, *LAVA_RUN, "--work-dir", str(work), "--json", str(out)]) == 0
        assert json.loads(out.read_text())["lava_shards_reused"] == stored_lava >= 1
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


# ------------------------------------------------------------------ the store is a cache, not a witness
@pytest.mark.lava
def test_a_forged_lava_shard_with_its_digest_recomputed_cannot_make_lava_bit_exact(artifact, tmp_path):
    from neurocompile.shard_store import digest_arrays
    run = ["validate", DIGITS, artifact, "--data", "digits", "--max-samples", "8", "--batch-size", "8",
           "--lava-samples", "2", "--lava-shard-samples", "1", "--activity-samples", "0", "--work-dir", str(tmp_path / "w")]
    assert cli(run + ["--json", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["lava_bit_exact"] is True
    forged = 0
    for path in _shard_files(tmp_path / "w"):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = arrays.pop("__shard__")
        if not str(meta[1]).startswith("lava"):
            continue
        arrays["lava.logits"] = arrays["lava.logits"] + 1          # Lava's outputs altered ...
        meta[2] = digest_arrays(arrays)                              # ... and the digest made to match
        np.savez(path[:-4], __shard__=meta, **arrays)
        forged += 1
    assert forged == 2
    assert cli(run + ["--json", str(tmp_path / "b.json")]) == 1           # parity failed: exit 1
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["lava_shards_reused"] == 2
    assert report["lava_bit_exact"] is False and "logits" in report["lava_mismatches"]
