// Projector from an encoder's features to the LLM's width (LLaVA): a linear map, or a
// 2-layer MLP with GELU (LLaVA-1.5's mlp2x_gelu), built from a `projector` ModuleSpec.
//
//   Projector proj(spec);                        // in_dim -> out_dim (hidden_dim for mlp2)
//   torch::Tensor y = proj(x);                   // (B, N, in_dim) -> (B, N, out_dim)
#pragma once

#include <torch/torch.h>

#include "core/model_spec.h"
#include "models/blocks.h"

namespace mosaic::models {

class ProjectorImpl : public torch::nn::Module {
 public:
  explicit ProjectorImpl(const ModuleSpec& spec);
  // x (..., in_dim) -> (..., out_dim).
  torch::Tensor forward(const torch::Tensor& x);

  const ModuleSpec& spec() const { return spec_; }
  torch::nn::Linear fc1{nullptr};  // in_dim -> hidden_dim (mlp2) or out_dim (linear)
  torch::nn::Linear fc2{nullptr};  // hidden_dim -> out_dim, mlp2 only

 private:
  ModuleSpec spec_;
};
TORCH_MODULE(Projector);

}  // namespace mosaic::models
