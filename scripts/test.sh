#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
#   bash scripts/test.sh                           # Python 3.10 with Lava: every test, none skipped
#   NEUROCOMPILE_PYTHON=3.12 bash scripts/test.sh  # current Python without Lava: -m 'not lava'
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the HTML report's browser test needs Chromium, a Debian package installed as setup.sh installs
# Fashion-MNIST, so a fresh machine runs that test instead of skipping it
. scripts/debian_package.sh
command -v chromium-browser >/dev/null \
  || debian_package chromium "$(command -v chromium || echo /nonexistent)" test tests/test_report_browser.py
version="${NEUROCOMPILE_PYTHON:-3.10}"
if [ "$version" = 3.10 ]; then
  exec .venv/bin/python -m pytest -q -rs "$@"          # -rs: a skipped test says why in the summary
fi
exec ".venv-$version/bin/python" -m pytest -q -rs -m "not lava" "$@"
