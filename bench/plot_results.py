#!/usr/bin/env python3
"""Plots of a suite run (bench/results/<gpu>-<date>.json from bench/run_suite.sh).

Per model: bench/results/plots/<model>-steps.png, the median step time of every strategy with
its p10-p90 spread (and, for clip-b16 at bs32/bs128, Hugging Face CLIPModel eager and
torch.compile measured in the same run), and <model>-gantt.svg, the measured median step of
the chosen plan drawn by `mosaic show` from the recorded trace.

    pip install -r bench/requirements.txt
    python3 bench/plot_results.py bench/results/h100-2026-11-23.json --mosaic build/src/cli/mosaic
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def hf_rows(doc, batch):
    hf = doc.get("hf_clip") or {}
    rows = []
    for r in hf.get("results", []):
        if r["batch_size"] == batch:
            s = sorted(r["step_ms"])
            rows.append((r["strategy"], r["median_ms"], s[len(s) // 10], s[(9 * len(s)) // 10]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--mosaic", default="build/src/cli/mosaic", help="mosaic binary (Gantt)")
    ap.add_argument("-o", "--out-dir", default=None, help="default: <results folder>/plots")
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.results) as f:
        doc = json.load(f)
    out = args.out_dir or os.path.join(os.path.dirname(args.results), "plots")
    os.makedirs(out, exist_ok=True)
    for m in doc["models"]:
        rows = [(x["mode"], x["median_ms"], x["p10_ms"], x["p90_ms"])
                for x in m["modes"] if "median_ms" in x]
        if m["model"].startswith("clip-b16"):
            rows += hf_rows(doc, m["batch_size"])
        names = [r[0] for r in rows]
        med = [r[1] for r in rows]
        err = [[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
        colors = ["#c44e52" if n == "mosaic" else "#8c8c8c" if n.startswith("hf") else "#4c72b0"
                  for n in names]
        ax.barh(names, med, xerr=err, color=colors)
        ax.invert_yaxis()
        for k, v in enumerate(med):
            ax.text(v, k, f" {v:.1f}", va="center", fontsize=8)
        ax.set_xlabel("step time, ms (median, p10-p90)")
        ax.set_title(f"{m['model']} bs{m['batch_size']} on {m['gpu']} ({m['date']}, "
                     f"{(m.get('commit') or '')[:8]})", fontsize=9)
        fig.tight_layout()
        png = os.path.join(out, f"{m['model']}-steps.png")
        fig.savefig(png, dpi=110)
        plt.close(fig)
        print("wrote", png)
        trace = doc.get("traces", {}).get(m["model"])
        if trace and os.path.exists(args.mosaic):
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as t:
                json.dump(trace, t)
            svg = os.path.join(out, f"{m['model']}-gantt.svg")
            subprocess.run([args.mosaic, "show", t.name, "-o", svg], check=True,
                           stdout=subprocess.DEVNULL)
            os.unlink(t.name)
            print("wrote", svg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
