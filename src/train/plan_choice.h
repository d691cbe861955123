// How `mosaic train --plan` runs a step (docs/training.md, "Plans"):
//   temporal-eager   one module after another through the engine's executor, autograd
//   temporal-graph   one module after another as per-module CUDA graphs
//   shared-streams   the graphs on one plain stream per module, all at once
//   auto             the planner's short list (from the profile, or the synthetic law) plus
//                    temporal-graph and shared-streams, each timed for a few steps on this GPU;
//                    the fastest wins (the parameters are restored after the trials)
//   FILE.json        a plan file (mosaic plan -o)
// On the CPU every plan runs eagerly, task by task in its issue order (same math).
//
//   PlanChoiceOptions o;  o.plan = "auto";
//   MOSAIC_ASSIGN_OR_RETURN(PlanChoice c, ChooseTrainingPlan(spec, model, example, device, o));
//   c.plan;  c.mode;  c.predicted_step_ms;  c.summary;
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>

#include "core/model_spec.h"
#include "core/plan.h"
#include "core/status.h"
#include "engine/graphed_module.h"
#include "models/multimodal_model.h"

namespace mosaic::train {

struct PlanChoiceOptions {
  std::string plan;                     // see above
  std::string device_spec = "h100-sxm";  // the planner's device (configs/devices/)
  std::string profile;                  // "", a file, or "synthetic" (planner/inputs.h)
  std::string configs_dir = "configs";
  int candidates = 3;   // planner plans tried by auto
  int trial_steps = 3;  // timed steps per candidate
  std::function<void(const std::string&)> log;
};

struct PlanChoice {
  Plan plan;
  engine::ExecMode mode = engine::ExecMode::kGraph;
  double predicted_step_ms = 0;  // the perf model's, 0 when it could not simulate the plan
  std::string summary;           // one line: which plan and why
};

// `example` is a whole batch on `device` (shapes for the graphs and for the trials).
StatusOr<PlanChoice> ChooseTrainingPlan(const ModelSpec& spec, models::MultimodalModel model,
                                        const models::Batch& example, torch::Device device,
                                        const PlanChoiceOptions& options);

}  // namespace mosaic::train
