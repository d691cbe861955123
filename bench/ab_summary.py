#!/usr/bin/env python3
"""The A/B of kernel switches as one Markdown table, from `mosaic bench` results files named
<config>-<model>.json (what the `newkernels` step of scripts/gpu_session.sh writes): per model and
configuration, the median step of graph temporal, shared streams and Mosaic, each against the
`base` configuration of the same model (same call, same GPU), then the kernel time per step by
kind (bench/kernel_breakdown.py's kinds) for graph temporal.

    python3 bench/ab_summary.py out/gpu/newkernels/*.json > ab.md

A ratio above 1 means the configuration ran faster than base. Files of different GPUs or
commits in one table are refused: their ratios would not be an A/B (the commit is what
`mosaic bench` recorded: MOSAIC_COMMIT, which gpu_session.sh's callers set).
"""
import collections
import json
import os
import sys

from kernel_breakdown import KINDS, kind

MODES = ("graph-temporal", "graph-shared-streams", "mosaic")


def load(paths):
    runs = collections.OrderedDict()  # (model, config) -> results
    for path in paths:
        config = os.path.basename(path).split("-", 1)[0]
        with open(path) as f:
            d = json.load(f)
        if (d["model"], config) in runs:
            raise ValueError("two results for {} under {}".format(d["model"], config))
        runs[(d["model"], config)] = d
    # per model, base first
    return collections.OrderedDict(sorted(runs.items(), key=lambda r: (r[0][0], r[0][1] != "base",
                                                                       r[0][1])))


def kinds_ms(mode):
    u = mode.get("sm_utilization") or {}
    out = collections.Counter()
    for k in u.get("top_kernels", []):
        out[kind(k["kernel"])] += k["ms_per_step"]
    return out


def medians(d):
    # a mode that failed (or could not be built) has no median: it shows as "-"
    return {m["mode"]: m["median_ms"] for m in d["modes"] if "median_ms" in m}


def table(runs):
    machines = {(d["gpu"], d.get("driver"), d.get("commit")) for d in runs.values()}
    if len(machines) > 1:
        raise ValueError("results from more than one GPU or commit: {}".format(sorted(machines)))
    lines = ["| model | config | switches | " + " | ".join(m + " ms" for m in MODES) + " | " +
             " | ".join(m + " vs base" for m in MODES) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in MODES * 2) + " |"]
    kind_lines = ["| model | config | " + " | ".join(k for k, _ in KINDS) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in KINDS) + " |"]
    for (model, config), d in runs.items():
        ms_of = medians(d)
        base = runs.get((model, "base"))
        base_ms = medians(base) if base else {}
        on = [k for k, v in sorted(d["settings"].items()) if v is True and k != "fused_norm"]
        cells = ["{:.2f}".format(ms_of[m]) if m in ms_of else "-" for m in MODES]
        ratios = ["{:.3f}x".format(base_ms[m] / ms_of[m])
                  if m in ms_of and m in base_ms else "-" for m in MODES]
        lines.append("| {} | {} | {} | {} | {} |".format(
            model, config, ", ".join(on) or "defaults", " | ".join(cells), " | ".join(ratios)))
        graph = next((m for m in d["modes"] if m["mode"] == "graph-temporal"), None)
        if graph and "sm_utilization" in graph:
            ms = kinds_ms(graph)
            kind_lines.append("| {} | {} | {} |".format(
                model, config, " | ".join("{:.2f}".format(ms[k]) for k, _ in KINDS)))
    gpu, driver, commit = machines.pop()
    head = "{} (driver {}), commit {}: median step ms, and base / config (>1: faster)".format(
        gpu, driver, (commit or "?")[:10])
    return "\n".join([head, ""] + lines + ["", "Graph temporal, kernel ms per step by kind:", ""] +
                     kind_lines)


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(table(load(sys.argv[1:])))
    except (OSError, KeyError, ValueError) as e:
        print("ab_summary: {}".format(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
