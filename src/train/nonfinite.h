// Numeric faults in a training step: NaN or Inf in the loss or in the gradients, found within
// the step, the module they came from, and what the run does about it (`--on-nonfinite`,
// docs/training.md "Numeric faults"). Also the test hook that injects such a fault.
//
//   MOSAIC_ASSIGN_OR_RETURN(NonFinitePolicy p, ParseNonFinitePolicy("skip"));
//   NonFiniteGuard guard(p, &scaler, "fp32 on the CPU");
//   ... forward, backward ...
//   std::string line;
//   switch (guard.Check(step, loss_fault, *model, params, &line)) {
//     case StepVerdict::kApply: clip, optimizer step, scaler.Update(); break;
//     case StepVerdict::kSkip: log line; break;   // "step 3: gradients are NaN/Inf in ..."
//     case StepVerdict::kStop: return FailedPrecondition(line);
//   }
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/status.h"
#include "models/multimodal_model.h"

namespace mosaic::train {

class LossScaler;  // train/optimizer.h

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

// "loss is NaN (micro-batch 0), first non-finite output from module 'vision'": a step's loss
// fault, for NonFiniteGuard::Check. micro_batch -1: the whole batch (the engine's executor).
std::string DescribeLossFault(double loss, int micro_batch,
                              const std::vector<std::string>& nonfinite_outputs);
// For a loss that came back NaN/Inf from the engine's executor, which keeps no module outputs:
// runs the model's forward again on each micro-batch (no autograd, the step's autocast) until
// one has a module with a non-finite output, and describes the fault as above (the micro-batch
// and module found, or the whole batch when every output is finite).
std::string DiagnoseLossFault(models::MultimodalModelImpl& model,
                              const std::vector<models::Batch>& micro_batches, torch::Device device,
                              double loss);

// What the training loop does with a step after Check.
enum class StepVerdict {
  kApply,  // clip, step the optimizer, then LossScaler::Update
  kSkip,   // nothing touches the parameters or the optimizer; log the line
  kStop,   // end the run with the line as the error (FailedPrecondition)
};

// Note [numeric faults]: every step, eager (micro-batch by micro-batch through autograd) or
// planned (the engine's executor, --plan), ends in one Check after backward (and after the
// gradients' all-reduce under data parallelism) and before clipping and the optimizer: the
// loss fault the step saw, then the gradients (unscaled first under an fp16 loss scale; one
// device sync). A fault is named by where it shows; the policy decides; kSkip and kStop come
// with one line that names the step and the module.
class NonFiniteGuard {
 public:
  // `scaler`: the run's loss scale (disabled: none). `no_scale`: what the model trains in when
  // there is no scale to reduce, for the reduce-scale line ("fp32 on the CPU").
  NonFiniteGuard(NonFinitePolicy requested, LossScaler* scaler, std::string no_scale);
  // auto resolved: reduce-scale with an enabled loss scale, else stop.
  NonFinitePolicy policy() const { return policy_; }
  int64_t skipped_steps() const { return skipped_steps_; }
  // `step` is 0-based (said as step+1); `loss_fault` is DescribeLossFault's line, or empty
  // when every loss was finite. Under kStop the line does not say where to resume from.
  StepVerdict Check(int64_t step, const std::string& loss_fault,
                    const models::MultimodalModelImpl& model,
                    const std::vector<torch::Tensor>& params, std::string* line);

 private:
  NonFinitePolicy policy_;
  LossScaler* scaler_;
  std::string no_scale_;
  int64_t skipped_steps_ = 0;
  int consecutive_ = 0;
};

// Test hook (MOSAIC_INJECT_NONFINITE=STEP:TARGET in `mosaic train`): at step STEP (0-based,
// the step that completes as step STEP+1) put a NaN into the gradients of module TARGET after
// backward, or, with TARGET "loss", make the first micro-batch's loss NaN. Under --plan the
// executor's whole-step loss is made NaN after its backward (the gradients stay finite).
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
