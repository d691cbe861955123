// ScalingCurve: a task's isolated time as a function of the SMs it runs on, fitted through a
// profile's measured points (Note [scaling curve] in scaling_curve.cc; docs/planning.md).
//
//   MOSAIC_ASSIGN_OR_RETURN(ScalingCurve c, ScalingCurve::Fit({{SmCount(16), TimeUs(95.5)},
//                                                            {SmCount(132), TimeUs(17.3)}}));
//   c.At(64.0);  // between the points, on the hyperbola a + b / sms through both
//
// The curve is monotone non-increasing in SMs, exact at measured points that are themselves
// non-increasing, and saturating beyond the last point.
#pragma once

#include <vector>

#include "core/profile.h"
#include "core/status.h"
#include "core/units.h"

namespace mosaic {

class ScalingCurve {
 public:
  ScalingCurve() = default;
  // Points need strictly increasing, positive SM counts and positive times. Non-monotone
  // measurements (noise) are first projected onto the closest non-increasing sequence
  // (pool-adjacent-violators), so the fit stays monotone.
  static StatusOr<ScalingCurve> Fit(const std::vector<ProfilePoint>& points);

  // Time on `sms` SMs (continuous: a shared stream may get a fractional share).
  TimeUs At(double sms) const;
  // The smallest SM count in [1, max_sms] whose time is within (1 + epsilon) of At(max_sms):
  // how many SMs the task can usefully occupy (its demand on a shared stream).
  double SaturationSms(double epsilon, double max_sms) const;
  // A copy with every time multiplied by `factor` (> 0); the shape is unchanged.
  ScalingCurve Scaled(double factor) const;
  // A copy with `offset` added to every time (>= 0), e.g. a communication time.
  ScalingCurve Shifted(TimeUs offset) const;

  // The monotone points the curve passes through.
  const std::vector<double>& sms() const { return s_; }
  const std::vector<double>& times_us() const { return t_; }

 private:
  std::vector<double> s_, t_;  // knots, s_ strictly increasing, t_ non-increasing
  std::vector<double> a_, b_;  // segment i (s_[i]..s_[i+1]): t = a_[i] + b_[i] / s
  double offset_us_ = 0;
};

}  // namespace mosaic
