// `mosaic bench`: the measured step time of one model on this GPU, in one run, under every way of
// running it (docs/benchmarks.md):
//   eager-temporal        one module after another, autograd, no graphs (PyTorch as users run it)
//   graph-temporal        one module after another as CUDA graphs (the strongest sequential one)
//   graph-shared-streams  the same graphs, one plain stream per module, all at once
//   mosaic                the planner's short list plus the two graph baselines, each tried for
//                         --trial-steps, the fastest timed again in full (the planner falls back)
//   even-split            ablation: every module on an equal dedicated share of the SMs
//   no-contention         ablation: the planner's best plan when it ignores contention
// Each: warmup, --steps timed steps (forward + backward + clip + fused AdamW, CUDA events), every
// repetition, median and p10/p90, samples/s, MFU against the measured bf16 matmul peak, the
// allocator's peak memory, and (graph modes) the perf model's predicted step and per-task times
// against the measured ones. The mosaic mode's median step is also written as a measured trace
// (`mosaic show` draws it).
//
//   mosaic bench --model clip-b16 -o bench/results/clip-b16.json --trace-out clip-b16.trace.json
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>

#include "cli/commands.h"
#include "cli/plan_simulation.h"
#include "core/cost.h"
#include "core/file_io.h"
#include "engine/profiler.h"
#include "engine/standard_plans.h"
#include "engine/step_timing.h"
#include "models/fused_norm.h"
#include "models/linear.h"
#include "models/vit.h"
#include "planner/planner.h"

namespace mosaic::cli {
namespace {

struct BenchFlags {
  PlanningFlags in;
  std::string out;
  std::string trace_out;
  int steps = 20;
  int warmup = 5;
  int trial_steps = 5;
  int candidates = 3;
  bool ablations = true;
  bool eager = true;
  int utilization_steps = 3;
  FusedKernelFlags fused;
  std::string commit;
};

struct ModeRun {
  std::string name;
  engine::ExecMode exec = engine::ExecMode::kGraph;
  Plan plan;
  std::string note;
};

std::string Today() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&now));
  return buf;
}

// One partition per non-loss module, the SMs split evenly in units of the granularity; losses
// join their first producer's group (PartitionedPlan).
StatusOr<Plan> EvenSplitPlan(const ModelSpec& spec, const DeviceSpec& dev) {
  std::vector<engine::ModuleGroup> groups;
  for (const ModuleSpec& m : spec.modules)
    if (!m.is_loss()) groups.push_back({{m.name}, 0});
  const int n = static_cast<int>(groups.size());
  const int unit = dev.sm_granularity.value();
  const int units = dev.sm_groups;
  if (n < 2 || units < n) return FailedPrecondition("even split needs 2..sm_groups modules");
  int left = units;
  for (int k = 0; k < n; ++k) {
    const int take = left / (n - k);
    groups[k].sms = take * unit;
    left -= take;
  }
  groups.back().sms += dev.remainder().value();  // the remainder joins the last
  MOSAIC_ASSIGN_OR_RETURN(Plan p, engine::PartitionedPlan(spec, spec.micro_batches, groups,
                                                          /*backward_shared=*/false, dev.name));
  p.name = "even-split";
  return p;
}

