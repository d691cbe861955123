#!/usr/bin/env bash
# The README's second command: set up, build, and run every cpu-labelled test.
# Output ends with ctest's summary; the exit code is ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${MOSAIC_BUILD_DIR:-build}
exec ctest --test-dir "$BUILD_DIR" -L cpu --output-on-failure -j"$(nproc)"
