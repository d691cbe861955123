// Numeric faults (see nonfinite.h).
#include "train/nonfinite.h"

#include <limits>

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
