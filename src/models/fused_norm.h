// The residual add + LayerNorm of a pre-norm transformer block as one autograd function: on
// CUDA (fp32 residual, bf16 branch output) the fused kernels of kernels/layer_norm.h, elsewhere
// ATen ops computing the same formulas (Note [fused add + layer norm] in
// kernels/layer_norm.cu). Not yet wired into TransformerBlock: the kernels still need their
// first check on a GPU (tests/models/fused_norm_gpu_test.cc).
//
//   auto [h, y] = AddLayerNorm(x, attn_out, ln2->weight, ln2->bias, 1e-5);
//   // h = x + attn_out (fp32, the residual stream), y = layer_norm(h) in bf16, for the MLP
#pragma once

#include <torch/torch.h>

#include <utility>

namespace mosaic::models {

enum class NormPath { kAuto, kKernel, kAten };

// x: (..., C) fp32; delta: same shape (any floating dtype; bf16 for the kernel) or undefined
// (then h = x); weight, bias: (C) fp32. Returns (h, y): h fp32 (..., C), y bf16 (..., C).
// kAuto takes the kernel when the inputs suit it (CUDA, the dtypes above, C within
// kernels::kMaxLayerNormCols); kKernel insists (an error otherwise); kAten never takes it.
// Gradients flow to x, delta (in its dtype), weight and bias; no double backward. Without a
// delta, h is a view of x that autograd forbids modifying in place (write h + ..., not h += ...).
// Under at::globalContext().deterministicAlgorithms() kAuto takes the ATen path (the kernel's
// weight/bias gradient sums use atomics).
std::pair<torch::Tensor, torch::Tensor> AddLayerNorm(const torch::Tensor& x,
                                                     const torch::Tensor& delta,
                                                     const torch::Tensor& weight,
                                                     const torch::Tensor& bias, double eps,
                                                     NormPath path = NormPath::kAuto);

}  // namespace mosaic::models
