#!/usr/bin/env bash
# Create ./.venv with Python 3.10 and install neurocompile (editable) with its test tools.
# Idempotent: re-running only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  for cand in python3.10 "$HOME/.pyenv/versions/3.10"*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -n "$cand" ] || continue
    if PYENV_VERSION="$(pyenv versions --bare 2>/dev/null | grep -m1 '^3\.10' || true)" "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      echo "$cand"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  if ! PY=$(find_python310); then
    echo "neurocompile needs Python 3.10 (lava-nc 0.10 imports on 3.10 only)." >&2
    echo "Install it, e.g. 'pyenv install 3.10' or 'apt-get install python3.10 python3.10-venv', then re-run." >&2
    exit 1
  fi
  export PYENV_VERSION="$(pyenv versions --bare 2>/dev/null | grep -m1 '^3\.10' || true)"
  echo "[setup] creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi

stamp=.venv/.neurocompile-installed
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  echo "[setup] installing neurocompile and dependencies (torch, lava-nc 0.10, ...) into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  cp pyproject.toml "$stamp"
fi

# Fashion-MNIST ships as a Debian package (no download at run time); optional for the demo.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing Debian package dataset-fashion-mnist"
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
    || echo "[setup] could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
fi
echo "[setup] ready: $(.venv/bin/python --version), $(.venv/bin/neurocompile --help >/dev/null && echo neurocompile CLI ok)"
