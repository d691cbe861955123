// The optimizer side of training: torch's AdamW with two parameter groups (weight decay on
// matrices; none on biases, norms, embeddings, class tokens and the temperature), the
// warmup + cosine learning-rate schedule, and dynamic loss scaling for fp16.
//
//   MOSAIC_ASSIGN_OR_RETURN(auto opt, MakeAdamW(model->named_parameters(), {.lr = 1e-3}));
//   WarmupCosine lr({.peak_lr = 1e-3, .warmup_steps = 10, .total_steps = 200});
//   SetLearningRate(*opt, lr(step));
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/status.h"

namespace mosaic::train {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-6;
  double weight_decay = 0.1;
};

// Whether a parameter gets weight decay: tensors of 2+ dimensions except embeddings (token,
// position), class tokens and the like, found by name. Biases, norm scales and the
// contrastive temperature are 0-d or 1-d and get none.
bool WantsWeightDecay(const std::string& name, const torch::Tensor& parameter);

// AdamW over every parameter that requires grad, group 0 with weight decay, group 1 without.
// Fails when there is nothing to train.
StatusOr<std::unique_ptr<torch::optim::AdamW>> MakeAdamW(
    const torch::OrderedDict<std::string, torch::Tensor>& named_parameters,
    const AdamWConfig& config);

// Creates AdamW's moments (zeros, step 0: what its first step would create) for every
// parameter that has none yet, so that the optimizer's memory is taken now. A graph plan calls
// it before capturing: a plan that does not fit then runs out of memory while capturing, where
// the trainer falls back to a smaller plan, not at the first optimizer step. Returns the bytes
// it allocated.
int64_t CreateAdamWState(torch::optim::AdamW& optimizer);

// Sets the learning rate of every group.
void SetLearningRate(torch::optim::Optimizer& optimizer, double lr);

// Linear warmup from peak/warmup to peak over `warmup_steps`, then a cosine from peak down to
// `final_lr_fraction` * peak at `total_steps`:
//   step < W:  peak * (step + 1) / W
//   else:      floor + (peak - floor) * (1 + cos(pi * (step - W) / max(1, T - W))) / 2
struct ScheduleConfig {
  double peak_lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double final_lr_fraction = 0.1;
};
class WarmupCosine {
 public:
  explicit WarmupCosine(ScheduleConfig config) : c_(config) {}
  double operator()(int64_t step) const;

 private:
  ScheduleConfig c_;
};

// Dynamic loss scaling (what torch.amp.GradScaler does, on the same ATen kernels): the loss is
// multiplied by scale() before backward; Unscale() divides the gradients back and reports
// whether any is inf/NaN, in which case the step must be skipped; Update() halves the scale
// after an overflow and doubles it after `growth_interval` clean steps. Disabled (scale 1,
// no checks) unless fp16.
class LossScaler {
 public:
  LossScaler(bool enabled, torch::Device device, double init_scale = 65536.0,
             int64_t growth_interval = 2000);
  bool enabled() const { return enabled_; }
  double scale() const;
  torch::Tensor Scale(const torch::Tensor& loss) const;
  // Returns true when the gradients are finite (the step may be taken).
  bool Unscale(const std::vector<torch::Tensor>& params);
  // Makes the next Update back off (halve the scale) as if the gradients had overflowed: for
  // a step whose loss, not its gradients, was non-finite.
  void MarkNonFinite();
  void Update();
  // For checkpoints: {scale, growth_tracker}.
  torch::Tensor State() const;
  void LoadState(const torch::Tensor& state);

 private:
  bool enabled_;
  torch::Tensor scale_;      // () fp32
  torch::Tensor growth_;     // () int32
  torch::Tensor found_inf_;  // () fp32
  int64_t growth_interval_;
};

}  // namespace mosaic::train
