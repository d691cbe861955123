// MultimodalModel: a whole trainable model built from a ModelSpec (configs/models/*.json): one
// torch submodule per spec module (VisionTransformer, TextTransformer, CausalLm, Projector,
// AudioEncoder, ContrastiveLoss; a next-token loss has no parameters), run in the topological
// order of the spec's edges.
//
//   StatusOr<MultimodalModel> model = BuildMultimodalModel(spec, torch::kCPU);
//   if (!model.ok()) return model.status();
//   std::cout << ModelTable(**model);
//   Batch batch = SyntheticBatch(spec, /*batch_size=*/8, torch::kCPU, /*seed=*/1);
//   {
//     AutocastGuard autocast(device, spec.precision);  // bf16 on CUDA, nothing on the CPU
//     ModelOutput out = (*model)(batch);
//     out.loss.backward();
//   }
//
// Per-module use (the engine, which captures each module's forward and backward as separate
// CUDA graphs): ModuleInputs gathers the plain tensors a module consumes, ForwardModule runs
// that one module on them. `forward` is exactly this loop over TopologicalOrder().
//
// Input conventions of ForwardModule, by kind (inputs from other modules in edge order):
//   vit        {images (B, C, H, W)}                       -> (B, D) or (B, N, D)
//   text       {tokens (B, T) int64, mask (B, T) bool|undef} -> (B, D) or (B, T, D)
//   audio      {mels (B, n_mels, F)}                       -> (B, D) or (B, F', D)
//   projector  {x (B, N, in_dim) or (B, in_dim)}           -> same with out_dim
//   llm        {prefix_1 .. prefix_k (B, N_i, width), tokens (B, T)} -> logits (B, T, V)
//              (k >= 0; prefixes are concatenated along tokens in edge order; logits at the
//              text positions only, see llm.h)
//   loss contrastive {features_1 .. features_k (B, D)}     -> () fp32
//   loss next_token  {logits (B, T, V), tokens (B, T), mask (B, T) bool|undef} -> () fp32
// Encoders read the batch field of their kind, unless batch.inputs holds a tensor under their
// module name (several encoders of one kind with different shapes: ImageBind's depth/thermal).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model_spec.h"
#include "core/status.h"

namespace mosaic::models {

// One (micro-)batch. Tensors a model does not use may stay undefined.
struct Batch {
  torch::Tensor images;      // (B, C, H, W) float, normalized
  torch::Tensor tokens;      // (B, T) int64, right-padded
  torch::Tensor token_mask;  // (B, T) bool, true at real tokens; undefined: all real
  torch::Tensor audio;       // (B, n_mels, frames) float log-mel
  // Per-module inputs by module name, overriding the field of the module's kind.
  std::map<std::string, torch::Tensor> inputs;

  int64_t size() const;  // B, from the first defined tensor (0 if none)
  Batch To(torch::Device device) const;
  // Rows [start, start + length) of every defined tensor (micro-batches).
  Batch Slice(int64_t start, int64_t length) const;
};

using ModuleOutputs = std::map<std::string, torch::Tensor>;

struct ModelOutput {
  torch::Tensor loss;     // () fp32: the sum of every loss module's value
  ModuleOutputs outputs;  // every module's output by module name (loss modules: their value)
};

class MultimodalModelImpl : public torch::nn::Module {
 public:
  // TORCH_CHECKs what the spec validator already guarantees; use BuildMultimodalModel for a
  // Status instead of an exception.
  explicit MultimodalModelImpl(const ModelSpec& spec);

  ModelOutput forward(const Batch& batch);

  const ModelSpec& spec() const { return spec_; }
  int num_modules() const { return static_cast<int>(spec_.modules.size()); }
  // Index into spec().modules, or -1.
  int IndexOf(const std::string& name) const { return spec_.IndexOf(name); }

  // The tensors module `index` consumes, from the batch and from its producers' outputs
  // (which must already be in `outputs`), in the convention above.
  std::vector<torch::Tensor> ModuleInputs(int index, const Batch& batch,
                                          const ModuleOutputs& outputs) const;
  // Runs module `index` alone on plain tensors.
  torch::Tensor ForwardModule(int index, const std::vector<torch::Tensor>& inputs);

  // The torch module of spec module `index` (nullptr for a next-token loss).
  std::shared_ptr<torch::nn::Module> module(int index) const { return modules_.at(index); }
  std::vector<torch::Tensor> ModuleParameters(int index) const;
  int64_t ParameterCount(int index) const;  // elements of ModuleParameters(index)
  int64_t ParameterCount() const;           // whole model

 private:
  ModelSpec spec_;
  std::vector<std::shared_ptr<torch::nn::Module>> modules_;  // by spec index
};
TORCH_MODULE(MultimodalModel);

// Builds the model on `device` (fp32 master weights). InvalidArgument for a spec the models
// cannot build (a module kind/field combination they do not support), with the module's name.
StatusOr<MultimodalModel> BuildMultimodalModel(const ModelSpec& spec, torch::Device device);

// Checks that `batch` carries every input the spec's modules read, with the shapes and dtypes
// they accept and one batch size: InvalidArgument naming the module and the field otherwise.
// With check_values, token ids must lie in [0, vocab_size): on CUDA an id out of range would
// end the process with a device-side assert; this check synchronizes with the device.
Status CheckBatch(const ModelSpec& spec, const Batch& batch, bool check_values = true);

// The table printed at start: one row per module (name, kind, parameters counted from the
// torch module, forward GFLOPs per sample from core/cost.h) and a total row.
std::string ModelTable(const MultimodalModelImpl& model);

// Random inputs of the right shapes and ranges for every input the spec's modules consume:
// images N(0, 1), tokens uniform in [1, vocab) with the last position of each row = vocab - 1
// (an end-of-text token), mask all true, audio N(0, 1). Deterministic in `seed`.
Batch SyntheticBatch(const ModelSpec& spec, int64_t batch_size, torch::Device device,
                     uint64_t seed);

// Mixed precision for a scope (RAII): on CUDA with precision bf16 (fp16) turns on autocast to
// bf16 (fp16); on the CPU, or with fp32, does nothing: the CPU trains in fp32.
// Autocast's weight-cast cache is on; the engine turns it off while capturing CUDA graphs.
class AutocastGuard {
 public:
  AutocastGuard(torch::Device device, Precision precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;
  bool active() const { return active_; }

 private:
  bool active_ = false;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

}  // namespace mosaic::models
