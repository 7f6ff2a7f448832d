"""The package as a user installs it: a wheel built from the tracked sources, installed with
``pip install 'neurocompile[lava] @ <wheel>'`` into a fresh virtual environment, and run from a
folder outside the repository.  On Python 3.10 the extra brings Lava, and export, simulate on Lava
and validate (Lava bit for bit) run; on current Python the extra installs nothing, the Lava command
is one line naming it, and the emulator and float-vs-integer validation run.  Slow (a venv with
torch): one test, one build.  Also: the example script of the Python API."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAVA_PYTHON = sys.version_info[:2] == (3, 10)          # where the 'lava' extra installs lava-nc


def _tracked_sources(dest: str) -> str:
    """A copy of what a fresh clone holds (no build/, egg-info or venv left over to leak into the wheel)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(dest, name))
    return dest


def _run(cmd, cwd, timeout=900):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    src = _tracked_sources(str(base / "src"))
    r = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"), src], base)
    assert r.returncode == 0, r.stderr
    (path,) = (base / "dist").glob("neurocompile-*.whl")
    return path


def test_wheel_holds_every_package_the_licence_and_the_type_marker(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for folder in ("neurocompile", "neurocompile/passes", "neurocompile/models", "neurocompile/targets",
                   "neurocompile/targets/loihi2", "neurocompile/targets/loihi2/processes"):
        assert f"{folder}/__init__.py" in names, folder
    for module in ("neurocompile/targets/loihi2/processes/ssm_conv.py", "neurocompile/models/sdn_tau0.125.pt",
                   "neurocompile/py.typed", "neurocompile/api.py"):
        assert module in names, module
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in meta and "Requires-Python: >=3.10" in meta
    assert 'Requires-Dist: lava-nc==0.10.0; python_version == "3.10" and extra == "lava"' in meta
    assert not any(line.startswith("Requires-Dist: lava") and "extra" not in line for line in meta.splitlines())
    assert "tests/" not in " ".join(names) and not any(n.startswith(("models/", "targets/")) for n in names)


def test_wheel_in_a_fresh_venv_runs_outside_the_repository(wheel, tmp_path):
    venv, work = tmp_path / "venv", tmp_path / "work"
    r = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert r.returncode == 0, r.stderr
    py, nc = str(venv / "bin" / "python"), str(venv / "bin" / "neurocompile")
    # --no-compile: byte-compiling torch's thousands of modules is pip's time, not the wheel's behaviour
    r = _run([py, "-m", "pip", "install", "-q", "--no-compile", f"neurocompile[lava] @ {wheel.as_uri()}"], tmp_path,
             timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    (work / "digits").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "examples", "digits", "ckpt.pt"), work / "digits" / "ckpt.pt")
    shutil.copy(os.path.join(ROOT, "examples", "python_api.py"), work / "python_api.py")

    r = _run([py, "-c", "import neurocompile, neurocompile.targets.loihi2.processes as p; print(neurocompile.__file__)"],
             work)
    assert r.returncode == 0 and r.stdout.startswith(str(venv)), (r.stdout, r.stderr)     # the wheel, not the repo
    r = _run([nc, "--version"], work)
    assert r.stdout.strip().startswith("neurocompile ")

    r = _run([nc, "export", "digits/ckpt.pt"], work)
    assert r.returncode == 0 and "wrote digits/ckpt.loihi2" in r.stdout, r.stderr
    r = _run([nc, "inspect", "digits/ckpt.loihi2"], work)
    assert r.returncode == 0 and "every 24-bit register proven safe" in r.stdout, r.stderr
    if LAVA_PYTHON:
        r = _run([nc, "simulate", "digits/ckpt.loihi2", "--data", "digits", "--index", "3", "-o", "traces.npz"], work)
        assert r.returncode == 0 and "sample 3: label" in r.stdout and (work / "traces.npz").exists(), r.stderr
        r = _run([nc, "validate", "digits/ckpt.pt", "digits/ckpt.loihi2", "--data", "digits", "--lava-samples", "2",
                  "--max-samples", "120"], work)
        assert r.returncode == 0 and "bit-exact" in r.stdout, (r.stdout, r.stderr)
    else:
        r = _run([nc, "simulate", "digits/ckpt.loihi2", "--data", "digits", "--index", "3", "--engine", "lava"], work)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pip install 'neurocompile[lava]'" in r.stderr, \
            r.stderr
        r = _run([nc, "simulate", "digits/ckpt.loihi2", "--data", "digits", "--index", "3"], work)     # auto: emulator
        assert r.returncode == 0 and "sample 3: label" in r.stdout, r.stderr
        assert r.stderr.startswith("neurocompile: --engine auto: emulator (Lava is not installed"), r.stderr
        r = _run([nc, "validate", "digits/ckpt.pt", "digits/ckpt.loihi2", "--data", "digits"], work)  # auto: 0 on Lava
        assert r.returncode == 0 and "Parity on 360 samples" in r.stdout, (r.stdout, r.stderr)
    r = _run([py, "python_api.py", "--samples", "60"], work)
    assert r.returncode == 0 and "on 60 test digits" in r.stdout, r.stderr


def test_python_api_example(tmp_path):
    r = _run([sys.executable, os.path.join(ROOT, "examples", "python_api.py"), "--samples", "100", "--out",
              str(tmp_path)], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("compiled ckpt.pt: ") and "L=64, 10 classes" in lines[0]
    assert (tmp_path / "digits.loihi2").exists()
    assert any(line.startswith("plan: ") and " cores on " in line for line in lines), lines
    acc = [float(w) for w in lines[-1].replace("%", "").split() if w.replace(".", "").isdigit()]
    assert lines[-1].endswith("on 100 test digits") and acc[0] > 90 and abs(acc[0] - acc[1]) <= 2, lines[-1]
