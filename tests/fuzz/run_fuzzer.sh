#!/usr/bin/env bash
# run_fuzzer.sh FUZZER SEED_DIR SECONDS: fuzzes for SECONDS from a copy of SEED_DIR (its files) and prints
# libFuzzer's execution count; fails on any crash, hang (10 s per input) or sanitizer report.
set -euo pipefail
fuzzer=$1 seeds=$2 seconds=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
find "$seeds" -maxdepth 1 -type f -exec cp {} "$work/corpus/" \;
cd "$work"
# Targets that need files (fuzz_data_shard) write them under TMPDIR: removed with $work.
export TMPDIR="$work"
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -print_final_stats=1 corpus 2>&1 | tee log | grep -E "^(stat::number_of_executed_units|Done|==[0-9]+==ERROR)" || true
if grep -qE "ERROR: (libFuzzer|AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer)|runtime error:" log; then
  grep -E "ERROR|runtime error" log | head -5
  exit 1
fi
grep -q "^Done" log
