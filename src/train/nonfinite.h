// Numeric faults in a training step: NaN or Inf in the loss or in the gradients, found within
// the step, the module they came from, and what the run does about it (`--on-nonfinite`,
// docs/training.md "Numeric faults"). Also the test hook that injects such a fault.
//
//   MOSAIC_ASSIGN_OR_RETURN(NonFinitePolicy p, ParseNonFinitePolicy("skip"));
//   if (!AllGradientsFinite(params)) {
//     std::vector<std::string> bad = ModulesWithNonFiniteGradients(*model);  // {"vision"}
//   }
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/status.h"
#include "models/multimodal_model.h"

namespace mosaic::train {

enum class NonFinitePolicy {
  kAuto,         // reduce-scale when an fp16 loss scale is active (CUDA), else stop
  kSkip,         // skip the optimizer step (the loss scale, if any, is left as it is)
  kReduceScale,  // skip the step and halve the fp16 loss scale; without one, as skip
  kStop,         // stop the run with an error naming the module; no checkpoint of that state
};
StatusOr<NonFinitePolicy> ParseNonFinitePolicy(const std::string& s);  // auto|skip|...
const char* ToString(NonFinitePolicy p);                               // "reduce-scale"

// Steps in a row whose loss or gradients were non-finite after which a skip or reduce-scale
// run stops anyway: the model has diverged rather than met an outlier batch.
constexpr int kMaxConsecutiveNonFiniteSteps = 25;

// True when every defined gradient of `params` is finite (one device sync).
bool AllGradientsFinite(const std::vector<torch::Tensor>& params);
// Spec names of the modules with a NaN/Inf in their gradients, in spec order.
std::vector<std::string> ModulesWithNonFiniteGradients(const models::MultimodalModelImpl& model);
// Spec names of the modules whose forward output holds a NaN/Inf, in spec order.
std::vector<std::string> ModulesWithNonFiniteOutputs(const models::MultimodalModelImpl& model,
                                                     const models::ModuleOutputs& outputs);

// Test hook (MOSAIC_INJECT_NONFINITE=STEP:TARGET in `mosaic train`): at step STEP (0-based,
// the step that completes as step STEP+1) put a NaN into the gradients of module TARGET after
// backward, or, with TARGET "loss", make the first micro-batch's loss NaN.
struct NonFiniteInjection {
  int64_t step = -1;  // -1: none
  std::string target;
};
// "3:vision" -> {3, "vision"}; empty text: none.
StatusOr<NonFiniteInjection> ParseNonFiniteInjection(const std::string& text);
// Puts a NaN into the first gradient of module `name`; InvalidArgument if no such module or
// it has no gradient.
Status InjectNonFiniteGradient(models::MultimodalModelImpl& model, const std::string& name);

}  // namespace mosaic::train
