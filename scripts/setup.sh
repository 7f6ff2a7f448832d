#!/usr/bin/env bash
# Create a virtual environment and install neurocompile (editable) with its test tools.
#   bash scripts/setup.sh                          # Python 3.10 + Lava (the 'lava' extra): ./.venv
#   NEUROCOMPILE_PYTHON=3.12 bash scripts/setup.sh # current Python, no Lava:            ./.venv-3.12
# Idempotent: re-running only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${NEUROCOMPILE_PYTHON:-3.10}"
if [ "$version" = 3.10 ]; then venv=.venv; extras="lava,ray,test,docs"; else venv=".venv-$version"; extras="test,docs"; fi

find_python() {
  for cand in "python$1" "$HOME/.pyenv/versions/$1"*/bin/"python$1" "/usr/bin/python$1" "/usr/local/bin/python$1"; do
    [ -n "$cand" ] || continue
    if PYENV_VERSION="$(pyenv versions --bare 2>/dev/null | grep -m1 "^$1" || true)" "$cand" \
        -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$1'" >/dev/null 2>&1; then
      echo "$cand"; return 0
    fi
  done
  return 1
}

if [ ! -x "$venv/bin/python" ]; then
  if ! PY=$(find_python "$version"); then
    echo "Python $version not found. Install it, e.g. 'pyenv install $version' or 'apt-get install python$version python$version-venv', then re-run." >&2
    [ "$version" = 3.10 ] && echo "(Lava runs need Python 3.10: lava-nc 0.10 imports there only; without Lava use NEUROCOMPILE_PYTHON=3.12.)" >&2
    exit 1
  fi
  export PYENV_VERSION="$(pyenv versions --bare 2>/dev/null | grep -m1 "^$version" || true)"
  echo "[setup] creating $venv with $("$PY" --version)"
  "$PY" -m venv "$venv"
fi

stamp="$venv/.neurocompile-installed"
want="$(cat pyproject.toml; echo "extras=$extras")"     # reinstall when the project or the extras change
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing neurocompile[$extras] and its dependencies (torch, ...) into $venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e ".[$extras]"
  printf '%s\n' "$want" > "$stamp"
fi

# Fashion-MNIST ships as a Debian package (no download at run time); optional for the demo.
. scripts/debian_package.sh
debian_package dataset-fashion-mnist /usr/share/datasets/fashion-mnist setup "Fashion-MNIST tests"
echo "[setup] ready: $("$venv/bin/python" --version), $("$venv/bin/neurocompile" --version)"
