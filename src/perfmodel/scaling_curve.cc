// Fitting and evaluating time-vs-SMs curves; see scaling_curve.h.
#include "perfmodel/scaling_curve.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace mosaic {

// Note [scaling curve]
// Between two measured points (s_i, t_i) and (s_j, t_j) the curve is the hyperbola
//   t(s) = a + b / s,   b = (t_i - t_j) / (1/s_i - 1/s_j),   a = t_i - b / s_i,
// i.e. Amdahl's law fitted to just that pair: a is the part that does not speed up with more
// SMs (launch latency, memory-bound kernels, the tail of a wave), b / s the part that does.
// Linear interpolation in 1/s is exact at both points, monotone (b >= 0 because the points are
// non-increasing) and, unlike linear interpolation in s, follows the convex shape measured on
// H100 (gpu-facts.md: ViT-B/16 95.5 ms at 16 SMs, 51.1 at 32, 30.2 at 64, 17.3 at 132).
// Below the first point the first segment continues (more time with fewer SMs; with a single
// point, perfect linear scaling). Beyond the last point the last segment continues, so the
// curve saturates toward a; when a < 0 (super-linear between the last two points, noise) the
// curve is capped at perfect linear scaling from the last point instead, never better.

StatusOr<ScalingCurve> ScalingCurve::Fit(const std::vector<ProfilePoint>& points) {
  if (points.empty()) return InvalidArgument("a scaling curve needs at least one point");
  for (size_t i = 0; i < points.size(); ++i) {
    if (points[i].sms.value() <= 0)
      return InvalidArgument("points[" + std::to_string(i) + "].sms must be positive");
    if (!(points[i].time.value() > 0) || !std::isfinite(points[i].time.value()))
      return InvalidArgument("points[" + std::to_string(i) + "].time_us must be positive");
    if (i > 0 && points[i].sms <= points[i - 1].sms)
      return InvalidArgument("points[" + std::to_string(i) + "].sms must increase");
  }
  // Pool adjacent violators: the least-squares non-increasing fit of the measured times.
  struct Block {
    double sum;
    int count;
    double mean() const { return sum / count; }
  };
  std::vector<Block> blocks;
  for (const auto& p : points) {
    blocks.push_back({p.time.value(), 1});
    while (blocks.size() >= 2 && blocks[blocks.size() - 2].mean() < blocks.back().mean()) {
      Block b = blocks.back();
      blocks.pop_back();
      blocks.back().sum += b.sum;
      blocks.back().count += b.count;
    }
  }
  ScalingCurve c;
  for (const auto& b : blocks)
    for (int k = 0; k < b.count; ++k)
      c.t_.push_back(b.mean());
  for (const auto& p : points)
    c.s_.push_back(p.sms.value());
  for (size_t i = 0; i + 1 < c.s_.size(); ++i) {
    double b = (c.t_[i] - c.t_[i + 1]) / (1.0 / c.s_[i] - 1.0 / c.s_[i + 1]);
    c.b_.push_back(b);
    c.a_.push_back(c.t_[i] - b / c.s_[i]);
  }
  return c;
}

TimeUs ScalingCurve::At(double sms) const {
  if (s_.empty()) return TimeUs(0);
  sms = std::max(sms, 1e-3);
  const size_t n = s_.size();
  double t;
  if (n == 1) {
    t = sms < s_[0] ? t_[0] * s_[0] / sms : t_[0];
  } else if (sms <= s_[0]) {
    t = a_[0] + b_[0] / sms;
  } else if (sms >= s_[n - 1]) {
    t = std::max(a_[n - 2] + b_[n - 2] / sms, t_[n - 1] * s_[n - 1] / sms);
  } else {
    size_t i = std::upper_bound(s_.begin(), s_.end(), sms) - s_.begin() - 1;
    t = a_[i] + b_[i] / sms;
  }
  return TimeUs(t + offset_us_);
}

double ScalingCurve::SaturationSms(double epsilon, double max_sms) const {
  const double target = At(max_sms).value() * (1 + epsilon);
  double lo = 1, hi = max_sms;
  if (At(lo).value() <= target) return lo;
  for (int it = 0; it < 60; ++it) {
    double mid = 0.5 * (lo + hi);
    (At(mid).value() <= target ? hi : lo) = mid;
  }
  return hi;
}

ScalingCurve ScalingCurve::Scaled(double factor) const {
  ScalingCurve c = *this;
  for (double& t : c.t_)
    t *= factor;
  for (double& a : c.a_)
    a *= factor;
  for (double& b : c.b_)
    b *= factor;
  c.offset_us_ *= factor;
  return c;
}

ScalingCurve ScalingCurve::Shifted(TimeUs offset) const {
  ScalingCurve c = *this;
  c.offset_us_ += offset.value();
  return c;
}

}  // namespace mosaic