Json StatsJson(const engine::StepTimes& t, int batch, double flops_per_step, double peak_tflops) {
  Json m;
  m["median_ms"] = t.median_ms;
  m["p10_ms"] = t.p10_ms;
  m["p90_ms"] = t.p90_ms;
  m["step_ms"] = t.step_ms;
  m["forward_backward_median_ms"] = t.fwd_bwd_median_ms;
  m["forward_backward_ms"] = t.fwd_bwd_ms;
  m["samples_per_s"] = t.median_ms > 0 ? batch / (t.median_ms / 1000) : 0;
  m["mfu"] = t.median_ms > 0 && peak_tflops > 0
                 ? flops_per_step / (t.median_ms / 1000) / (peak_tflops * 1e12)
                 : 0;
  m["peak_allocated_bytes"] = t.peak_allocated_bytes;
  m["peak_reserved_bytes"] = t.peak_reserved_bytes;
  m["misplaced_backward_graphs"] = t.misplaced_backwards;
  if (t.utilization) {
    const engine::MeasuredUtilization& u = *t.utilization;
    m["sm_utilization"] = {{"utilization", u.utilization},
                           {"busy_sm_ms", u.busy_sm_ms},
                           {"window_ms", u.window_ms},
                           {"steps", u.steps},
                           {"traced_step_ms", u.steps > 0 ? u.window_ms / u.steps : 0},
                           {"kernels", u.kernels},
                           {"place_sms", u.place_sms},
                           {"unplaced_kernel_fraction", u.unplaced_kernel_fraction},
                           {"kernel_ms_per_step", u.kernel_ms_per_step}};
    Json top = Json::array();
    for (const auto& k : u.top_kernels)
      top.push_back({{"kernel", k.name},
                     {"ms_per_step", k.ms_per_step},
                     {"calls_per_step", k.calls_per_step},
                     {"blocks_per_call", k.blocks_per_call}});
    m["sm_utilization"]["top_kernels"] = top;
  } else if (!t.utilization_error.empty()) {
    m["sm_utilization"] = {{"error", t.utilization_error}};
  }
  return m;
}

double RelError(double predicted, double measured) {
  return measured > 0 ? std::abs(predicted - measured) / measured : 0;
}

