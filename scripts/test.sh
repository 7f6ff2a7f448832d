#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
#   bash scripts/test.sh                           # Python 3.10 with Lava: every test, none skipped
#   NEUROCOMPILE_PYTHON=3.12 bash scripts/test.sh  # current Python without Lava: -m 'not lava'
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the HTML report's browser test needs Chromium: a Debian package, installed here when root (as setup.sh
# installs the Fashion-MNIST package), so a fresh machine runs that test instead of skipping it
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
  echo "[test] installing Debian package chromium (tests/test_report_browser.py)"
  (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
    || echo "[test] could not install chromium; tests/test_report_browser.py will be skipped" >&2
fi
version="${NEUROCOMPILE_PYTHON:-3.10}"
if [ "$version" = 3.10 ]; then
  exec .venv/bin/python -m pytest -q -rs "$@"          # -rs: a skipped test says why in the summary
fi
exec ".venv-$version/bin/python" -m pytest -q -rs -m "not lava" "$@"
