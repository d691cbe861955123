#include "models/losses.h"

#include "models/blocks.h"

#include <ATen/autocast_mode.h>

#include <cmath>

namespace mosaic::models {

namespace {

// Losses are computed in fp32 even inside an autocast region (their matmuls are tiny, and
// bf16 logits would quantize the temperature-scaled similarities).
class AutocastOff {
 public:
  explicit AutocastOff(c10::DeviceType device)
      : device_(device),
        available_(at::autocast::is_autocast_available(device)),
        prev_(available_ && at::autocast::is_autocast_enabled(device)) {
    if (prev_) at::autocast::set_autocast_enabled(device_, false);
  }
  ~AutocastOff() {
    if (prev_) at::autocast::set_autocast_enabled(device_, true);
  }

 private:
  c10::DeviceType device_;
  bool available_;
  bool prev_;
};

}  // namespace

torch::Tensor ClipLoss(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& scale) {
  AutocastOff no_autocast(a.device().type());
  TORCH_CHECK(a.dim() == 2 && a.sizes() == b.sizes(),
              "contrastive inputs must both be (B, D), got ", a.sizes(), " and ", b.sizes());
  namespace F = torch::nn::functional;
  torch::Tensor an = F::normalize(AtLeastFp32(a), F::NormalizeFuncOptions().dim(1));  // (B, D)
  torch::Tensor bn = F::normalize(AtLeastFp32(b), F::NormalizeFuncOptions().dim(1));  // (B, D)
  torch::Tensor logits = scale * an.mm(bn.t());                                       // (B, B)
  torch::Tensor labels = torch::arange(a.size(0), a.options().dtype(torch::kLong));
  return (F::cross_entropy(logits, labels) + F::cross_entropy(logits.t(), labels)) / 2;
}

ContrastiveLossImpl::ContrastiveLossImpl() {
  logit_scale = register_parameter("logit_scale", torch::full({}, std::log(1.0 / 0.07)));
}

torch::Tensor ContrastiveLossImpl::scale() const {
  return logit_scale.exp().clamp_max(100.0);
}

torch::Tensor ContrastiveLossImpl::forward(const std::vector<torch::Tensor>& features) {
  TORCH_CHECK(features.size() >= 2, "a contrastive loss needs at least 2 inputs, got ",
              features.size());
  std::vector<torch::Tensor> f = features;
  if (gather_ && is_training()) {
    for (auto& x : f)
      x = gather_(x);  // (B_r, D) -> (global B, D), every rank in the same order
  }
  torch::Tensor s = scale();
  torch::Tensor loss = ClipLoss(f[0], f[1], s);
  for (size_t i = 2; i < f.size(); ++i)
    loss = loss + ClipLoss(f[0], f[i], s);
  return loss;
}

torch::Tensor NextTokenLoss(const torch::Tensor& logits, const torch::Tensor& tokens,
                            const torch::Tensor& mask) {
  AutocastOff no_autocast(logits.device().type());
  TORCH_CHECK(logits.dim() == 3 && tokens.dim() == 2 && logits.size(0) == tokens.size(0) &&
                  logits.size(1) == tokens.size(1),
              "next-token loss needs logits (B, T, V) and tokens (B, T), got ", logits.sizes(),
              " and ", tokens.sizes());
  const int64_t T = tokens.size(1), V = logits.size(2);
  TORCH_CHECK(T >= 2, "next-token loss needs at least 2 text tokens, got ", T);
  torch::Tensor pred = AtLeastFp32(logits.narrow(1, 0, T - 1)).reshape({-1, V});  // (B(T-1), V)
  torch::Tensor target = tokens.narrow(1, 1, T - 1).reshape({-1});                // (B(T-1))
  namespace F = torch::nn::functional;
  if (!mask.defined()) return F::cross_entropy(pred, target);
  // Padded targets are set to ignore_index.
  torch::Tensor real = mask.narrow(1, 1, T - 1).reshape({-1}).to(torch::kBool);
  target = target.masked_fill(real.logical_not(), -100);
  return F::cross_entropy(pred, target, F::CrossEntropyFuncOptions().ignore_index(-100));
}

}  // namespace mosaic::models
