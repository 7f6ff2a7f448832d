"""The command line on real local Ray clusters: joining is bounded, Ray's own output stays in a log
file the one-line error names, the CLI keeps its signal handlers (SIGTERM: one line, exit 143),
RAY_ADDRESS is joined as Ray's users expect, and a failed shard is one line with its innermost cause.
Ray installs with the 3.10 extras (lava, ray): these tests carry the ``lava`` marker to run there."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.lava        # the 'ray' extra is installed with Lava on 3.10: run there, never skip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
PY = sys.executable
BAR = re.compile(r"float\+integer: +\d+%\|[^\]]*\]")          # a progress bar (no newline of its own)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray") / "digits.loihi2"
    subprocess.run([PY, "-m", "neurocompile", "export", DIGITS, "-o", str(path)], check=True, capture_output=True)
    return str(path)


def _lines(stderr: bytes) -> list:
    """stderr's lines, without the progress bars."""
    lines = (BAR.sub("", ln).strip() for ln in stderr.decode(errors="replace").splitlines())
    return [ln for ln in lines if ln]


def _validate(art, *extra):
    return [PY, "-m", "neurocompile", "validate", DIGITS, art, "--data", "digits", "--lava-samples", "0",
            "--activity-samples", "0", *extra]


def test_a_closed_port_fails_within_the_connect_timeout_in_one_line(art, tmp_path):
    start = time.monotonic()
    res = subprocess.run(_validate(art, "--max-samples", "8", "--ray-address", "127.0.0.1:1",
                                   "--ray-connect-timeout", "3"), capture_output=True, cwd=tmp_path, timeout=120)
    took = time.monotonic() - start
    err = _lines(res.stderr)
    assert res.returncode == 2 and len(err) == 1, err
    assert err[0].startswith("neurocompile: error: 127.0.0.1:1: no Ray cluster answered within 3 s"), err
    log = err[0].rsplit("Ray's output: ", 1)[1].rstrip(")")
    assert os.path.getsize(log) > 0                              # what Ray said went to the log
    os.unlink(log)
    assert took < 60, took


def test_sigterm_during_a_ray_run_is_one_line_and_exit_143(art, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(_validate(art, "--ray", "--workers", "1", "--batch-size", "8", "--work-dir", str(work)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not glob.glob(str(work / "**" / "*.npz"), recursive=True) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before Ray ran a shard"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    err = _lines(stderr)                 # (the shards the work-dir keeps are not this test's concern)
    assert proc.returncode == 143 and len(err) == 1 and err[0].startswith("neurocompile: terminated"), \
        (proc.returncode, stderr[-3000:], (work / "ray.log").read_text(errors="replace")[-3000:])
    assert os.path.isfile(work / "ray.log")                      # Ray's own output kept in the work-dir


def test_ray_address_in_the_environment_is_joined_and_said(art, tmp_path):
    """RAY_ADDRESS with --ray: Ray's users expect that cluster (today: "num_cpus and num_gpus must not be
    provided"); a head of our own, ended by its process group only (never `ray stop`: other clusters)."""
    ray = [PY, "-c", "from ray.scripts.scripts import main; main()"]             # the `ray` command
    port = 46379 + os.getpid() % 1000
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}       # (the token file is per user)
    head = subprocess.Popen([*ray, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false"],
                            stdout=open(tmp_path / "head.out", "wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in (tmp_path / "head.out").read_bytes():     # up when it says so
            assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "head.out").read_text()
            time.sleep(0.5)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        res = subprocess.run(_validate(art, "--max-samples", "8", "--batch-size", "8", "--ray"), env=env,
                             capture_output=True, cwd=tmp_path, timeout=300)
        err = _lines(res.stderr)
        assert res.returncode == 0 and err == [f"neurocompile: joining the Ray cluster at 127.0.0.1:{port} named by "
                                               "RAY_ADDRESS (unset it for a local cluster)"], (res.returncode, err)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)


def _raises(message, progress=None):
    raise ValueError(message)


def test_a_failed_shard_on_ray_is_its_innermost_cause_without_class_names(tmp_path, monkeypatch):
    """Was "shard ... failed 1 times on Ray; last: neurocompile.execute.ShardError: shard ray failed 1 times ..."."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    from neurocompile.execute import RayExecutor, ShardError, Task
    ray = RayExecutor(workers=1, retries=0, log_dir=str(tmp_path))
    try:
        with pytest.raises(ShardError) as exc:
            ray.run([Task("float 0-7", _raises, ("the input is bad",), 8)])
    finally:
        ray.close()
    msg = str(exc.value)
    assert msg.startswith("shard float 0-7 failed 1 time on Ray: ") and "the input is bad" in msg, msg
    assert len(msg.splitlines()) == 1 and "Error" not in msg and "shard ray" not in msg, msg
    assert msg.endswith(f"(Ray's output: {tmp_path / 'ray.log'})"), msg
