// `mosaic plan`: searches the best plans for a model on a device and writes the best one.
//
//   mosaic plan --model clip-b16 --device h100-sxm -o plan.json
//   mosaic plan -m llava-small --micro-batches 1,2,4 --top 5 --shortlist shortlist.json
//   mosaic plan -m llava-small --gpus 64 -o plan.json   # layouts over 64 GPUs (simulated)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/planning_inputs.h"
#include "core/file_io.h"
#include "planner/multi_gpu.h"
#include "planner/planner.h"

namespace mosaic::cli {

namespace {

struct PlanFlags {
  PlanningFlags in;
  std::string output = "plan.json";
  std::string shortlist;
  int top = 3;
  std::vector<int> micro_batches;
  double memory_budget_gib = 0;
  bool exhaustive = false;
  int gpus = 1;
  bool gpus_given = false;  // --gpus (or MOSAIC_GPUS) was set: plan the layout over GPUs
  double link_bandwidth_scale = 1;
};

std::string Partitions(const PhaseSpec& ph) {
  std::string s;
  for (const PartitionSpec& p : ph.partitions) {
    if (!s.empty()) s += " | ";
    s += p.id + (p.kind == PartitionKind::kDedicated ? " " + std::to_string(p.sms.value()) + " SMs"
                                                     : " shared");
    if (p.priority != 0) s += " (priority " + std::to_string(p.priority) + ")";
  }
  return s;
}

// The stem of `path` without ".json", for the other groups' plan files.
std::string GroupPlanPath(const std::string& path, const std::string& group) {
  std::string stem = path;
  if (stem.size() > 5 && stem.compare(stem.size() - 5, 5, ".json") == 0)
    stem.resize(stem.size() - 5);
  std::string safe = group;
  for (char& c : safe)
    if (c == '+' || c == '|' || c == '/') c = '-';
  return stem + "." + safe + ".json";
}

int RunMultiGpu(const PlanFlags& f, const PlanningInputs& in, PlannerOptions options) {
  MultiGpuOptions mo;
  mo.gpus = f.gpus;
  mo.planner = options;
  CommModel comm = CommModel::FromDevice(in.device);
  if (f.link_bandwidth_scale != 1) {
    // A measured send/recv at the scaled bandwidth, folded in through the bounded hook.
    const double bytes = 64.0 * 1024 * 1024;
    Status st = comm.CalibrateSendRecv(
        Bytes(bytes),
        TimeUs(1e6 * bytes / (comm.spec_bandwidth().value() * f.link_bandwidth_scale) +
               comm.latency().value()));
    if (!st.ok()) return ReportError("plan", st);
  }
  mo.comm = &comm;
  auto t0 = std::chrono::steady_clock::now();
  StatusOr<MultiGpuReport> r = PlanMultiGpu(in.model, in.device, in.profile, mo);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.ok()) return ReportError("plan", r.status());
  std::printf(
      "%s on %d x %s, profile: %s, link %.0f GB/s, %.1f us (all figures below are "
      "simulated, not measured)\n",
      in.model.name.c_str(), r->gpus, in.device.name.c_str(), in.profile_from.c_str(),
      r->comm.bandwidth().value() / 1e9, r->comm.latency().value());
  std::printf(
      "planned in %.2f s; global batch %d (%d per GPU); simulated 1-GPU step %.3f ms, "
      "%.1f samples/s\n",
      secs, r->global_batch, in.model.batch_size, r->single_gpu_step.value() / 1000,
      r->single_gpu_samples_per_s);
  std::printf("\n%-4s %-46s %-30s %12s %12s %9s  %s\n", "rank", "layout", "GPUs per group",
              "step ms", "samples/s", "scaling", "figures");
  for (size_t i = 0; i < r->layouts.size(); ++i) {
    const MultiGpuLayout& l = r->layouts[i];
    std::printf("%-4zu %-46s %-30s %12.3f %12.1f %8.1f%%  simulated\n", i + 1, l.name.c_str(),
                l.GroupsText().c_str(), l.step.value() / 1000, l.samples_per_s,
                100 * l.scaling_efficiency);
  }
  const MultiGpuLayout& best = r->layouts[0];
  for (const GpuGroup& g : best.groups) {
    std::printf(
        "  %s group (simulated): %d GPUs, %d micro-batches/GPU, compute %.3f ms, "
        "all-reduce %.3f ms (%.3f exposed), link %.3f ms\n",
        g.name.c_str(), g.gpus, g.micro_batches_per_gpu, g.compute.value() / 1000,
        g.allreduce.value() / 1000, g.exposed_allreduce.value() / 1000, g.link.value() / 1000);
  }
  std::printf(
      "chosen (simulated): %s, %.3f ms/step, %.1f samples/s, %.1f%% scaling efficiency "
      "vs 1 GPU\n",
      best.name.c_str(), best.step.value() / 1000, best.samples_per_s,
      100 * best.scaling_efficiency);
  for (size_t i = 0; i < r->plans.size(); ++i) {
    const std::string path = i == 0 ? f.output : GroupPlanPath(f.output, best.groups[i].name);
    Status st = WriteJsonFile(path, ToJson(r->plans[i]));
    if (!st.ok()) return ReportError("plan", st);
    std::printf("wrote %s (single-GPU plan of the %s group, simulated %.3f ms step)\n",
                path.c_str(), best.groups[i].name.c_str(),
                r->plans[i].predicted_step ? r->plans[i].predicted_step->value() / 1000 : 0.0);
  }
  if (!f.shortlist.empty()) {
    Json doc;
    doc["model"] = in.model.name;
    doc["device"] = in.device.name;
    doc["gpus"] = r->gpus;
    doc["figures"] = "simulated";
    doc["global_batch"] = r->global_batch;
    doc["single_gpu_step_us"] = r->single_gpu_step.value();
    Json layouts = Json::array();
    for (const MultiGpuLayout& l : r->layouts) {
      Json groups = Json::array();
      for (const GpuGroup& g : l.groups) {
        groups.push_back({{"name", g.name},
                          {"modules", g.modules},
                          {"gpus", g.gpus},
                          {"micro_batches_per_gpu", g.micro_batches_per_gpu},
                          {"compute_us", g.compute.value()},
                          {"optimizer_us", g.optimizer.value()},
                          {"allreduce_us", g.allreduce.value()},
                          {"exposed_allreduce_us", g.exposed_allreduce.value()},
                          {"link_us", g.link.value()}});
      }
      layouts.push_back({{"layout", l.name},
                         {"kind", ToString(l.kind)},
                         {"predicted_step_us", l.step.value()},
                         {"samples_per_s", l.samples_per_s},
                         {"scaling_efficiency", l.scaling_efficiency},
                         {"groups", groups}});
    }
    doc["layouts"] = layouts;
    Status st = WriteJsonFile(f.shortlist, doc);
    if (!st.ok()) return ReportError("plan", st);
    std::printf("wrote %s (%zu layouts, best first, simulated)\n", f.shortlist.c_str(),
                r->layouts.size());
  }
  return kExitOk;
}

int Run(const PlanFlags& f) {
  if (f.gpus_given && f.gpus < 1) {
    return ReportError(
        "plan", InvalidArgument("--gpus must be at least 1 (got " + std::to_string(f.gpus) + ")"));
  }
  if (f.gpus_given && f.in.world_size != 1) {
    return ReportError("plan", InvalidArgument("--gpus and --world-size > 1 do not combine: "
                                               "--gpus models the data-parallel all-reduce "
                                               "itself"));
  }
  if (f.gpus_given && f.exhaustive) {
    return ReportError("plan", InvalidArgument("--exhaustive does not combine with --gpus"));
  }
  if (!(f.link_bandwidth_scale >= CommModel::kMinScale &&
        f.link_bandwidth_scale <= CommModel::kMaxScale)) {
    return ReportError("plan", InvalidArgument("--link-bandwidth-scale must be in [0.05, 2]"));
  }
  StatusOr<PlanningInputs> in = LoadPlanningInputs(f.in);
  if (!in.ok()) return ReportError("plan", in.status());
  PlannerOptions options;
  options.top_k = f.top;
  options.micro_batches = f.micro_batches;
  options.memory_budget_bytes = f.memory_budget_gib * 1024.0 * 1024 * 1024;
  options.perf.world_size = f.in.world_size;
  if (in->calibration) options.calibration = &*in->calibration;
  if (f.gpus_given) return RunMultiGpu(f, *in, options);
  auto t0 = std::chrono::steady_clock::now();
  StatusOr<PlanReport> report =
      f.exhaustive ? PlanStepExhaustive(in->model, in->device, in->profile, options)
                   : PlanStep(in->model, in->device, in->profile, options);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!report.ok()) return ReportError("plan", report.status());

