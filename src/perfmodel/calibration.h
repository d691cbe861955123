// Calibration: folds measured task and step times back into the performance model, so the
// planner's predictions track the real GPU (Note [calibration rule] in calibration.cc).
//
//   Calibration cal;
//   cal.ObserveTask("vision", TaskPhase::kForward, /*measured=*/TimeUs(6100),
//                   /*predicted=*/model.Isolated(kind, 132));  // prediction already calibrated
//   PerfModel next = *PerfModel::Build(spec, device, profile, 32, options, &cal);
#pragma once

#include <map>
#include <string>
#include <utility>

#include "core/json_reader.h"
#include "core/status.h"
#include "core/task_graph.h"
#include "core/units.h"

namespace mosaic {

struct CalibrationRule {
  double rate = 0.5;        // fraction of the log error corrected per observation
  double max_step = 1.25;   // one observation moves a factor by at most this ratio
  double min_factor = 0.5;  // factors stay within [min_factor, max_factor]
  double max_factor = 2.0;
};

class Calibration {
 public:
  explicit Calibration(CalibrationRule rule = {}) : rule_(rule) {}

  // Multiplier on the time of (module, phase); 1 until observed.
  double factor(const std::string& module, TaskPhase phase) const;
  // Multiplier on every task's time, from whole-step observations; 1 until observed.
  double step_factor() const { return step_factor_; }

  // `predicted` is the model's prediction for the same conditions, with the current factors
  // applied. Non-positive or non-finite times are rejected (InvalidArgument).
  Status ObserveTask(const std::string& module, TaskPhase phase, TimeUs measured, TimeUs predicted);
  Status ObserveStep(TimeUs measured, TimeUs predicted);
  int observations() const { return observations_; }

  Json ToJson() const;
  static StatusOr<Calibration> FromJson(const Json& doc, CalibrationRule rule = {});

 private:
  double Update(double factor, double measured, double predicted) const;

  CalibrationRule rule_;
  std::map<std::pair<std::string, int>, double> factors_;
  double step_factor_ = 1.0;
  int observations_ = 0;
};

}  // namespace mosaic
