// `mosaic plan`: searches the best plans for a model on a device and writes the best one.
//
//   mosaic plan --model clip-b16 --device h100-sxm -o plan.json
//   mosaic plan -m llava-small --micro-batches 1,2,4 --top 5 --shortlist shortlist.json
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/planning_inputs.h"
#include "core/file_io.h"
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
};

std::string Partitions(const PhaseSpec& ph) {
  std::string s;
  for (const PartitionSpec& p : ph.partitions) {
    if (!s.empty()) s += " | ";
    s += p.id + (p.kind == PartitionKind::kDedicated ? " " + std::to_string(p.sms.value()) + " SMs"
                                                     : " shared");
  }
  return s;
}

int Run(const PlanFlags& f) {
  StatusOr<PlanningInputs> in = LoadPlanningInputs(f.in);
  if (!in.ok()) return ReportError("plan", in.status());
  PlannerOptions options;
  options.top_k = f.top;
  options.micro_batches = f.micro_batches;
  options.memory_budget_bytes = f.memory_budget_gib * 1024.0 * 1024 * 1024;
  options.perf.world_size = f.in.world_size;
  if (in->calibration) options.calibration = &*in->calibration;
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
  sub->add_option("--shortlist", f->shortlist,
                  "Also write the ranked short list (plans with predictions) to this JSON file");
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
  SetCommand(sub, [f] { return Run(*f); });
}

}  // namespace mosaic::cli
