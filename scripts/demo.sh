#!/usr/bin/env bash
# The README's first command: set up, then run the main job on a small default:
#  1. train clip-tiny on generated shapes-and-captions data on the CPU (loss falls, retrieval
#     accuracy on held-out pairs is printed against chance);
#  2. plan clip-b16 for an H100 from the performance model and draw the plan (runs/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${MOSAIC_BUILD_DIR:-build}
mosaic="$BUILD_DIR/src/cli/mosaic"
mkdir -p runs
echo "== mosaic train --model clip-tiny (CPU, generated data) =="
"$mosaic" train --model clip-tiny --checkpoint-dir runs/clip-tiny
echo
echo "== mosaic plan --model clip-b16 --device h100-sxm =="
"$mosaic" plan --model clip-b16 --device h100-sxm -o runs/clip-b16-h100.plan.json
"$mosaic" show runs/clip-b16-h100.plan.json -o runs/clip-b16-h100.plan.svg
echo "plan: runs/clip-b16-h100.plan.json, Gantt chart: runs/clip-b16-h100.plan.svg"