int Run(const BenchFlags& f) {
  // Every mode, the baselines included, runs the same kernels (Note [add + norm fusion in the
  // stack]).
  ApplyFusedKernelFlags(f.fused);
  const char* cmd = "bench";
  if (f.steps < 1 || f.warmup < 0 || f.trial_steps < 1 || f.candidates < 0 ||
      f.utilization_steps < 0)
    return ReportError(cmd, InvalidArgument("--steps and --trial-steps must be >= 1, --warmup, "
                                            "--candidates and --utilization-steps >= 0"));
  // The outputs are written after minutes of measuring: a path that cannot be written fails now.
  for (const std::string* path : {&f.out, &f.trace_out}) {
    if (path->empty()) continue;
    if (Status s = CheckCanWrite(*path); !s.ok()) return ReportError(cmd, s);
  }
  StatusOr<PlanningInputs> in = LoadPlanningInputs(f.in);
  if (!in.ok()) return ReportError(cmd, in.status());
  if (std::string w = ProfileKernelsWarning(*in, models::FusedKernelsInUse()); !w.empty())
    std::cerr << "mosaic bench: " << w << "\n";
  const ModelSpec& spec = in->model;
  if (!torch::cuda::is_available())
    return ReportError(cmd, Unavailable("no CUDA GPU here: the benchmark measures on the GPU"));
  const torch::Device device(torch::kCUDA, 0);
  torch::manual_seed(1);
  StatusOr<models::MultimodalModel> model = models::BuildMultimodalModel(spec, device);
  if (!model.ok()) return ReportError(cmd, model.status());
  const models::Batch batch = models::SyntheticBatch(spec, spec.batch_size, device, 7);
  const int M = spec.micro_batches;

  double flops_per_step = 0;  // forward + backward (2x forward) of every module
  for (size_t i = 0; i < spec.modules.size(); ++i)
    flops_per_step +=
        3 * EstimateModuleCost(spec, static_cast<int>(i), spec.batch_size).forward_flops.value();
  StatusOr<double> peak = engine::MeasureBf16PeakTflops(device);
  if (!peak.ok()) return ReportError(cmd, peak.status());
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::fprintf(stderr, "bench %s bs%d (%d micro-batches, %s) on %s: bf16 peak %.0f TFLOP/s\n",
               spec.name.c_str(), spec.batch_size, M, ToString(spec.precision), prop.name, *peak);

  engine::StepTimingOptions timing;
  timing.steps = f.steps;
  timing.warmup = f.warmup;
  timing.utilization_steps = f.utilization_steps;

  Json doc;
  doc["kind"] = "mosaic-bench";
  doc["model"] = spec.name;
  doc["batch_size"] = spec.batch_size;
  doc["micro_batches"] = M;
  doc["precision"] = ToString(spec.precision);
  doc["gpu"] = prop.name;
  doc["sms"] = prop.multiProcessorCount;
  doc["driver"] = engine::DriverVersion();
  doc["torch"] = engine::TorchVersion();
  doc["commit"] = f.commit;
  doc["date"] = Today();
  doc["device_spec"] = in->device.name;
  doc["profile"] = in->profile_from;
  doc["profile_fused_kernels"] = in->profile.fused_kernels;
  doc["settings"] = {{"steps", f.steps},
                     {"warmup", f.warmup},
                     {"trial_steps", f.trial_steps},
                     {"candidates", f.candidates},
                     {"optimizer", "fused AdamW"},
                     {"clip_grad", 1.0},
                     {"utilization_steps", f.utilization_steps},
                     {"fused_norm", f.fused.norm},
                     {"vectorized_norm", models::VectorizedAddNormOn()},
                     {"fused_linear_grad", f.fused.linear_grad},
                     {"fused_bias_grad", models::BiasGradKernelOn()},
                     {"patch_gemm", models::PatchGemm()}};
  doc["bf16_peak_tflops"] = *peak;
  doc["flops_per_step"] = flops_per_step;
  doc["modes"] = Json::array();

  std::vector<double> task_errors, step_errors;
  auto run_mode = [&](const ModeRun& mode) -> StatusOr<engine::StepTimes> {
    std::fprintf(stderr, "  %-22s ...", mode.name.c_str());
    std::fflush(stderr);
    engine::StepTimingOptions o = timing;
    o.mode = mode.exec;
    StatusOr<engine::StepTimes> t = engine::TimeSteps(*model, mode.plan, batch, device, o);
    Json m;
    m["mode"] = mode.name;
    m["execution"] = engine::ToString(mode.exec);
    m["plan"] = ToJson(mode.plan);
    if (!mode.note.empty()) m["note"] = mode.note;
    if (!t.ok()) {
      std::fprintf(stderr, " failed: %s\n", t.status().message().c_str());
      m["error"] = t.status().message();
      doc["modes"].push_back(m);
      return t;
    }
    m.update(StatsJson(*t, spec.batch_size, flops_per_step, *peak));
    // The perf model's prediction (graphs; the profile measures graphs, not eager autograd).
    if (mode.exec == engine::ExecMode::kGraph) {
      StatusOr<PlanSimulation> sim = SimulatePlan(mode.plan, *in);
      if (sim.ok()) {
        const double predicted = sim->result.step.value() / 1000;
        m["predicted_ms"] = predicted;
        m["predicted_utilization"] = sim->result.utilization;
        m["step_prediction_error"] = RelError(predicted, t->median_ms);
        step_errors.push_back(RelError(predicted, t->median_ms));
        Json tasks = Json::array();
        for (const engine::TaskSpan& s : t->trace) {
          const TaskTiming& tt = sim->result.tasks[s.task];
          const double pred = (tt.end - tt.start).value() / 1000, meas = s.end_ms - s.start_ms;
          const Task& task = sim->graph.tasks()[s.task];
          if (task.id.phase == TaskPhase::kOptimizer) continue;  // fused AdamW runs after
          const ModuleSpec& ms = spec.modules[task.module_index];
          if (!ms.is_loss()) task_errors.push_back(RelError(pred, meas));
          tasks.push_back({{"task", task.id.ToString()},
                           {"measured_ms", meas},
                           {"predicted_ms", pred},
                           {"start_ms", s.start_ms}});
        }
        m["tasks"] = tasks;
      } else {
        m["prediction_error"] = sim.status().message();
      }
    }
    doc["modes"].push_back(m);
    std::fprintf(stderr, " %8.2f ms (p10 %.2f, p90 %.2f)\n", t->median_ms, t->p10_ms, t->p90_ms);
    if (t->utilization) {
      std::fprintf(stderr, "  %-22s    SM-time %.1f%% over %d traced steps of %.2f ms\n", "",
                   100 * t->utilization->utilization, t->utilization->steps,
                   t->utilization->window_ms / std::max(1, t->utilization->steps));
    } else if (!t->utilization_error.empty()) {
      std::fprintf(stderr, "  %-22s    SM-time not measured: %s\n", "",
                   t->utilization_error.c_str());
    }
    return t;
  };

  StatusOr<Plan> temporal = engine::TemporalPlan(spec, M, in->device.name);
  StatusOr<Plan> shared = engine::SharedStreamsPlan(spec, M, in->device.name);
  if (!temporal.ok()) return ReportError(cmd, temporal.status());
  if (!shared.ok()) return ReportError(cmd, shared.status());
  temporal->name = "temporal";
  shared->name = "shared-streams";

  struct Row {
    std::string name;
    double ms = 0, utilization = -1;
  };
  std::vector<Row> rows;
  auto add_row = [&](const std::string& name, const StatusOr<engine::StepTimes>& t) {
    rows.push_back({name, t.ok() ? t->median_ms : 0,
                    t.ok() && t->utilization ? t->utilization->utilization : -1});
  };
  if (f.eager)
    add_row("eager-temporal",
            run_mode({"eager-temporal", engine::ExecMode::kEager, *temporal, ""}));
  StatusOr<engine::StepTimes> graph_temporal =
      run_mode({"graph-temporal", engine::ExecMode::kGraph, *temporal, ""});
  add_row("graph-temporal", graph_temporal);
  add_row("graph-shared-streams",
          run_mode({"graph-shared-streams", engine::ExecMode::kGraph, *shared, ""}));
  // The same streams with the critical one (longest alone) at high priority (Note [stream
  // priorities]): measured whether or not the model predicts a gain.
  std::vector<std::string> raised;
  StatusOr<Plan> prioritized = WithPrioritizedStream(*shared, *in, &raised);
  std::string prioritized_note;
  if (prioritized.ok()) {
    prioritized->name = "priority-streams";
    std::vector<std::string> ids;  // one per phase; the same module may lead several
    for (const std::string& id : raised)
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    for (const std::string& id : ids)
      prioritized_note += (prioritized_note.empty() ? "" : ", ") + id;
    prioritized_note = "shared streams, " + prioritized_note + " at high stream priority";
    add_row("graph-priority-streams", run_mode({"graph-priority-streams", engine::ExecMode::kGraph,
                                                *prioritized, prioritized_note}));
  } else if (prioritized.status().code() != StatusCode::kNotFound) {
    std::fprintf(stderr, "  graph-priority-streams not measured: %s\n",
                 prioritized.status().message().c_str());
    doc["modes"].push_back(
        {{"mode", "graph-priority-streams"}, {"error", prioritized.status().message()}});
  }

  // The planner's short list, then the measured choice.
  PlannerOptions po;
  po.top_k = f.candidates;
  std::vector<Plan> candidates;
  std::vector<std::string> strategies;
  Json planner_json;
  if (f.candidates > 0) {
    StatusOr<PlanReport> report = PlanStep(spec, in->device, in->profile, po);
    if (!report.ok()) {
      std::fprintf(stderr, "  planner failed: %s\n", report.status().message().c_str());
      planner_json["error"] = report.status().message();
    } else {
      for (const RankedPlan& r : report->plans) {
        candidates.push_back(r.plan);
        strategies.push_back(r.strategy);
      }
      planner_json["contention"] = report->contention;
      planner_json["simulations"] = report->simulations;
    }
  }
  candidates.push_back(*temporal);
  strategies.push_back("graph temporal (fallback)");
  candidates.push_back(*shared);
  strategies.push_back("graph shared streams (fallback)");
  if (prioritized.ok()) {
    candidates.push_back(*prioritized);
    strategies.push_back(prioritized_note + " (fallback)");
  }
  engine::StepTimingOptions trial_opts = timing;
  trial_opts.steps = f.trial_steps;
  trial_opts.warmup = std::min(f.warmup, 3);
  trial_opts.utilization_steps = 0;
  std::fprintf(stderr, "  trying %zu candidate plans for %d steps each\n", candidates.size(),
               f.trial_steps);
  StatusOr<engine::PlanTrial> trial =
      engine::PickFastestPlan(*model, candidates, batch, device, trial_opts);
  Json trial_json = Json::array();
  if (trial.ok()) {
    for (size_t k = 0; k < candidates.size(); ++k)
      trial_json.push_back({{"plan", candidates[k].name},
                            {"strategy", strategies[k]},
                            {"trial_median_ms", trial->trial_median_ms[k]},
                            {"error", trial->failures[k]}});
  }
  planner_json["trial"] = trial_json;
  doc["planner"] = planner_json;
  StatusOr<engine::StepTimes> chosen_times = trial.status();
  std::string chosen_name;
  if (trial.ok()) {
    const Plan& chosen = candidates[trial->index];
    chosen_name = chosen.name + " (" + strategies[trial->index] + ")";
    chosen_times = run_mode({"mosaic", engine::ExecMode::kGraph, chosen, chosen_name});
    add_row("mosaic", chosen_times);
    // The rule: peak memory within 15% of graph temporal, unless the plan trades memory
    // for speed, and then the trade is printed.
    if (chosen_times.ok() && graph_temporal.ok() && graph_temporal->peak_allocated_bytes > 0) {
      const double mem = chosen_times->peak_allocated_bytes / graph_temporal->peak_allocated_bytes;
      const double speed = graph_temporal->median_ms / chosen_times->median_ms;
      if (mem > 1.15 && speed > 1.0) {
        std::fprintf(stderr,
                     "  memory for speed: %s peaks at %.2f GiB, %.2fx graph temporal's %.2f GiB, "
                     "for a %.2fx faster step\n",
                     chosen.name.c_str(), chosen_times->peak_allocated_bytes / (1 << 30), mem,
                     graph_temporal->peak_allocated_bytes / (1 << 30), speed);
        doc["memory_trade"] = {
            {"peak_ratio", mem},
            {"speedup", speed},
            {"peak_allocated_bytes", chosen_times->peak_allocated_bytes},
            {"graph_temporal_peak_allocated_bytes", graph_temporal->peak_allocated_bytes}};
      }
    }
    if (chosen_times.ok() && !f.trace_out.empty()) {
      StatusOr<TaskGraph> graph = BuildTaskGraph(spec, chosen);
      if (graph.ok()) {
        const Timeline tl = engine::MeasuredTimeline(
            chosen, *graph, spec, chosen_times->trace, chosen_times->median_ms,
            spec.name + " on " + prop.name + ": " + chosen.name + " (measured median step)");
        Status s = WriteJsonFile(f.trace_out, ToChromeTrace(tl));
        if (!s.ok()) return ReportError(cmd, s);
      }
    }
  } else {
    std::fprintf(stderr, "  no candidate ran: %s\n", trial.status().message().c_str());
    doc["planner"]["trial_error"] = trial.status().message();
  }

  if (f.ablations) {
    StatusOr<Plan> even = EvenSplitPlan(spec, in->device);
    if (even.ok()) {
      add_row("even-split", run_mode({"even-split", engine::ExecMode::kGraph, *even,
                                      "every module on an equal dedicated share"}));
    }
    PlannerOptions nc = po;
    nc.top_k = 1;
    nc.perf.contention = 0;
    StatusOr<PlanReport> r = PlanStep(spec, in->device, in->profile, nc);
    if (r.ok() && !r->plans.empty()) {
      add_row(
          "no-contention",
          run_mode({"no-contention", engine::ExecMode::kGraph, r->plans[0].plan,
                    "the planner's best plan with contention ignored: " + r->plans[0].strategy}));
    }
  }

  // Summary: the perf model's accuracy over every graph mode and task the run timed.
  Json accuracy;
  accuracy["step_abs_rel_error_median"] = engine::Quantile(step_errors, 0.5);
  accuracy["step_abs_rel_error_p90"] = engine::Quantile(step_errors, 0.9);
  accuracy["task_abs_rel_error_median"] = engine::Quantile(task_errors, 0.5);
  accuracy["task_abs_rel_error_p90"] = engine::Quantile(task_errors, 0.9);
  accuracy["steps_compared"] = step_errors.size();
  accuracy["tasks_compared"] = task_errors.size();
  doc["model_accuracy"] = accuracy;
  doc["chosen"] = chosen_name;

  const double base = graph_temporal.ok() ? graph_temporal->median_ms : 0;
  std::printf("%s bs%d (%d micro-batches, %s) on %s, median of %d steps:\n", spec.name.c_str(),
              spec.batch_size, M, ToString(spec.precision), prop.name, f.steps);
  std::printf("  %-22s %10s %10s %12s %10s\n", "mode", "step ms", "vs graph", "samples/s",
              "SM-time");
  for (const Row& r : rows) {
    char util[16] = "-";
    if (r.utilization >= 0) std::snprintf(util, sizeof util, "%.1f%%", 100 * r.utilization);
    std::printf("  %-22s %10.2f %9.2fx %12.1f %10s\n", r.name.c_str(), r.ms,
                r.ms > 0 && base > 0 ? base / r.ms : 0.0,
                r.ms > 0 ? spec.batch_size / (r.ms / 1000) : 0.0, util);
  }
  std::printf("  chosen: %s\n", chosen_name.c_str());
  std::printf(
      "  perf model |error|: step median %.1f%% p90 %.1f%% (%zu plans), task median %.1f%% "
      "p90 %.1f%% (%zu tasks)\n",
      100 * engine::Quantile(step_errors, 0.5), 100 * engine::Quantile(step_errors, 0.9),
      step_errors.size(), 100 * engine::Quantile(task_errors, 0.5),
      100 * engine::Quantile(task_errors, 0.9), task_errors.size());
  if (!f.out.empty()) {
    Status s = WriteJsonFile(f.out, doc);
    if (!s.ok()) return ReportError(cmd, s);
    std::fprintf(stderr, "wrote %s\n", f.out.c_str());
  }
  return kExitOk;
}

}  // namespace

