// Analytic cost of a module, from its spec alone: trainable parameters, forward FLOPs, the
// activation memory held between forward and backward, and the DRAM traffic of a forward pass.
// Used for the model table printed at start, for synthetic profiles before real ones exist,
// and for memory budgets in the planner. Measured profiles replace the time estimates; these
// counts stay (FLOPs are exact for matmuls and attention; memory and traffic are estimates,
// see Note [activation estimate] in cost.cc).
//
//   ModuleCost c = EstimateModuleCost(model, model.IndexOf("vision"), /*samples=*/32);
//   c.forward_flops.value()  // 2 * matmul MACs + attention, for 32 samples
#pragma once

#include "core/model_spec.h"
#include "core/units.h"

namespace mosaic {

struct ModuleCost {
  double parameters = 0;      // trainable parameters
  Flops forward_flops{0};     // for `samples` samples; backward is about twice this
  Bytes activation_bytes{0};  // held from forward to backward, at the spec's precision
  Bytes forward_traffic{0};   // DRAM bytes one forward pass moves (weights + activations)
  Bytes parameter_bytes{0};   // fp32 master weights + grads + AdamW moments (16 B/param)
};

ModuleCost EstimateModuleCost(const ModelSpec& model, int module_index, int samples);

// Tokens per sample leaving module `name`: 1 when pooled, its sequence otherwise; a projector
// passes its input's count through. An LLM's input is these prefix tokens plus its seq_len.
int InputTokensOut(const ModelSpec& model, const std::string& name);

}  // namespace mosaic
