#!/usr/bin/env bash
# Installs what is missing (Debian packages from scripts/packages.txt, Python packages from
# requirements.txt and requirements-test.txt), then configures and builds Mosaic into build/ with ninja.
#
#   scripts/setup.sh            # install + build everything
#   MOSAIC_BUILD_DIR=out scripts/setup.sh
#
# Safe to run again: installed packages are skipped, pip's and ccache's caches are reused and
# ninja rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${MOSAIC_BUILD_DIR:-build}
PYTHON=${PYTHON:-python3}

say() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
missing=()
while IFS= read -r line; do
  line=${line%%#*}
  line=${line%"${line##*[![:space:]]}"}  # a comment after a pin leaves spaces behind
  [[ -z "${line// }" ]] && continue
  name=${line%%=*}
  if ! dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$line")
  fi
done < scripts/packages.txt
if ((${#missing[@]})); then
  say "installing ${#missing[@]} Debian package(s): ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    # A pinned version Debian has since replaced (security update): take the current one.
    say "warning: some pinned versions are gone from the archive; installing current versions"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]%%=*}" >/dev/null
  fi
fi

# --- Python packages (PyTorch's C++ library comes from the torch wheel) ------------------------
want_torch=$(sed -n 's/^torch==//p' requirements.txt)
have_torch=$("$PYTHON" -c 'import torch,sys; sys.stdout.write(torch.__version__)' 2>/dev/null || true)
if [[ "${have_torch%%+*}" != "$want_torch" ]]; then
  say "installing Python packages from requirements.txt (torch $want_torch, about 3 GB the first time)"
  "$PYTHON" -m pip install --disable-pip-version-check -q -r requirements.txt
fi
# Test references (tests/interop compare against Hugging Face transformers and OpenCLIP).
want_ref="$(sed -n 's/^transformers==//p' requirements-test.txt) $(sed -n 's/^open_clip_torch==//p' requirements-test.txt)"
have_ref=$("$PYTHON" -c 'import sys, transformers, open_clip; sys.stdout.write(transformers.__version__ + " " + open_clip.__version__)' 2>/dev/null || true)
if [[ "$have_ref" != "$want_ref" ]]; then
  say "installing test packages from requirements-test.txt (transformers, open_clip: $want_ref)"
  "$PYTHON" -m pip install --disable-pip-version-check -q -r requirements-test.txt
fi
TORCH_PREFIX=$("$PYTHON" -c 'import torch,sys; sys.stdout.write(torch.utils.cmake_prefix_path)' 2>/dev/null)

# --- Configure and build ------------------------------------------------------------------------
jobs=$(nproc)
# ccache keys on paths relative to the checkout, so a fresh clone reuses earlier compilations.
export CCACHE_BASEDIR=$PWD CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  say "configuring $BUILD_DIR"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMOSAIC_TORCH_PREFIX="$TORCH_PREFIX" ${MOSAIC_CMAKE_ARGS:-} >/dev/null
fi
say "building with $jobs job(s) (the first build takes a while: libtorch headers)"
ninja -C "$BUILD_DIR" -j"$jobs"
say "built $BUILD_DIR/src/cli/mosaic"
