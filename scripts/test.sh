#!/usr/bin/env bash
# Set up (idempotent), then run the whole test suite. Extra arguments go to pytest,
# Tests marked slow (minutes of tiny-world training) are left out unless asked for:
# scripts/test.sh -m "slow or not slow" runs everything (as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The report page's browser test drives headless Chromium (Debian packages; idempotent).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "[test] installing chromium and chromium-driver for tests/test_report_browser.py"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "[test] pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$code"
