#!/usr/bin/env bash
# One GPU-machine session (the device has torch, nvcc, cmake and ninja but no -dev packages:
# carry .deps.tgz, made by scripts/bundle_train_deps.sh): builds every layer with train and the torch
# tests in build-gpu (kept between calls while the machine stays warm), then runs the steps
# named in $STEPS_TO_RUN, writing logs and results under $OUT:
#   tests     ctest -L gpu (every layer; fixtures that need transformers are made here
#             by the bundle script, not there: -FA)       -> $OUT/ctest-gpu.log
#   profile   mosaic profile for the zoo models without a committed profile for this GPU's
#             device spec (h100-sxm or h200), or all of PROFILE_MODELS with PROFILE_FORCE=1 (the
#             committed ones are stale once the kernels change) -> out/profiles/<model>-<spec>.json
#             (and $OUT/profiles.tar); the suite step then plans from those
#   suite     bench/run_suite.sh                              -> $OUT/results.json, suite.log
#   kernels   the fused kernels against their ATen paths and their scalar forms, at the zoo's
#             LayerNorm shapes (bench/fused_norm_benchmark)  -> $OUT/fused_norm.json
#   newkernels  the switches written 2026-12-07, off by default until measured: each whose gpu
#             tests pass (--vectorized-norm: FusedNormGpu.*; --fused-bias-grad: BiasGrad* and
#             the double-backward refusal; --patch-gemm: *PatchGemm*) joins an A/B per CLIP
#             model (NEW_KERNEL_MODELS), every run from the defaults whatever is exported: the
#             defaults (with eager temporal), each switch alone (NEW_KERNEL_EACH) and all of them
#             (bench/ab_summary.py: each configuration against base, and the kernel time by kind)
#                                     -> $OUT/newkernels/<cfg>-<model>.{json,log}, summary.md
#   unfused   the A/B of the fused add + LayerNorm kernels (on by default): the suite's CLIP
#             models again with --no-fused-norm (UNFUSED_MODELS, default clip-b16
#             clip-b16-bs128; no HF, no merge)              -> $OUT/unfused/raw/*, suite.log
#   linear    if LinearGpu.* and GeluMlpGpu.* pass: the same CLIP models with --fused-linear-grad (off by
#             default until measured; LINEAR_MODELS)      -> $OUT/linear/raw/*, suite.log
# The device returns 8 files at most: tar the raw folders before the call ends.
#
#   OUT=/tmp/o STEPS_TO_RUN="tests profile" scripts/gpu_session.sh
#
# NINJA_TARGETS (default: everything) builds less, e.g. "mosaic train_gpu_test". QUOTAS and
# PROFILE_REPS (5) set the profile step's SM quotas and timed replays per measurement.
# Binaries run later in the same call, outside this script, need the bundled libraries too:
#   export LD_LIBRARY_PATH=/tmp/tl:$LD_LIBRARY_PATH; build-gpu/cli/mosaic bench ...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT" out/profiles
[[ -d .deps/train && -d .deps/googletest ]] || tar -xzf .deps.tgz
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p /tmp/tl
for f in .deps/train/lib/*.so.*; do
  b=$(basename "$f")
  ldconfig -p | grep -q "^[[:space:]]*$b " || ln -sf "$PWD/$f" "/tmp/tl/$b"
done
export LD_LIBRARY_PATH=/tmp/tl:${LD_LIBRARY_PATH:-}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$gpu" in
  *H200*) devspec=h200 ;;
  *) devspec=h100-sxm ;;
esac
echo "[gpu] $gpu: device spec $devspec" >&2
TP=$(python3 -c 'import torch,sys; sys.stdout.write(torch.utils.cmake_prefix_path)')
t0=$(date +%s)
if [[ ! -f build-gpu/build.ninja ]]; then
  cmake -S .deps/train/gpu -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DMOSAIC_TORCH_PREFIX="$TP" -DCMAKE_PREFIX_PATH="$TP" \
    >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
fi
if ! ninja -C build-gpu -j"$(nproc)" ${NINJA_TARGETS:-} >"$OUT/build.log" 2>&1; then
  grep -E "error|FAILED" "$OUT/build.log" | head -40
  echo "[gpu] build failed" >&2
  exit 1
fi
echo "[gpu] built in $(($(date +%s) - t0)) s" >&2
BIN=build-gpu/cli/mosaic

# gpu_tests_pass NAME CTEST_ARGS...: the matching gpu tests into $OUT/ctest-NAME.log; on a
# failure the log's end is shown and the status is non-zero.
gpu_tests_pass() {
  local name=$1
  shift
  (cd build-gpu && ctest "$@" --no-tests=error --output-on-failure -j1 --timeout 300) >"$OUT/ctest-$name.log" 2>&1 \
    && return 0
  tail -30 "$OUT/ctest-$name.log"
  return 1
}

# ab_suite NAME VAR=value... -- MODELS...: the models again under those settings, an A/B against
# the suite's defaults (no HF baseline, no merge) -> $OUT/NAME/raw/*, $OUT/NAME/suite.log.
ab_suite() {
  local dir=$OUT/$1
  shift
  local envs=()
  while [[ $1 != -- ]]; do
    envs+=("$1")
    shift
  done
  shift
  mkdir -p "$dir/raw"
  env "${envs[@]}" OUT="$dir" RAW="$dir/raw" COLLECT=0 HF=0 MOSAIC_BIN="$BIN" \
    PROFILES=out/profiles bench/run_suite.sh "$@"
}
for step in ${STEPS_TO_RUN:-tests}; do
  case $step in
    tests)
      (cd build-gpu && ctest -L gpu -FA '.*' --output-on-failure -j1 --timeout 400 ${CTEST_ARGS:-}) \
        >"$OUT/ctest-gpu.log" 2>&1
      grep -E "tests passed|Failed|\*\*\*|Passed|loss|plan" "$OUT/ctest-gpu.log" | tail -40 ;;
    profile)
      for m in ${PROFILE_MODELS:-clip-b16 clip-b16-bs128 llava-small imagebind-like omni-small clip-l14}; do
        [[ -f configs/profiles/$m-$devspec.json && -z ${PROFILE_FORCE:-} ]] && continue
        "$BIN" profile -m "$m" --device "$devspec" --quotas ${QUOTAS:-8,16,32,64,96,132} --reps ${PROFILE_REPS:-5} \
          -o "out/profiles/$m-$devspec.json" 2>>"$OUT/profile.log" || echo "[gpu] profile $m failed" >&2
        mkdir -p "$OUT/profiles"; cp "out/profiles/$m-$devspec.json" "$OUT/profiles/" 2>/dev/null
        echo "[gpu] profiled $m at $(($(date +%s) - t0)) s" >&2
      done
      tar -cf "$OUT/profiles.tar" -C out profiles ;;
    suite)
      OUT=$OUT MOSAIC_BIN=$BIN PROFILES=out/profiles bench/run_suite.sh ${SUITE_MODELS:-} ;;
    unfused)
      ab_suite unfused MOSAIC_FUSED_NORM=0 -- ${UNFUSED_MODELS:-clip-b16 clip-b16-bs128} ;;
    linear)
      if gpu_tests_pass linear -R 'LinearGpu|GeluMlpGpu' -E 'BiasGrad'; then
        ab_suite linear MOSAIC_FUSED_LINEAR_GRAD=1 -- ${LINEAR_MODELS:-clip-b16 clip-b16-bs128}
      else
        echo "[gpu] LinearGpu failed: no --fused-linear-grad bench (ctest-linear.log)" >&2
      fi ;;
    newkernels)
      # Each new switch's gpu tests gate it; then per CLIP model `mosaic bench` without the
      # ablations under the defaults (with eager temporal: the eager baseline on this machine),
      # and without eager under each passing switch alone (models in NEW_KERNEL_EACH) and all of
      # them together, one after another on this GPU: the A/B.
      switches=()  # name:VAR=1 of each switch whose gpu tests passed
      for gate in 'vec;FusedNormGpu|FusedAddNormStackGpu;MOSAIC_VECTORIZED_NORM' \
                  'bias;BiasGrad|LinearGpuLimits.DoubleBackward;MOSAIC_FUSED_BIAS_GRAD' \
                  'patch;PatchGemm;MOSAIC_PATCH_GEMM'; do
        IFS=';' read -r name regex var <<<"$gate"
        if gpu_tests_pass "$name" -R "$regex"; then
          switches+=("$name:$var=1")
        else
          echo "[gpu] $name gpu tests failed: no $var A/B (ctest-$name.log)" >&2
        fi
      done
      if ((${#switches[@]} == 0)); then
        echo "[gpu] no new switch passed its gpu tests: no A/B" >&2
        continue
      fi
      all=
      for c in "${switches[@]}"; do all+=${all:+,}${c#*:}; done
      mkdir -p "$OUT/newkernels"
      for m in ${NEW_KERNEL_MODELS:-clip-b16-bs128 clip-b16}; do
        prof=()
        [[ -f out/profiles/$m-$devspec.json ]] && prof=(--profile "out/profiles/$m-$devspec.json")
        each=0
        [[ " ${NEW_KERNEL_EACH:-clip-b16-bs128} " == *" $m "* ]] && each=1
        cfgs=(base:)
        ((each)) && cfgs+=("${switches[@]}")
        ((!each || ${#switches[@]} > 1)) && cfgs+=("all:$all")
        for c in "${cfgs[@]}"; do
          name=${c%%:*} envs=${c#*:}
          log=$OUT/newkernels/$name-$m.log
          flags=(--no-ablations)
          [[ $name == base ]] || flags+=(--no-eager)
          echo "== $name $m (${envs:-defaults})" >"$log"
          # Every configuration starts from the defaults, whatever the caller exported.
          env -u MOSAIC_VECTORIZED_NORM -u MOSAIC_FUSED_BIAS_GRAD -u MOSAIC_PATCH_GEMM \
            -u MOSAIC_FUSED_LINEAR_GRAD -u MOSAIC_FUSED_NORM ${envs//,/ } \
            "$BIN" bench -m "$m" --device "$devspec" "${flags[@]}" \
            "${prof[@]}" -o "$OUT/newkernels/$name-$m.json" >>"$log" 2>&1
          grep -E "^  (eager-temporal|graph-temporal|graph-shared-streams|mosaic) +[0-9]" "$log" |
            sed "s/^/[ab $name $m] /" >&2
        done
      done
      python3 bench/ab_summary.py "$OUT"/newkernels/*.json | tee "$OUT/newkernels/summary.md" ;;
    kernels)
      build-gpu/bench/fused_norm_benchmark --benchmark_repetitions=5 --benchmark_min_time=0.1 \
        --benchmark_report_aggregates_only=true --benchmark_out="$OUT/fused_norm.json" \
        --benchmark_out_format=json 2>&1 | grep median ;;
  esac
  echo "[gpu] $step done at $(($(date +%s) - t0)) s" >&2
done
