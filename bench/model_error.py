#!/usr/bin/env python3
"""Where the performance model's step error comes from, and what the executor-overhead terms fix.

Reads a suite run (bench/results/<gpu>-<date>.json: every strategy of every zoo model, the
measured steps, and each task's measured start and duration from CUDA events) and decomposes
each measured graph step the way the engine runs it (engine/plan_executor.cc, step_timing.cc):

    step = zero + span + optimizer
    zero      = fb - span        host zeroes every gradient before the first task (+ the loss sum)
    span      = end of the last task, from the step's start event
    optimizer = step - fb        gradient clipping + fused AdamW, after the last phase

and re-predicts every plan with `mosaic simulate` twice: the current model without the executor
terms (the device spec without its "executor" block) and with them
(Note [executor overhead] in src/perfmodel/perf_model.cc). The executor constants are fitted on
one model's graph-temporal step (--fit, default clip-b16) and every other model is a hold-out.

    python3 bench/model_error.py                     # markdown tables on stdout
    python3 bench/model_error.py --write-device      # also writes the fitted constants into
                                                     # configs/devices/h100-sxm.json
Needs a built `mosaic` (MOSAIC_BIN, else build-plan/src/cli/mosaic or build/src/cli/mosaic;
the torch-free build is enough: cmake -DMOSAIC_WITH_TORCH=OFF).
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def q(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(math.ceil(p * len(s))) - 1)] if s else float("nan")


def newest_suite():
    best = None
    for path in sorted(glob.glob(os.path.join(ROOT, "bench", "results", "*.json"))):
        with open(path) as f:
            d = json.load(f)
        if d.get("kind") == "mosaic-suite" and (best is None or d["date"] >= best[1]["date"]):
            best = (path, d)
    return best


def find_bin():
    for b in (os.environ.get("MOSAIC_BIN"), os.path.join(ROOT, "build-plan/src/cli/mosaic"),
              os.path.join(ROOT, "build/src/cli/mosaic")):
        if b and os.path.exists(b):
            return b
    sys.exit("model_error: no mosaic binary (set MOSAIC_BIN or build build-plan/src/cli/mosaic)")


class Sim:
    def __init__(self, binary, tmp):
        self.binary, self.tmp, self.n = binary, tmp, 0

    def run(self, plan, profile, device):
        self.n += 1
        pf = os.path.join(self.tmp, "plan{}.json".format(self.n))
        out = os.path.join(self.tmp, "sim{}.json".format(self.n))
        with open(pf, "w") as f:
            json.dump(plan, f)
        subprocess.run([self.binary, "simulate", "--plan", pf, "-p", profile, "-d", device,
                        "--configs", os.path.join(ROOT, "configs"), "--json", out],
                       check=True, capture_output=True, cwd=ROOT)
        with open(out) as f:
            return json.load(f)


def measured_parts(x):
    span = max(t["start_ms"] + t["measured_ms"] for t in x["tasks"])
    fb = x["forward_backward_median_ms"]
    return {"step": x["median_ms"], "zero": fb - span, "span": span,
            "opt": x["median_ms"] - fb,
            "loss": sum(t["measured_ms"] for t in x["tasks"] if t["task"].startswith("loss"))}


def predicted_parts(s, x):
    pred = {t["task"]: (t["end_us"] - t["start_us"]) / 1e3 for t in s["tasks"]}
    o = s["overhead"]
    return {"step": s["step_us"] / 1e3, "zero": o["before_us"] / 1e3,
            "span": (s["step_us"] - o["before_us"] - o["after_us"]) / 1e3,
            "opt": o["after_us"] / 1e3,
            "loss": sum(pred[t["task"]] for t in x["tasks"] if t["task"].startswith("loss"))}


def fit(model_entry, sizes, device, loss_pairs):
    """Executor constants from one model's graph-temporal step (docs/planning.md section 10)."""
    x = next(m for m in model_entry["modes"] if m["mode"] == "graph-temporal")
    meas = measured_parts(x)
    bw = device["memory_bandwidth_gbps"] * 1e9
    params, tensors = sizes["parameters"], sizes["parameter_tensors"]
    opt_bytes = 40.0
    eff = min(1.0, opt_bytes * params / (bw * meas["opt"] * 1e-3))
    zero_bw_us = 4.0 * params / (eff * bw) * 1e6
    per_tensor = max(0.0, (meas["zero"] * 1e3 - zero_bw_us) / tensors)
    loss_us = meas["loss"] * 1e3  # one forward (6 kernels per pair) + one backward (12)
    eager = loss_us / (18.0 * loss_pairs)
    r = lambda v, n: float("{:.{}g}".format(v, n))
    return {"zero_grad_us_per_tensor": r(per_tensor, 3), "eager_op_us": r(eager, 3),
            "optimizer_bytes_per_param": opt_bytes, "bandwidth_efficiency": r(eff, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", help="suite JSON (default: the newest)")
    ap.add_argument("--fit", default="clip-b16", help="model whose graph-temporal step is fitted")
    ap.add_argument("--write-device", action="store_true",
                    help="write the fitted constants into configs/devices/<device>.json")
    a = ap.parse_args()
    if a.results:
        path = a.results
        with open(path) as f:
            d = json.load(f)
    else:
        path, d = newest_suite()
    binary = find_bin()
    with tempfile.TemporaryDirectory() as tmp:
        sim = Sim(binary, tmp)
        dev_name = d["models"][0]["device_spec"]
        dev_path = os.path.join(ROOT, "configs", "devices", dev_name + ".json")
        with open(dev_path) as f:
            device = json.load(f)
        base = dict(device)
        base.pop("executor", None)
        base_path = os.path.join(tmp, dev_name + ".base.json")
        with open(base_path, "w") as f:
            json.dump(base, f)
        profile_of = lambda m: "synthetic" if m["profile"].startswith("synthetic") else \
            os.path.join(ROOT, m["profile"])
        # Fit on one model.
        fm = next(m for m in d["models"] if m["model"] == a.fit)
        fx = next(x for x in fm["modes"] if x["mode"] == "graph-temporal")
        s0 = sim.run(fx["plan"], profile_of(fm), base_path)
        with open(os.path.join(ROOT, "configs", "models", fm["model"] + ".json")) as f:
            spec = json.load(f)
        loss_inputs = sum(1 for e in spec["edges"] if e[1] == "loss")
        constants = fit(fm, s0["overhead"], device, max(1, loss_inputs - 1))
        fitted = dict(base, executor=constants)
        fitted_path = os.path.join(tmp, dev_name + ".fitted.json")
        with open(fitted_path, "w") as f:
            json.dump(fitted, f)

        rows, err_old, err_new, hold_old, hold_new, err_suite = [], [], [], [], [], []
        far_old, far_new = [], []  # other architectures too (not a batch variant of the fit)
        task_old, task_new = [], []
        for m in d["models"]:
            for x in m["modes"]:
                if "tasks" not in x or "predicted_ms" not in x:
                    continue
                old = sim.run(x["plan"], profile_of(m), base_path)
                new = sim.run(x["plan"], profile_of(m), fitted_path)
                me, po, pn = measured_parts(x), predicted_parts(old, x), predicted_parts(new, x)
                eo = abs(po["step"] - me["step"]) / me["step"]
                en = abs(pn["step"] - me["step"]) / me["step"]
                err_suite.append(x["step_prediction_error"])
                err_old.append(eo)
                err_new.append(en)
                if m["model"] != a.fit:
                    hold_old.append(eo)
                    hold_new.append(en)
                if not m["model"].startswith(a.fit):
                    far_old.append(eo)
                    far_new.append(en)
                pt_old = {t["task"]: (t["end_us"] - t["start_us"]) / 1e3 for t in old["tasks"]}
                pt_new = {t["task"]: (t["end_us"] - t["start_us"]) / 1e3 for t in new["tasks"]}
                for t in x["tasks"]:
                    if t["measured_ms"] > 0:
                        task_old.append(abs(pt_old[t["task"]] - t["measured_ms"]) / t["measured_ms"])
                        task_new.append(abs(pt_new[t["task"]] - t["measured_ms"]) / t["measured_ms"])
                rows.append((m["model"] + (" (fit)" if m["model"] == a.fit else ""), x["mode"],
                             me, po, pn, eo, en))

    print("Source `{}`; executor constants fitted on {} graph-temporal: `{}`.\n".format(
        os.path.relpath(path, ROOT), a.fit, json.dumps(constants)))
    print("Measured step = zero (gradients zeroed, before the first task) + span (first task to "
          "last) + optimizer (clip + AdamW, after); predicted without the executor "
          "terms (its span includes the optimizer tasks; zero and optimizer are 0) and with them. "
          "ms.\n")
    print("| model | plan | measured step = zero + span + opt | loss tasks meas | without: span "
          "(loss) | with: zero + span + opt (loss) | err without | err with |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, mode, me, po, pn, eo, en in rows:
        print("| {} | {} | {:.2f} = {:.2f} + {:.2f} + {:.2f} | {:.2f} | {:.2f} ({:.2f}) | "
              "{:.2f} = {:.2f} + {:.2f} + {:.2f} ({:.2f}) | {:.1%} | {:.1%} |".format(
                  name, mode, me["step"], me["zero"], me["span"], me["opt"], me["loss"],
                  po["span"], po["loss"], pn["step"], pn["zero"], pn["span"], pn["opt"],
                  pn["loss"], eo, en))
    print()
    print("| step error, median / p90 | without executor terms | with them |")
    print("| --- | --- | --- |")
    print("| as the suite recorded it (the model of commit {}) | {:.1%} / {:.1%} | |".format(
        d.get("commit", "?")[:10], q(err_suite, .5), q(err_suite, .9)))
    print("| all {} plans | {:.1%} / {:.1%} | {:.1%} / {:.1%} |".format(
        len(err_old), q(err_old, .5), q(err_old, .9), q(err_new, .5), q(err_new, .9)))
    print("| hold-out: {} plans of the other models | {:.1%} / {:.1%} | {:.1%} / {:.1%} |".format(
        len(hold_old), q(hold_old, .5), q(hold_old, .9), q(hold_new, .5), q(hold_new, .9)))
    print("| hold-out, other architectures only: {} plans | {:.1%} / {:.1%} | {:.1%} / {:.1%} |"
          .format(len(far_old), q(far_old, .5), q(far_old, .9), q(far_new, .5), q(far_new, .9)))
    print("| task error, {} tasks, loss tasks included (context) | {:.1%} / {:.1%} | "
          "{:.1%} / {:.1%} |".format(len(task_old), q(task_old, .5), q(task_old, .9),
                                     q(task_new, .5), q(task_new, .9)))
    if a.write_device:
        device["executor"] = constants
        with open(dev_path + ".tmp", "w") as f:
            f.write(json.dumps(device, indent=2) + "\n")
        os.replace(dev_path + ".tmp", dev_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
