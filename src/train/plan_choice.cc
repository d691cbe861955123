#include "train/plan_choice.h"

#include <cstdio>

#include "engine/standard_plans.h"
#include "engine/step_timing.h"
#include "models/fused_norm.h"
#include "planner/inputs.h"
#include "planner/planner.h"

namespace mosaic::train {
namespace {

std::string Ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", ms);
  return buf;
}

}  // namespace

StatusOr<PlanChoice> ChooseTrainingPlan(const ModelSpec& spec, models::MultimodalModel model,
                                        const models::Batch& example, torch::Device device,
                                        const PlanChoiceOptions& options) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  const int M = spec.micro_batches;
  // Planning inputs for predictions and for auto; optional for the fixed plans.
  std::optional<PlanningInputs> inputs;
  StatusOr<DeviceSpec> dev = [&]() -> StatusOr<DeviceSpec> {
    MOSAIC_ASSIGN_OR_RETURN(std::string path, ResolveSpecPath(options.device_spec,
                                                              options.configs_dir, "devices",
                                                              "device"));
    return LoadDeviceSpec(path);
  }();
  if (dev.ok()) {
    PlanningInputs in;
    in.model = spec;
    in.device = *dev;
    StatusOr<Profile> p = PickProfile(spec, *dev, options.profile, options.configs_dir,
                                      &in.profile_from);
    if (p.ok()) {
      in.profile = std::move(*p);
      // (The fused kernels run on CUDA only: on the CPU every profile's kernels are as good.)
      if (std::string w = ProfileKernelsWarning(in, models::FusedKernelsInUse());
          device.is_cuda() && !w.empty())
        log("mosaic train: " + w);
      inputs = std::move(in);
    } else if (options.plan == "auto") {
      return p.status();
    }
  } else if (options.plan == "auto") {
    return dev.status();
  }
  const std::string dev_name = dev.ok() ? dev->name : options.device_spec;

  PlanChoice c;
  if (options.plan == "temporal-eager" || options.plan == "temporal-graph") {
    MOSAIC_ASSIGN_OR_RETURN(c.plan, engine::TemporalPlan(spec, M, dev_name));
    c.plan.name = options.plan;
    c.mode = options.plan == "temporal-eager" ? engine::ExecMode::kEager : engine::ExecMode::kGraph;
    c.summary = options.plan;
  } else if (options.plan == "shared-streams") {
    MOSAIC_ASSIGN_OR_RETURN(c.plan, engine::SharedStreamsPlan(spec, M, dev_name));
    c.plan.name = options.plan;
    c.summary = options.plan;
  } else if (options.plan == "auto") {
    PlannerOptions po;
    po.top_k = options.candidates;
    po.micro_batches = {M};  // the loader's micro-batching is the spec's
    MOSAIC_ASSIGN_OR_RETURN(PlanReport report, PlanStep(spec, inputs->device, inputs->profile, po));
    std::vector<Plan> candidates;
    for (const RankedPlan& r : report.plans)
      candidates.push_back(r.plan);
    MOSAIC_ASSIGN_OR_RETURN(Plan temporal, engine::TemporalPlan(spec, M, dev_name));
    temporal.name = "temporal-graph";
    MOSAIC_ASSIGN_OR_RETURN(Plan shared, engine::SharedStreamsPlan(spec, M, dev_name));
    shared.name = "shared-streams";
    candidates.push_back(temporal);
    candidates.push_back(shared);
    std::vector<double> predicted_ms;  // per candidate, from the same simulations
    if (device.is_cuda()) {
      // Before anything runs: drop the candidates the perf model says do not fit.
      std::vector<Plan> fitting;
      for (const Plan& p : candidates) {
        StatusOr<PlanSimulation> s = SimulatePlan(p, *inputs);
        const Status fits = s.ok() ? CheckPlanMemory(*s) : Status::Ok();
        if (fits.ok()) {
          fitting.push_back(p);
          predicted_ms.push_back(s.ok() ? s->result.step.value() / 1000 : 0);
        } else {
          log("mosaic train: --plan auto: skipping " + fits.message());
        }
      }
      if (fitting.empty())
        return FailedPrecondition("--plan auto: no candidate plan fits in memory (above)");
      candidates = std::move(fitting);
    }
    if (!device.is_cuda()) {
      // Nothing to time on the CPU: every plan runs the same tasks one at a time.
      c.plan = report.plans.empty() ? temporal : report.plans[0].plan;
      c.mode = engine::ExecMode::kEager;
      c.summary = c.plan.name + " (the planner's first; the CPU runs every plan in order)";
    } else {
      log("mosaic train: --plan auto: timing " + std::to_string(candidates.size()) +
          " plans for " + std::to_string(options.trial_steps) + " steps each (profile: " +
          inputs->profile_from + ")");
      // The trials step an optimizer: keep the parameters and put them back afterwards.
      std::vector<torch::Tensor> saved;
      {
        torch::NoGradGuard no_grad;
        for (const torch::Tensor& p : model->parameters())
          saved.push_back(p.detach().clone());
      }
      engine::StepTimingOptions t;
      t.steps = options.trial_steps;
      t.warmup = 2;
      t.record_trace = false;
      StatusOr<engine::PlanTrial> trial =
          engine::PickFastestPlan(model, candidates, example, device, t);
      {
        torch::NoGradGuard no_grad;
        std::vector<torch::Tensor> params = model->parameters();
        for (size_t k = 0; k < params.size(); ++k) {
          params[k].copy_(saved[k]);
          if (params[k].grad().defined()) params[k].mutable_grad().zero_();
        }
      }
      if (!trial.ok()) return trial.status();
      for (size_t k = 0; k < candidates.size(); ++k) {
        const double pred = predicted_ms[k];
        log("  " + candidates[k].name + ": " +
            (trial->failures[k].empty() ? "measured " + Ms(trial->trial_median_ms[k])
                                        : "failed: " + trial->failures[k]) +
            (pred > 0 ? ", predicted " + Ms(pred) : ""));
      }
      c.plan = candidates[trial->index];
      c.summary = c.plan.name + " (fastest of " + std::to_string(candidates.size()) +
                  " measured: " + Ms(trial->trial_median_ms[trial->index]) + ")";
    }
  } else {
    if (!FileExists(options.plan))
      return NotFound("--plan " + options.plan +
                      ": neither temporal-eager, temporal-graph, shared-streams, auto nor a file");
    MOSAIC_ASSIGN_OR_RETURN(c.plan, LoadPlan(options.plan));
    if (dev.ok()) MOSAIC_RETURN_IF_ERROR(ValidatePlan(c.plan, spec, *dev).WithPrefix(options.plan));
    if (c.plan.micro_batches != M)
      return InvalidArgument(options.plan + ": the plan has " +
                             std::to_string(c.plan.micro_batches) +
                             " micro-batches; the model (or --micro-batches) has " +
                             std::to_string(M));
    c.summary = "plan file " + options.plan;
  }
  if (!device.is_cuda()) c.mode = engine::ExecMode::kEager;
  if (inputs) {
    // One simulation of the chosen plan: its predicted step (graphs), and for a fixed plan on
    // the GPU the memory check that refuses it before anything runs.
    StatusOr<PlanSimulation> s = SimulatePlan(c.plan, *inputs);
    if (s.ok() && device.is_cuda() && options.plan != "auto")
      MOSAIC_RETURN_IF_ERROR(CheckPlanMemory(*s));
    if (s.ok() && c.mode == engine::ExecMode::kGraph)
      c.predicted_step_ms = s->result.step.value() / 1000;
  }
  c.inputs = std::move(inputs);
  return c;
}

}  // namespace mosaic::train
