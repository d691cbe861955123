#!/usr/bin/env bash
# The README's second command: set up, build, and run every cpu-labelled test, twice:
#  1. the planning stack and core again under AddressSanitizer + UndefinedBehaviorSanitizer
#     (clang, build-asan/), with short libFuzzer runs on every spec parser;
#  2. everything (torch layers included) in build/; its ctest summary ends the output.
# Exit code: non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${MOSAIC_BUILD_DIR:-build}
jobs=$(nproc)
# ctest runs one test per core; one intra-op thread each keeps torch tests from oversubscribing.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

if command -v clang++ >/dev/null; then
  echo "[test] sanitizer build (ASan + UBSan, clang) of core and the planning stack: build-asan/" >&2
  if [[ ! -f build-asan/build.ninja ]]; then
    CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DMOSAIC_WITH_TORCH=OFF -DMOSAIC_BUILD_BENCH=OFF -DMOSAIC_SANITIZE=ON -DMOSAIC_FUZZ=ON \
      >/dev/null
  fi
  ninja -C build-asan -j"$jobs" >/dev/null
  if ! ctest --test-dir build-asan -L cpu --output-on-failure -j"$jobs" >build-asan/ctest.log 2>&1; then
    cat build-asan/ctest.log
    echo "[test] sanitizer tests failed (build-asan/ctest.log)" >&2
    exit 1
  fi
  grep -E "tests passed|Total Test time" build-asan/ctest.log >&2
else
  echo "[test] warning: clang++ not found; skipping the sanitizer build" >&2
fi

echo "[test] cpu tests: $BUILD_DIR/" >&2
exec ctest --test-dir "$BUILD_DIR" -L cpu --output-on-failure -j"$jobs"
