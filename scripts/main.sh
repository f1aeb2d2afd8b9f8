#!/usr/bin/env bash
# Set up (idempotent), then run the main job: suite tinyworld-v1 on the embedded tiny world
# with no mitigation, offline, on CPU. Extra arguments go to `memorybench run`
# (e.g. scripts/main.sh --method my-method --set key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/memorybench run --suite tinyworld-v1 --method none --output results/tinyworld-v1/none.json "$@"
