// Numeric faults (see nonfinite.h).
#include "train/nonfinite.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "train/optimizer.h"

namespace mosaic::train {
namespace {

bool TensorFinite(const torch::Tensor& t) {
  return !t.defined() || t.isfinite().all().item<bool>();
}

}  // namespace

StatusOr<NonFinitePolicy> ParseNonFinitePolicy(const std::string& s) {
  if (s == "auto") return NonFinitePolicy::kAuto;
  if (s == "skip") return NonFinitePolicy::kSkip;
  if (s == "reduce-scale") return NonFinitePolicy::kReduceScale;
  if (s == "stop") return NonFinitePolicy::kStop;
  return InvalidArgument("--on-nonfinite: expected auto, skip, reduce-scale or stop, got '" + s +
                         "'");
}

const char* ToString(NonFinitePolicy p) {
  switch (p) {
    case NonFinitePolicy::kAuto:
      return "auto";
    case NonFinitePolicy::kSkip:
      return "skip";
    case NonFinitePolicy::kReduceScale:
      return "reduce-scale";
    case NonFinitePolicy::kStop:
      return "stop";
  }
  return "?";
}

bool AllGradientsFinite(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> flags;
  for (const torch::Tensor& p : params) {
    if (p.grad().defined()) flags.push_back(p.grad().isfinite().all());
  }
  return flags.empty() || torch::stack(flags).all().item<bool>();
}

std::vector<std::string> ModulesWithNonFiniteGradients(const models::MultimodalModelImpl& model) {
  std::vector<std::string> out;
  for (int i = 0; i < model.num_modules(); ++i) {
    for (const torch::Tensor& p : model.ModuleParameters(i)) {
      if (!TensorFinite(p.grad())) {
        out.push_back(model.spec().modules[i].name);
        break;
      }
    }
  }
  return out;
}

std::vector<std::string> ModulesWithNonFiniteOutputs(const models::MultimodalModelImpl& model,
                                                     const models::ModuleOutputs& outputs) {
  std::vector<std::string> out;
  for (const ModuleSpec& m : model.spec().modules) {
    auto it = outputs.find(m.name);
    if (it != outputs.end() && it->second.is_floating_point() && !TensorFinite(it->second)) {
      out.push_back(m.name);
    }
  }
  return out;
}

std::string DescribeLossFault(double loss, int micro_batch,
                              const std::vector<std::string>& nonfinite_outputs) {
  return std::string("loss is ") +
         (std::isnan(loss) ? "NaN"
          : loss > 0       ? "+Inf"
                           : "-Inf") +
         (micro_batch < 0 ? std::string(" (whole batch)")
                          : " (micro-batch " + std::to_string(micro_batch) + ")") +
         ", " +
         (nonfinite_outputs.empty()
              ? std::string("every module's output finite")
              : "first non-finite output from module '" + nonfinite_outputs.front() + "'");
}

std::string DiagnoseLossFault(models::MultimodalModelImpl& model,
                              const std::vector<models::Batch>& micro_batches, torch::Device device,
                              double loss) {
  torch::NoGradGuard no_grad;
  for (size_t m = 0; m < micro_batches.size(); ++m) {
    models::ModelOutput out;
    {
      models::AutocastGuard autocast(device, model.spec().precision);
      out = model.forward(micro_batches[m]);
    }
    std::vector<std::string> bad = ModulesWithNonFiniteOutputs(model, out.outputs);
    if (!bad.empty()) return DescribeLossFault(loss, static_cast<int>(m), bad);
  }
  return DescribeLossFault(loss, -1, {});
}

NonFiniteGuard::NonFiniteGuard(NonFinitePolicy requested, LossScaler* scaler, std::string no_scale)
    : policy_(requested != NonFinitePolicy::kAuto      ? requested
              : scaler != nullptr && scaler->enabled() ? NonFinitePolicy::kReduceScale
                                                       : NonFinitePolicy::kStop),
      scaler_(scaler != nullptr && scaler->enabled() ? scaler : nullptr),
      no_scale_(std::move(no_scale)) {}

StepVerdict NonFiniteGuard::Check(int64_t step, const std::string& loss_fault,
                                  const models::MultimodalModelImpl& model,
                                  const std::vector<torch::Tensor>& params, std::string* line) {
  const bool finite = scaler_ != nullptr ? scaler_->Unscale(params) : AllGradientsFinite(params);
  if (finite && loss_fault.empty()) {
    consecutive_ = 0;
    return StepVerdict::kApply;
  }
  // Found within the step, before the optimizer touches anything. The line names the module
  // when the gradients or a module's output say which.
  std::string what = "step " + std::to_string(step + 1) + ": ";
  if (!loss_fault.empty()) {
    what += loss_fault;
  } else {
    std::string names;
    for (const std::string& b : ModulesWithNonFiniteGradients(model))
      names += (names.empty() ? "'" : ", '") + b + "'";
    what += std::string(scaler_ != nullptr ? "fp16 " : "") + "gradients are NaN/Inf in " +
            (names.empty() ? std::string("the model") : "module " + names);
  }
  ++skipped_steps_;
  ++consecutive_;
  if (policy_ == NonFinitePolicy::kStop) {
    *line = what + "; stopping (--on-nonfinite stop; lower --lr or check the data)";
    return StepVerdict::kStop;
  }
  if (consecutive_ >= kMaxConsecutiveNonFiniteSteps) {
    *line = what + "; " + std::to_string(consecutive_) +
            " steps in a row were NaN/Inf, the run has diverged; stopping";
    return StepVerdict::kStop;
  }
  if (policy_ == NonFinitePolicy::kReduceScale && scaler_ != nullptr) {
    if (finite) scaler_->MarkNonFinite();
    scaler_->Update();
    char scale[32];
    std::snprintf(scale, sizeof(scale), "%g", scaler_->scale());
    what += "; optimizer step skipped, loss scale halved to " + std::string(scale);
  } else {
    what += "; optimizer step skipped";
    if (policy_ == NonFinitePolicy::kReduceScale)
      what += " (no loss scale to reduce in " + no_scale_ + ")";
  }
  *line = what + " (--on-nonfinite " + ToString(policy_) + ")";
  return StepVerdict::kSkip;
}

StatusOr<NonFiniteInjection> ParseNonFiniteInjection(const std::string& text) {
  NonFiniteInjection inj;
  if (text.empty()) return inj;
  const size_t colon = text.find(':');
  const std::string step = text.substr(0, colon);
  if (colon == std::string::npos || step.empty() || colon + 1 == text.size() ||
      step.find_first_not_of("0123456789") != std::string::npos || step.size() > 12) {
    return InvalidArgument("MOSAIC_INJECT_NONFINITE: expected STEP:MODULE or STEP:loss, got '" +
                           text + "'");
  }
  inj.step = std::stoll(step);
  inj.target = text.substr(colon + 1);
  return inj;
}

Status InjectNonFiniteGradient(models::MultimodalModelImpl& model, const std::string& name) {
  const int index = model.IndexOf(name);
  if (index < 0) {
    return InvalidArgument("MOSAIC_INJECT_NONFINITE: no module '" + name + "' in " +
                           model.spec().name);
  }
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& p : model.ModuleParameters(index)) {
    torch::Tensor g = p.grad();
    if (!g.defined() || g.numel() == 0) continue;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    if (g.is_contiguous()) {
      g.view(-1)[0].fill_(nan);  // one element, as an overflow would
    } else {
      g.fill_(nan);
    }
    return Status::Ok();
  }
  return InvalidArgument("MOSAIC_INJECT_NONFINITE: module '" + name + "' has no gradients");
}

}  // namespace mosaic::train
