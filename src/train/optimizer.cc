// AdamW groups, the LR schedule and loss scaling (see optimizer.h).
#include "train/optimizer.h"

#include <cmath>

namespace mosaic::train {

bool WantsWeightDecay(const std::string& name, const torch::Tensor& parameter) {
  if (parameter.dim() < 2) return false;  // biases, norm scales, temperature
  for (const char* word : {"embed", "position", "class_token", "cls_token"}) {
    if (name.find(word) != std::string::npos) return false;
  }
  return true;
}

StatusOr<std::unique_ptr<torch::optim::AdamW>> MakeAdamW(
    const torch::OrderedDict<std::string, torch::Tensor>& named_parameters,
    const AdamWConfig& config) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& item : named_parameters) {
    if (!item.value().requires_grad()) continue;
    (WantsWeightDecay(item.key(), item.value()) ? decay : no_decay).push_back(item.value());
  }
  if (decay.empty() && no_decay.empty()) {
    return InvalidArgument("the model has no trainable parameters");
  }
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(config.lr)
                                                            .betas({config.beta1, config.beta2})
                                                            .eps(config.eps)
                                                            .weight_decay(wd));
  };
  // Both groups always exist (possibly empty) so that checkpoints have a fixed layout.
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(config.weight_decay));
  groups.emplace_back(no_decay, options(0.0));
  return std::make_unique<torch::optim::AdamW>(std::move(groups),
                                               torch::optim::AdamWOptions(config.lr));
}

int64_t CreateAdamWState(torch::optim::AdamW& optimizer) {
  int64_t bytes = 0;
  for (auto& group : optimizer.param_groups()) {
    const bool amsgrad = static_cast<torch::optim::AdamWOptions&>(group.options()).amsgrad();
    for (const torch::Tensor& p : group.params()) {
      auto& slot = optimizer.state()[p.unsafeGetTensorImpl()];
      if (slot) continue;
      // The same state torch::optim::AdamW::step creates for a parameter it meets first.
      auto state = std::make_unique<torch::optim::AdamWParamState>();
      state->step(0);
      state->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      state->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      if (amsgrad) state->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      bytes += (amsgrad ? 3 : 2) * p.numel() * p.element_size();
      slot = std::move(state);
    }
  }
  return bytes;
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

double WarmupCosine::operator()(int64_t step) const {
  const double peak = c_.peak_lr;
  if (step < c_.warmup_steps) {
    return peak * static_cast<double>(step + 1) / static_cast<double>(c_.warmup_steps);
  }
  const double floor = peak * c_.final_lr_fraction;
  const double span = static_cast<double>(std::max<int64_t>(1, c_.total_steps - c_.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - c_.warmup_steps) / span);
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

LossScaler::LossScaler(bool enabled, torch::Device device, double init_scale,
                       int64_t growth_interval)
    : enabled_(enabled), growth_interval_(growth_interval) {
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  scale_ = torch::full({}, enabled ? init_scale : 1.0, f32);
  growth_ = torch::zeros({}, f32.dtype(torch::kInt32));
  found_inf_ = torch::zeros({}, f32);
}

double LossScaler::scale() const {
  return scale_.item<double>();
}

torch::Tensor LossScaler::Scale(const torch::Tensor& loss) const {
  return enabled_ ? loss * scale_ : loss;
}

bool LossScaler::Unscale(const std::vector<torch::Tensor>& params) {
  if (!enabled_) return true;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  found_inf_.zero_();
  at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf_, scale_.reciprocal());
  return found_inf_.item<float>() == 0.0f;
}

void LossScaler::MarkNonFinite() {
  if (enabled_) found_inf_.fill_(1.0);
}

void LossScaler::Update() {
  if (!enabled_) return;
  at::_amp_update_scale_(scale_, growth_, found_inf_, 2.0, 0.5, growth_interval_);
}

torch::Tensor LossScaler::State() const {
  return torch::stack(
      {scale_.to(torch::kCPU, torch::kFloat64), growth_.to(torch::kCPU, torch::kFloat64)});
}

void LossScaler::LoadState(const torch::Tensor& state) {
  scale_.fill_(state[0].item<double>());
  growth_.fill_(state[1].item<int64_t>());
}

}  // namespace mosaic::train
