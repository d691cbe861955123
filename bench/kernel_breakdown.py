#!/usr/bin/env python3
"""Where one training step's GPU time goes, by kind of kernel, from the per-kernel breakdowns
that `mosaic bench` (sm_utilization.top_kernels, per strategy) and bench/hf_clip_baseline.py
--kernel-steps (kernels, per HF strategy) record: every kernel by name, per step (files older
than 2026-12-05 hold only the 15 longest).

    python3 bench/kernel_breakdown.py bench/results/diagnosis/h200-2026-12-04-clip-b16-bs128.bench.json \
        bench/results/diagnosis/h200-2026-12-04-hf-clip-bs128.json

Prints a Markdown table: per strategy, all kernels' time per step (concurrent kernels add up),
then the listed kernels' time split by kind, and what the list leaves out ("rest": 0 when it
holds every kernel).
"""
import json
import sys

KINDS = [  # (kind, substrings of the kernel name), first match wins
    ("GEMM", ("nvjet", "gemm", "cutlass", "sm90_xmma")),
    ("attention", ("sdpa", "flash", "fmha")),
    ("fused (triton)", ("triton_",)),
    ("layer norm", ("layer_norm", "GammaBeta", "AddLayerNorm")),
    ("reduction (bias grads)", ("reduce_kernel", "ColumnSum", "SumSlicesKernel")),
    ("copy / cast", ("copy_kernel", "direct_copy")),
    # before elementwise: their names hold "Functor" too (FusedAdamMathFunctor, ...)
    ("multi-tensor (AdamW, clipping, zeroing, grad adds)", ("multi_tensor_apply",)),
    ("elementwise", ("elementwise", "Functor")),
    ("other", ()),
]


def kind(name):
    for k, keys in KINDS:
        if any(s in name for s in keys):
            return k
    return "other"


def rows(path):
    with open(path) as f:
        d = json.load(f)
    if "modes" in d:  # mosaic bench
        for m in d["modes"]:
            u = m.get("sm_utilization") or {}
            if "top_kernels" in u:
                yield "mosaic bench: " + m["mode"], m["median_ms"], u["kernel_ms_per_step"], u["top_kernels"]
    for r in d.get("results", []):  # hf_clip_baseline
        k = r.get("kernels") or {}
        if "top_kernels" in k:
            yield "HF " + r["strategy"], r["median_ms"], k["kernel_ms_per_step"], k["top_kernels"]


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    table = []
    for path in sys.argv[1:]:
        table.extend(rows(path))
    kinds = [k for k, _ in KINDS]
    print("| strategy | step ms | kernel ms/step | " + " | ".join(kinds) + " | rest |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in kinds) + " | --- |")
    for name, step, total, top in table:
        by = {k: 0.0 for k in kinds}
        for t in top:
            by[kind(t["kernel"])] += t["ms_per_step"]
        rest = total - sum(by.values())
        print("| {} | {:.1f} | {:.1f} | {} | {:.1f} |".format(
            name, step, total, " | ".join("{:.1f}".format(by[k]) for k in kinds), rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
