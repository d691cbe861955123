#!/usr/bin/env python3
"""What PyTorch users run today: a Hugging Face CLIPModel training step on one GPU.

The same configuration as configs/models/clip-b16.json (ViT-B/16 image tower, 12-layer 512-wide
text tower, 512-d embeddings), a full training step (forward, contrastive loss, backward, fused
AdamW) under bf16 autocast, eager and with torch.compile. Random weights and random inputs:
no download. Writes one JSON document with every repetition.

    python3 bench/hf_clip_baseline.py --batch-sizes 32 128 --steps 30 -o $OUT/hf_clip.json

This is a reference peer for benchmarks only; Mosaic's runtime never imports Python.
"""
import argparse
import json
import statistics
import sys
import time


def build(batch_size, device):
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, vocab_size=49408),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=16),
        projection_dim=512,
    )
    try:
        model = CLIPModel._from_config(config, attn_implementation="sdpa")
    except TypeError:  # older transformers
        model = CLIPModel(config)
    model = model.to(device).train()
    g = torch.Generator(device="cpu").manual_seed(0)
    input_ids = torch.randint(1, 49407, (batch_size, 77), generator=g)
    input_ids[:, -1] = 49407  # end-of-text: CLIP pools at the highest id
    pixels = torch.randn(batch_size, 3, 224, 224, generator=g)
    return model, input_ids.to(device), pixels.to(device)


def kernel_breakdown(fn, steps):
    """Where the GPU time goes: `steps` more steps under torch.profiler (CUDA kernels only), the
    kernels grouped by name, longest total first (all of them), per step; as mosaic bench's
    sm_utilization.top_kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    totals = {}
    for e in prof.events():
        # Kernels only, as mosaic bench counts them (no Memcpy/Memset activities).
        if e.device_type != torch.autograd.DeviceType.CUDA or e.name.startswith(("Memcpy", "Memset")):
            continue
        us, calls = totals.get(e.name, (0.0, 0))
        totals[e.name] = (us + e.time_range.elapsed_us(), calls + 1)
    top = sorted(totals.items(), key=lambda kv: -kv[1][0])
    return {"kernel_ms_per_step": sum(us for us, _ in totals.values()) / 1000 / steps,
            "top_kernels": [{"kernel": k, "ms_per_step": us / 1000 / steps,
                             "calls_per_step": calls / steps} for k, (us, calls) in top]}


def run(batch_size, compiled, steps, warmup, kernel_steps=0):
    import torch

    device = torch.device("cuda")
    torch.manual_seed(0)
    model, input_ids, pixels = build(batch_size, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=input_ids, pixel_values=pixels, return_loss=True)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    fn = torch.compile(step) if compiled else step
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    warmup_s = time.time() - t0
    times_ms = []
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    for _ in range(steps):
        start.record()
        loss = fn()
        end.record()
        end.synchronize()
        times_ms.append(start.elapsed_time(end))
    med = statistics.median(times_ms)
    kernels = None
    if kernel_steps > 0:
        try:
            kernels = kernel_breakdown(fn, kernel_steps)
        except Exception as e:  # the timing stands without the breakdown
            kernels = {"error": str(e)}
    return {
        "strategy": "hf-compile" if compiled else "hf-eager",
        "batch_size": batch_size,
        "step_ms": times_ms,
        "median_ms": med,
        "p10_ms": sorted(times_ms)[len(times_ms) // 10],
        "p90_ms": sorted(times_ms)[(9 * len(times_ms)) // 10],
        "samples_per_s": batch_size / med * 1e3,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        "warmup_s": warmup_s,
        "final_loss": float(loss),
        **({"kernels": kernels} if kernels else {}),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--kernel-steps", type=int, default=0,
                    help="steps profiled afterwards for a per-kernel breakdown (default 0: none)")
    ap.add_argument("-o", "--output", required=True, help="JSON file to write")
    args = ap.parse_args()

    import torch
    import transformers

    if not torch.cuda.is_available():
        print("hf_clip_baseline: needs a CUDA GPU", file=sys.stderr)
        return 2
    results = []
    for bs in args.batch_sizes:
        for compiled in ([False] if args.no_compile else [False, True]):
            r = run(bs, compiled, args.steps, args.warmup, args.kernel_steps)
            print(f"{r['strategy']:11s} bs{bs:4d}: {r['median_ms']:8.2f} ms "
                  f"({r['samples_per_s']:7.0f} samples/s)", file=sys.stderr, flush=True)
            results.append(r)
            torch.cuda.empty_cache()
    doc = {
        "benchmark": "hf_clip_baseline",
        "model": "clip-b16 (HF CLIPModel, same configuration)",
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "settings": {"precision": "bf16 autocast", "optimizer": "AdamW fused",
                     "steps": args.steps, "warmup": args.warmup, "attention": "sdpa"},
        "results": results,
    }
    with open(args.output + ".tmp", "w") as f:
        json.dump(doc, f, indent=2)
    import os
    os.replace(args.output + ".tmp", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
