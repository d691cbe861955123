#!/usr/bin/env bash
# The whole benchmark suite on one GPU in one go (docs/benchmarks.md): `mosaic bench` for every
# zoo workload (eager temporal, graph temporal, graphs on shared streams, the planned plan,
# ablations; every repetition, peak memory, MFU, the perf model's error, a measured trace of the
# chosen plan), the Hugging Face CLIPModel baseline (eager and torch.compile, bs32 and bs128),
# then one merged results file.
#
#   OUT=/tmp/suite scripts/gpu_build.sh && OUT=/tmp/suite bench/run_suite.sh
#   bench/run_suite.sh clip-b16 llava-small          # a subset
#
# Env: MOSAIC_BIN (default build-gpu/src/cli/mosaic), STEPS (20), PROFILES (a folder of profiles
# measured in this session, named <model>-<device>.json, used before configs/profiles), MOSAIC_COMMIT,
# RAW (folder of the raw per-model results; COLLECT=0 skips the merge, for a suite run in parts),
# MODEL_TIMEOUT (s per model, 300), HF=0 to skip the Hugging Face baseline, HF_FROM=file to take it from an earlier run in the same
# session, MOSAIC_FUSED_NORM=0 to bench without the fused add + LayerNorm kernels (on by default;
# recorded in each results file's settings), MOSAIC_VECTORIZED_NORM=1 to run those kernels in their
# vectorized forms (off by default until measured; recorded too), MOSAIC_FUSED_BIAS_GRAD=1 to take
# the bias gradients from one column-sum kernel (off by default; recorded), MOSAIC_FUSED_LINEAR_GRAD=1 to bench with the weight and
# bias gradients from one cuBLASLt GEMM (off by default; recorded too). Writes $OUT/results.json and $OUT/suite.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
BIN=${MOSAIC_BIN:-build-gpu/src/cli/mosaic}
STEPS=${STEPS:-20}
PROFILES=${PROFILES:-out/profiles}
RAW=${RAW:-$(mktemp -d)}  # RAW=dir: keep the raw per-model results there (a suite split over calls)
mkdir -p "$OUT"
# The commit measured: MOSAIC_COMMIT, else git's HEAD (resolved, not .git/HEAD's "ref: ..." text).
# A copied working tree may carry stale git metadata (the device tool's does): pass MOSAIC_COMMIT.
export MOSAIC_COMMIT=${MOSAIC_COMMIT:-$(git rev-parse HEAD 2>/dev/null || true)}
models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
  models=(clip-b16 clip-b16-bs128 llava-small imagebind-like omni-small)
fi
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
case "$gpu" in
  *H200*) devspec=h200 ;;
  *) devspec=h100-sxm ;;
esac
echo "[suite] $gpu (device spec $devspec), models: ${models[*]}, $STEPS steps" | tee "$OUT/suite.log"
for m in "${models[@]}"; do
  prof=()
  # A profile measured in this session (PROFILES) wins over the committed one: it was measured
  # with this build's kernels on this machine.
  if [[ -f $PROFILES/$m-$devspec.json ]]; then
    prof=(--profile "$PROFILES/$m-$devspec.json")
  fi
  timeout "${MODEL_TIMEOUT:-300}" "$BIN" bench -m "$m" --device "$devspec" --steps "$STEPS" "${prof[@]}" \
    -o "$RAW/bench-$m.json" --trace-out "$RAW/trace-$m.json" 2>&1 | tee -a "$OUT/suite.log"
done
if [[ -n "${HF_FROM:-}" && -f "${HF_FROM:-}" ]]; then
  cp "$HF_FROM" "$RAW/hf-clip.json"  # measured earlier in the same session on this GPU
elif [[ "${HF:-1}" == 1 ]]; then
  PYTHONUNBUFFERED=1 python3 bench/hf_clip_baseline.py --batch-sizes 32 128 --steps "$STEPS" --kernel-steps 3 \
    -o "$RAW/hf-clip.json" 2>&1 | tee -a "$OUT/suite.log"
fi
[[ "${COLLECT:-1}" == 1 ]] && python3 bench/collect_results.py "$RAW" -o "$OUT/results.json" 2>&1 | tee -a "$OUT/suite.log"
