#include "models/projector.h"

namespace mosaic::models {

ProjectorImpl::ProjectorImpl(const ModuleSpec& spec) : spec_(spec) {
  TORCH_CHECK(spec.kind == ModuleKind::kProjector, "Projector needs a projector spec, got ",
              ToString(spec.kind));
  if (spec.projector == ProjectorKind::kMlp2) {
    fc1 = register_module("fc1", torch::nn::Linear(spec.in_dim, spec.hidden_dim));
    fc2 = register_module("fc2", torch::nn::Linear(spec.hidden_dim, spec.out_dim));
  } else {
    fc1 = register_module("fc1", torch::nn::Linear(spec.in_dim, spec.out_dim));
  }
  InitTransformerWeights(*this);
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.size(-1) == spec_.in_dim, spec_.name, ": input must be (..., ", spec_.in_dim,
              "), got ", x.sizes());
  if (!fc2) return fc1(x);  // (..., out)
  if (spec_.activation == Activation::kGeluTanh)
    return fc2(LinearGelu(x, fc1->weight, fc1->bias));  // (..., out), fused bias+GELU
  return fc2(Activate(fc1(x), spec_.activation));       // (..., out): exact GELU (HF LLaVA)
}

}  // namespace mosaic::models
