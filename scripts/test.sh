#!/usr/bin/env bash
# Set up (idempotent), then run the whole test suite. Extra arguments go to pytest,
# e.g. scripts/test.sh -m "not slow" for the quick subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "[test] pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$code"
