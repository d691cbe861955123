// Online calibration of the performance model; see calibration.h.
#include "perfmodel/calibration.h"

#include <algorithm>
#include <cmath>

namespace mosaic {

// Note [calibration rule]
// Each (module, phase) has a multiplicative factor f on its predicted time (and one more factor
// applies to every task, from whole-step measurements). An observation with measured time m
// and prediction p (which already includes f) updates, in log space,
//   f <- clamp(f * clamp((m / p)^rate, 1 / max_step, max_step), min_factor, max_factor)
// i.e. an exponential moving average of log(m / p) with weight `rate` (0.5). Why this rule:
//  - multiplicative: a module that is 10% slower than profiled is 10% slower at every quota;
//  - with a constant true ratio R inside the bounds, log f converges to log R geometrically,
//    the error halving with each observation (rate 0.5), so a few steps suffice;
//  - bounded: one outlier (a preempted step, a cold cache) moves f by at most 25%, and no
//    sequence of observations takes f outside [0.5, 2]; beyond that the profile itself is
//    wrong and should be re-measured rather than patched.

double Calibration::factor(const std::string& module, TaskPhase phase) const {
  auto it = factors_.find({module, static_cast<int>(phase)});
  return it == factors_.end() ? 1.0 : it->second;
}

double Calibration::Update(double factor, double measured, double predicted) const {
  double step = std::pow(measured / predicted, rule_.rate);
  step = std::clamp(step, 1.0 / rule_.max_step, rule_.max_step);
  return std::clamp(factor * step, rule_.min_factor, rule_.max_factor);
}

static Status CheckTimes(TimeUs measured, TimeUs predicted) {
  if (!(measured.value() > 0) || !std::isfinite(measured.value()))
    return InvalidArgument("calibration: measured time must be positive and finite");
  if (!(predicted.value() > 0) || !std::isfinite(predicted.value()))
    return InvalidArgument("calibration: predicted time must be positive and finite");
  return Status::Ok();
}

Status Calibration::ObserveTask(const std::string& module, TaskPhase phase, TimeUs measured,
                                TimeUs predicted) {
  MOSAIC_RETURN_IF_ERROR(CheckTimes(measured, predicted));
  double& f = factors_.emplace(std::make_pair(module, static_cast<int>(phase)), 1.0).first->second;
  f = Update(f, measured.value(), predicted.value());
  ++observations_;
  return Status::Ok();
}

Status Calibration::ObserveStep(TimeUs measured, TimeUs predicted) {
  MOSAIC_RETURN_IF_ERROR(CheckTimes(measured, predicted));
  step_factor_ = Update(step_factor_, measured.value(), predicted.value());
  ++observations_;
  return Status::Ok();
}

Json Calibration::ToJson() const {
  Json doc;
  doc["step_factor"] = step_factor_;
  doc["observations"] = observations_;
  Json tasks = Json::array();
  for (const auto& [key, f] : factors_) {
    tasks.push_back({{"module", key.first},
                     {"phase", mosaic::ToString(static_cast<TaskPhase>(key.second))},
                     {"factor", f}});
  }
  doc["tasks"] = tasks;
  return doc;
}

StatusOr<Calibration> Calibration::FromJson(const Json& doc, CalibrationRule rule) {
  ErrorList errors;
  JsonReader r(doc, &errors);
  Calibration c(rule);
  if (!r.ExpectObject()) return errors.ToStatus();
  r.Optional("step_factor", &c.step_factor_, 1.0);
  r.Optional("observations", &c.observations_, 0);
  r.ForEach(
      "tasks",
      [&](JsonReader t) {
        std::string module, phase;
        double f = 1;
        t.Required("module", &module);
        t.Required("phase", &phase);
        t.Required("factor", &f);
        if (!t.ExpectOneOf("phase", phase, {"fwd", "bwd", "opt"})) return;
        TaskPhase p = phase == "fwd"   ? TaskPhase::kForward
                      : phase == "bwd" ? TaskPhase::kBackward
                                       : TaskPhase::kOptimizer;
        c.factors_[{module, static_cast<int>(p)}] = std::clamp(f, rule.min_factor, rule.max_factor);
      },
      /*required=*/false);
  c.step_factor_ = std::clamp(c.step_factor_, rule.min_factor, rule.max_factor);
  if (!errors.empty()) return errors.ToStatus();
  return c;
}

}  // namespace mosaic