void AddBenchCommand(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "bench", "Measure a model's step time on this GPU: eager, graphs, shared streams, planned");
  auto f = std::make_shared<BenchFlags>();
  AddPlanningFlags(sub, &f->in, /*model_required=*/true);
  sub->add_option("-o,--out", f->out, "Results JSON (every repetition)");
  sub->add_option("--trace-out", f->trace_out,
                  "Measured trace of the chosen plan's median step (mosaic show draws it)");
  sub->add_option("--steps", f->steps, "Timed steps per mode")->capture_default_str();
  sub->add_option("--warmup", f->warmup, "Untimed steps per mode")->capture_default_str();
  sub->add_option("--trial-steps", f->trial_steps, "Timed steps per candidate plan")
      ->capture_default_str();
  sub->add_option("--candidates", f->candidates, "Planner plans to try (0: baselines only)")
      ->capture_default_str();
  sub->add_flag("!--no-ablations", f->ablations, "Skip the even-split and no-contention runs");
  sub->add_flag("!--no-eager", f->eager, "Skip the eager-temporal run");
  sub->add_option("--utilization-steps", f->utilization_steps,
                  "Steps per mode traced with CUPTI for the measured SM-time utilization (0: off)")
      ->capture_default_str();
  AddFusedKernelFlags(sub, &f->fused);
  sub->add_option("--commit", f->commit, "Commit recorded in the results")
      ->envname("MOSAIC_COMMIT");
  SetCommand(sub, [f] { return Run(*f); });
}

}  // namespace mosaic::cli
