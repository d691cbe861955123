// Comparing tensors in tests: the largest error relative to the reference, floored at 1 so that
// values near zero are compared absolutely.
#pragma once

#include <torch/torch.h>

namespace mosaic::testing {

// Max over elements of |a - b| / max(1, |b|), in double.
inline double MaxRelError(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor af = a.to(torch::kFloat64), bf = b.to(torch::kFloat64);
  return ((af - bf).abs() / bf.abs().clamp_min(1)).max().item<double>();
}

}  // namespace mosaic::testing