  std::printf("%s on %s (%s%s), profile: %s\n", in->model.name.c_str(), in->device.name.c_str(),
              std::to_string(in->device.sm_count.value()).c_str(),
              in->device.kind == DeviceKind::kGpu ? " SMs" : " cores", in->profile_from.c_str());
  if (report->colocation_pairs > 0) {
    std::printf(
        "colocation: contention %.2f, shared-stream weight exponent %.2f, fitted to %d "
        "measured pairs (rms error %.1f%%)\n",
        report->contention, report->shared_weight_exponent, report->colocation_pairs,
        100 * (std::exp(report->colocation_rms_log_error) - 1));
  } else {
    std::printf(
        "colocation: contention %.2f, shared-stream weight exponent %.2f (defaults; the "
        "profile has no measured pairs)\n",
        report->contention, report->shared_weight_exponent);
  }
  std::printf("searched %lld simulated phases in %.2f s%s\n",
              static_cast<long long>(report->simulations), secs,
              f.exhaustive ? " (exhaustive)" : "");
  std::printf("\n%-4s %10s %8s %6s %9s  %s\n", "rank", "step ms", "speedup", "util", "act GiB",
              "strategy");
  for (size_t i = 0; i < report->plans.size(); ++i) {
    const RankedPlan& rp = report->plans[i];
    std::printf("%-4zu %10.3f %7.3fx %5.0f%% %9.2f  %s\n", i + 1, rp.step_us / 1000,
                report->temporal_us / rp.step_us, rp.utilization * 100,
                rp.peak_activation_bytes / (1024.0 * 1024 * 1024), rp.strategy.c_str());
    for (const PhaseSpec& ph : rp.plan.phases)
      std::printf("%36s %-9s %s\n", "", (ph.name + ":").c_str(), Partitions(ph).c_str());
  }
  std::printf("\nbaselines: temporal %.3f ms, all shared streams %.3f ms; best is %.3fx temporal\n",
              report->temporal_us / 1000, report->all_shared_us / 1000,
              report->temporal_us / report->plans[0].step_us);
  std::printf("memory: %.2f GiB weights+grads+AdamW, %.2f GiB left for activations\n",
              report->static_bytes / (1024.0 * 1024 * 1024),
              report->activation_budget_bytes / (1024.0 * 1024 * 1024));

