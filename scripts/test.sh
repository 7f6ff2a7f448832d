#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
#   bash scripts/test.sh                           # Python 3.10 with Lava: every test, none skipped
#   NEUROCOMPILE_PYTHON=3.12 bash scripts/test.sh  # current Python without Lava: -m 'not lava'
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
version="${NEUROCOMPILE_PYTHON:-3.10}"
if [ "$version" = 3.10 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
exec ".venv-$version/bin/python" -m pytest -q -m "not lava" "$@"
