// Online calibration and re-planning during training (docs/planning.md, "Online calibration"):
// after each step the measured time of every task is folded into the performance model
// (perfmodel/calibration.h), and every `replan_every` steps the planner runs again on the
// calibrated model; a new plan is proposed when its predicted step beats the current plan's
// (also predicted on the calibrated model) by more than `min_gain`, and the saving over the
// remaining steps pays for switching (`switch_cost_us`, e.g. re-capturing the graphs).
//
//   OnlinePlanner online(inputs, current_plan, {});
//   for each step:
//     MOSAIC_ASSIGN_OR_RETURN(std::optional<Plan> next, online.Observe(measured, steps_left));
//     if (next) { rebuild the executor with *next; }
//   online.predicted_step_us();   // the calibrated prediction of the current plan
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/plan.h"
#include "core/status.h"
#include "perfmodel/calibration.h"
#include "planner/inputs.h"
#include "planner/planner.h"

namespace mosaic {

struct OnlineOptions {
  int replan_every = 10;       // steps between planner runs
  double min_gain = 0.05;      // relative predicted gain a new plan must bring
  double switch_cost_us = 2e6; // one-off cost of switching plans (graph capture), microseconds
  PlannerOptions planner;      // its calibration pointer is set by OnlinePlanner
  // Wider bounds than a one-off calibration's [0.5, 2]: a profile taken on another GPU, batch
  // or library version can be off by more, and many observations back each factor here.
  CalibrationRule rule{0.5, 1.25, 0.25, 4.0};
};

// One measured step: each task's measured duration (start to end on its partition) and the
// step's time.
struct MeasuredStep {
  std::vector<std::pair<TaskId, TimeUs>> tasks;
  TimeUs step{0};
};

class OnlinePlanner {
 public:
  static StatusOr<OnlinePlanner> Create(PlanningInputs inputs, Plan current,
                                        OnlineOptions options = {});

  // Folds one step into the calibration; every replan_every steps, plans again and returns the
  // new plan when switching pays (it becomes the current plan), else nullopt.
  StatusOr<std::optional<Plan>> Observe(const MeasuredStep& measured, int64_t steps_left);

  const Plan& current() const { return current_; }
  const Calibration& calibration() const { return calibration_; }
  // The current plan's step on the calibrated model, microseconds.
  double predicted_step_us() const { return predicted_step_us_; }
  int replans() const { return replans_; }

 private:
  OnlinePlanner() = default;
  Status Predict();

  PlanningInputs inputs_;
  Plan current_;
  OnlineOptions options_;
  Calibration calibration_;
  PlanSimulation sim_;  // the current plan on the calibrated model
  double predicted_step_us_ = 0;
  int64_t steps_ = 0;
  int replans_ = 0;
};

}  // namespace mosaic
