#!/usr/bin/env bash
# Set up (idempotent), then run the main job offline on CPU: suite tinyworld-v1 on the
# embedded tiny world for every built-in method (sharing the cached `none` generations),
# publish the results into a leaderboard, print it and write the static report page.
# Extra arguments go to `memorybench run` (e.g. scripts/main.sh --method none,wanda-prune).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
out=results/main/tinyworld-v1  # only run results here: publish takes every JSON in it
board=results/main/leaderboard-tinyworld-v1.json
.venv/bin/memorybench run --suite tinyworld-v1 --method all --output-dir "$out" "$@"
.venv/bin/memorybench publish "$out"/*.json --leaderboard "$board" --suite tinyworld-v1
.venv/bin/memorybench report --leaderboard "$board" --out results/main/report-tinyworld-v1
echo "[main] open results/main/report-tinyworld-v1/index.html in a browser"
