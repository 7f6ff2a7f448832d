"""Tasks for worker tests that import numpy only: a worker's start-up is then the interpreter's (~0.2 s),
not torch's (~2.5 s), so a test can start a hundred of them."""
import numpy as np


def echo(k, progress=None):
    return {"k": np.array([k])}


def whoami(progress=None):
    """The worker's pid, its parent's and how many threads it runs when its task starts."""
    import os
    return {"ids": np.array([os.getpid(), os.getppid(), len(os.listdir("/proc/self/task"))])}


def exits(code, progress=None):
    import os
    os._exit(code)


def sleeps(path, progress=None):
    """Write this worker's pid and its parent's to ``path``, then sleep until killed."""
    import os
    import time
    with open(path + ".tmp", "w") as fh:
        fh.write(f"{os.getpid()} {os.getppid()}")
    os.rename(path + ".tmp", path)
    time.sleep(600)


def steps(n, progress=None):
    """Report ``n`` steps back to back (they reach the parent's pipe together), then return."""
    for k in range(1, n + 1):
        progress(k, n)
    return {"n": np.array([n])}
