"""The fork server (``neurocompile.forkserver``): workers are forks of one clean interpreter that has
imported the heavy modules and runs one thread; they report their exit, die with the requester, and
where the server may not fork (a thread runs in it) workers start as fresh interpreters."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from neurocompile import forkserver
from neurocompile.execute import FORK_SERVER_ENV, LocalExecutor, ShardError, Task
from worker_tasks import exits, sleeps, whoami

TESTS = os.path.dirname(os.path.abspath(__file__))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"       # a zombie has ended
    except FileNotFoundError:
        return False


def test_workers_are_one_thread_forks_of_one_server(monkeypatch):
    monkeypatch.delenv(FORK_SERVER_ENV, raising=False)
    out = LocalExecutor(2, timeout_s=120, retries=0).run([Task(f"w{k}", whoami) for k in range(6)])
    server = forkserver.server()
    pids, parents, threads = zip(*(r["ids"].tolist() for r in out))
    assert len(set(pids)) == 6 and set(parents) == {server.pid} and server.pid != os.getpid()
    assert set(threads) == {1}
    assert "torch" in open(f"/proc/{server.pid}/maps").read()        # it imported what a worker needs


def test_a_fresh_interpreter_per_worker_when_asked(monkeypatch):
    monkeypatch.setenv(FORK_SERVER_ENV, "0")
    out = LocalExecutor(1, timeout_s=120, retries=0).run([Task("w", whoami)])
    assert out[0]["ids"].tolist()[1:] == [os.getpid(), 1]           # its parent is this process; one thread


def test_a_worker_that_exits_is_reported_with_its_status():
    with pytest.raises(ShardError) as err:
        LocalExecutor(1, timeout_s=120, retries=0).run([Task("x", exits, (7,))])
    assert err.value.reason == "died" and err.value.detail == "7", err.value


def test_a_server_that_runs_a_thread_after_its_imports_refuses_to_fork():
    code = textwrap.dedent("""
        import threading, time
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        from neurocompile.forkserver import _preload
        print(_preload())
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))      # as the server is started
    assert res.stdout.strip() == "the fork server runs 2 threads after its imports", res.stderr


def test_killing_the_requester_kills_the_server_and_its_workers(tmp_path):
    marker = str(tmp_path / "worker")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {TESTS!r})
        from neurocompile.execute import LocalExecutor, Task
        from worker_tasks import sleeps
        LocalExecutor(1, timeout_s=600, retries=0).run([Task("s", sleeps, ({marker!r},))])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(marker) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    worker, server = map(int, open(marker).read().split())
    assert server != proc.pid and _alive(server) and _alive(worker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while (_alive(server) or _alive(worker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server) and not _alive(worker)


def test_a_server_that_died_is_reaped_and_replaced(monkeypatch):
    monkeypatch.delenv(FORK_SERVER_ENV, raising=False)
    LocalExecutor(1, timeout_s=120, retries=0).run([Task("a", whoami)])
    first = forkserver.server()
    os.kill(first.pid, signal.SIGKILL)
    out = LocalExecutor(1, timeout_s=120, retries=0).run([Task("b", whoami)])
    second = forkserver.server()
    assert second.pid != first.pid and out[0]["ids"].tolist()[1] == second.pid
    assert not _alive(first.pid)                                  # reaped: not even a zombie
    with pytest.raises(ChildProcessError):
        os.waitpid(first.pid, os.WNOHANG)
