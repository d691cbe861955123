// The residual add + LayerNorm of a pre-norm transformer block as one autograd function: on
// CUDA (fp32 residual, bf16 branch output) the fused kernels of kernels/layer_norm.h, elsewhere
// ATen ops computing the same formulas (Note [fused add + layer norm] in
// kernels/layer_norm.cu). TransformerStack uses it when SetFuseAddNorm(true) (below).
//
//   auto [h, y] = AddLayerNorm(x, attn_out, ln2->weight, ln2->bias, 1e-5);
//   // h = x + attn_out (fp32, the residual stream), y = layer_norm(h) in bf16, for the MLP
#pragma once

#include <torch/torch.h>

#include <utility>

#include "models/switch_scope.h"

namespace mosaic::models {

// kKernel: the kernels, vectorized where the shape allows (Note [vectorized rows in registers]
// in kernels/layer_norm.cu); kScalarKernel: their scalar forms only (one element per lane and
// load: the first fused kernels). kAuto takes the vectorized forms only under
// SetVectorizedAddNorm(true) (below), else the scalar ones.
enum class NormPath { kAuto, kKernel, kAten, kScalarKernel };

// x: (..., C) fp32; delta: same shape (any floating dtype; bf16 for the kernel) or undefined
// (then h = x); weight, bias: (C) fp32. Returns (h, y): h fp32 (..., C), y bf16 (..., C).
// kAuto takes the kernel when the inputs suit it (CUDA, the dtypes above, C within
// kernels::kMaxLayerNormCols); kKernel and kScalarKernel insist (an error otherwise); kAten
// never takes it.
// Gradients flow to x, delta (in its dtype), weight and bias; no double backward. Without a
// delta, h is a view of x that autograd forbids modifying in place (write h + ..., not h += ...).
// Under at::globalContext().deterministicAlgorithms() kAuto takes the ATen path (the kernel's
// weight/bias gradient sums use atomics).
std::pair<torch::Tensor, torch::Tensor> AddLayerNorm(const torch::Tensor& x,
                                                     const torch::Tensor& delta,
                                                     const torch::Tensor& weight,
                                                     const torch::Tensor& bias, double eps,
                                                     NormPath path = NormPath::kAuto);

// Note [add + norm fusion in the stack]
// With the fusion on, a TransformerStack of LayerNorm blocks under bf16 autocast (x fp32, the
// residual stream) carries each branch's output to the next LayerNorm instead of adding it at
// once, so every residual add is fused into the LayerNorm that reads its sum:
//   (h, n1) = AddLayerNorm(h, mlp_out of the block before (none in the first), ln1)
//   (h, n2) = AddLayerNorm(h, attn(n1), ln2);  mlp_out = mlp(n2)
// and the stack returns h + the last mlp_out. The values are the unfused block's: the same
// fp32 sums, LayerNorm in fp32 and its output rounded to bf16 where the unfused path's next
// matmul casts it (tests/models/fused_norm_test.cc compares the two under CPU autocast). Without
// autocast (fp32 training, the CPU default) or with RMSNorm the stack runs unfused.
// Process-wide and read at every forward (a CUDA graph keeps the choice of its capture). Off in
// the library (a caller opts in); `mosaic train|bench` turn it on unless --no-fused-norm: the
// kernels passed their gpu tests on the H200 (tests/models/fused_norm_gpu_test.cc) and cut
// clip-b16-bs128's graph-temporal step from 63.8 to 57.6 ms there (commit d691adf).
void SetFuseAddNorm(bool on);
bool FuseAddNorm();

// Whether kAuto (and so the fused stack) runs the kernels' vectorized forms. Off until their gpu
// tests (tests/models/fused_norm_gpu_test.cc, both forms against the ATen path) have passed on
// a GPU: written 2026-12-07, when no device was lent. `mosaic train|bench|profile
// --vectorized-norm` (MOSAIC_VECTORIZED_NORM=1) turn it on for the A/B.
void SetVectorizedAddNorm(bool on);
bool VectorizedAddNorm();
// The vectorized forms in use: the fusion on and the setting above (what a profile and the bench
// record as "vectorized-norm"), as BiasGradKernelOn is for models/linear.h.
bool VectorizedAddNormOn();

// The process-wide fused kernels now on, as a profile records them (core/profile.h
// Profile::fused_kernels): "none", or "+"-joined names out of "add-norm", "vectorized-norm" (the
// add-norm kernels in their vectorized forms), "linear-grad", "bias-grad" (models/linear.h) and
// "patch-gemm" (models/vit.h), in that order.
std::string FusedKernelsInUse();

// Sets the fusion for a scope and restores the previous setting (tests).
using FuseAddNormScope = SwitchScope<FuseAddNorm, SetFuseAddNorm>;

}  // namespace mosaic::models
