#!/usr/bin/env python3
"""Merges one suite run (bench/run_suite.sh) into a single results document.

Inputs, in one folder: bench-<model>.json (`mosaic bench -o`), trace-<model>.json (`mosaic bench
--trace-out`, a Chrome trace of the chosen plan's measured median step) and hf-clip.json
(bench/hf_clip_baseline.py). Output: {"kind": "mosaic-suite", "gpu", "driver", "torch", "commit",
"date", "models": [...], "hf_clip": {...}, "traces": {model: trace}}; commit it as
bench/results/<gpu>-<date>.json and regenerate the README table and plots from it
(bench/make_readme_table.py, bench/plot_results.py).

    python3 bench/collect_results.py /tmp/raw -o results.json
"""
import argparse
import datetime
import glob
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    models, traces, hf = [], {}, None
    for path in sorted(glob.glob(os.path.join(args.folder, "bench-*.json"))):
        with open(path) as f:
            models.append(json.load(f))
    for path in sorted(glob.glob(os.path.join(args.folder, "trace-*.json"))):
        name = os.path.basename(path)[len("trace-"):-len(".json")]
        with open(path) as f:
            traces[name] = json.load(f)
    hf_path = os.path.join(args.folder, "hf-clip.json")
    if os.path.exists(hf_path):
        with open(hf_path) as f:
            hf = json.load(f)
    if not models:
        print(f"collect_results: no bench-*.json in {args.folder}", file=sys.stderr)
        return 2
    first = models[0]
    doc = {
        "kind": "mosaic-suite",
        "gpu": first.get("gpu"),
        "driver": first.get("driver"),
        "torch": first.get("torch"),
        "commit": first.get("commit"),
        "date": first.get("date"),
        # Several suites may run on one day: the newest one feeds the README.
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "models": models,
        "hf_clip": hf,
        "traces": traces,
    }
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, args.output)
    print(f"collect_results: {len(models)} models, {len(traces)} traces"
          f"{', HF baseline' if hf else ''} -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
