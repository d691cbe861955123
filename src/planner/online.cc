#include "planner/online.h"

namespace mosaic {

StatusOr<OnlinePlanner> OnlinePlanner::Create(PlanningInputs inputs, Plan current,
                                              OnlineOptions options) {
  if (options.replan_every < 1) return InvalidArgument("replan_every must be >= 1");
  if (options.min_gain < 0) return InvalidArgument("min_gain must be >= 0");
  OnlinePlanner p;
  p.inputs_ = std::move(inputs);
  p.current_ = std::move(current);
  p.options_ = std::move(options);
  p.calibration_ = p.inputs_.calibration ? *p.inputs_.calibration : Calibration(p.options_.rule);
  MOSAIC_RETURN_IF_ERROR(p.Predict());
  return p;
}

Status OnlinePlanner::Predict() {
  inputs_.calibration = calibration_;
  MOSAIC_ASSIGN_OR_RETURN(sim_, SimulatePlan(current_, inputs_));
  predicted_step_us_ = sim_.result.step.value();
  return Status::Ok();
}

StatusOr<std::optional<Plan>> OnlinePlanner::Observe(const MeasuredStep& measured,
                                                     int64_t steps_left) {
  // Fold every task against the prediction made with the current factors, then the step.
  for (const auto& [id, time] : measured.tasks) {
    const int t = sim_.graph.Find(id);
    if (t < 0) return InvalidArgument("measured task " + id.ToString() + " is not in the plan");
    if (id.phase == TaskPhase::kOptimizer) continue;  // the fused optimizer runs after the step
    const TaskTiming& tt = sim_.result.tasks[t];
    const TimeUs predicted = tt.end - tt.start;
    if (predicted.value() <= 0 || time.value() <= 0) continue;
    MOSAIC_RETURN_IF_ERROR(calibration_.ObserveTask(id.module, id.phase, time, predicted));
  }
  MOSAIC_RETURN_IF_ERROR(Predict());
  ++steps_;
  if (steps_ % options_.replan_every != 0) return std::optional<Plan>();

  PlannerOptions po = options_.planner;
  po.calibration = &calibration_;
  MOSAIC_ASSIGN_OR_RETURN(PlanReport report,
                          PlanStep(inputs_.model, inputs_.device, inputs_.profile, po));
  if (report.plans.empty()) return std::optional<Plan>();
  const RankedPlan& best = report.plans[0];
  const double gain_us = predicted_step_us_ - best.step_us;
  const bool worth = gain_us > options_.min_gain * predicted_step_us_ &&
                     gain_us * static_cast<double>(steps_left) > options_.switch_cost_us;
  if (!worth) return std::optional<Plan>();
  current_ = best.plan;
  ++replans_;
  MOSAIC_RETURN_IF_ERROR(Predict());
  return std::optional<Plan>(current_);
}

}  // namespace mosaic