  Status st = WriteJsonFile(f.output, ToJson(report->plans[0].plan));
  if (!st.ok()) return ReportError("plan", st);
  std::printf("wrote %s\n", f.output.c_str());
  if (!f.shortlist.empty()) {
    Json doc;
    doc["model"] = in->model.name;
    doc["device"] = in->device.name;
    doc["temporal_us"] = report->temporal_us;
    doc["all_shared_us"] = report->all_shared_us;
    Json plans = Json::array();
    for (const RankedPlan& rp : report->plans) {
      plans.push_back({{"strategy", rp.strategy},
                       {"predicted_step_us", rp.step_us},
                       {"utilization", rp.utilization},
                       {"peak_activation_bytes", rp.peak_activation_bytes},
                       {"plan", ToJson(rp.plan)}});
    }
    doc["plans"] = plans;
    st = WriteJsonFile(f.shortlist, doc);
    if (!st.ok()) return ReportError("plan", st);
    std::printf("wrote %s (%zu plans, best first)\n", f.shortlist.c_str(), report->plans.size());
  }
  return kExitOk;
}

}  // namespace

void AddPlanCommand(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "plan", "Search partitions, quotas and orders for a model on a device; write the best plan");
  auto f = std::make_shared<PlanFlags>();
  AddPlanningFlags(sub, &f->in, /*model_required=*/true);
  sub->add_option("--output,-o", f->output, "Where the best plan goes (JSON)")
      ->envname("MOSAIC_PLAN")
      ->capture_default_str();
  sub->add_option("--top", f->top, "Plans in the ranked short list")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  sub->add_option(
      "--shortlist", f->shortlist,
      "Also write the ranked short list (plans with predictions; with --gpus: the layouts) "
      "to this JSON file");
  sub->add_option("--micro-batches", f->micro_batches,
                  "Micro-batch counts to try (default: the model's and 1,2,4,8 dividing the "
                  "batch)")
      ->delimiter(',');
  sub->add_option("--memory-budget-gib", f->memory_budget_gib,
                  "Device memory the step may use, weights included (default: 90% of the device)")
      ->envname("MOSAIC_MEMORY_BUDGET_GIB")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--exhaustive", f->exhaustive,
                "Search exhaustively (the oracle; only for models with a few modules)");
  auto* gpus = sub->add_option("--gpus", f->gpus,
                               "GPUs to lay the model out over (1..65536): prints colocated, "
                               "disaggregated and mixed layouts ranked by simulated step time "
                               "and writes the chosen layout's single-GPU plan(s)")
                   ->envname("MOSAIC_GPUS")
                   ->capture_default_str();
  sub->add_option("--link-bandwidth-scale", f->link_bandwidth_scale,
                  "Measured over spec link bandwidth (a calibration, 0.05..2) for --gpus")
      ->envname("MOSAIC_LINK_BANDWIDTH_SCALE")
      ->capture_default_str();
  SetCommand(sub, [f, gpus] {
    f->gpus_given = gpus->count() > 0;
    return Run(*f);
  });
}

}  // namespace mosaic::cli
