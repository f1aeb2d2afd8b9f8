#!/usr/bin/env bash
# Set up (idempotent), then run the main job offline on CPU: suite tinyworld-v1 on the
# embedded tiny world for one inference method of each paper (sharing the cached `none`
# generations), publish the results into a leaderboard, print it and write the static page.
# Extra arguments go to `memorybench run`: `scripts/main.sh --method all` runs every built-in
# (the shipped leaderboard; about 13 minutes on 2 cores), `--method none,wanda-prune` a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
out=results/main/tinyworld-v1  # only run results here: publish takes every JSON in it
board=results/main/leaderboard-tinyworld-v1.json
# one per paper (the variants rna, gni, opposite-/dynamic-transition and the two costliest
# searches, sail and prss, are on the shipped board): keeps the main job under 10 minutes
main_methods=none,wanda-prune,nemo,wen-embedding-opt,rta,attn-rescale,scheduled-guidance,static-transition,init-noise-adjust
.venv/bin/memorybench run --suite tinyworld-v1 --method "$main_methods" --output-dir "$out" "$@"
.venv/bin/memorybench publish "$out"/*.json --leaderboard "$board" --suite tinyworld-v1
.venv/bin/memorybench report --leaderboard "$board" --out results/main/report-tinyworld-v1
echo "[main] open results/main/report-tinyworld-v1/index.html in a browser"
