// A linear layer whose backward, under CUDA bf16 autocast, takes the weight and bias gradients
// in one cuBLASLt GEMM (the bias sum in its epilogue, both written in fp32): Note [weight and
// bias gradients in one GEMM] in kernels/linear_grad.cc. Everywhere else it is torch::linear.
//
//   torch::Tensor y = Linear(x, fc->weight, fc->bias);  // (..., in) -> (..., out)
//
// The blocks (models/blocks.h) route their projections through it. The values are
// torch::linear's under autocast (the same bf16 GEMM forward, the same input gradient); the
// weight and bias gradients are the fp32 accumulators' instead of their bf16 roundings cast up.
#pragma once

#include <torch/torch.h>

namespace mosaic::models {

// x (..., in) floating; weight (out, in); bias (out) or undefined. The fused backward is taken
// when SetFuseLinearGrad(true), CUDA autocast to bf16 is on, weight and bias are fp32 on x's
// device, in and out are multiples of 8 (cuBLASLt's 16-byte rows) and there are at least two
// rows (x.numel() / in); a size cuBLASLt has no algorithm for falls back to ATen's kernels
// inside the backward.
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& weight,
                     const torch::Tensor& bias);

// Process-wide, read at every forward (a CUDA graph keeps the choice of its capture). Off in
// the library and, until its gpu tests (tests/models/linear_gpu_test.cc) have run and the
// benchmark has measured it, in `mosaic train|bench` too (--fused-linear-grad turns it on).
void SetFuseLinearGrad(bool on);
bool FuseLinearGrad();

// Note [bias gradient kernel]: with SetFuseBiasGrad(true) and the setting above off (with it on,
// this one is ignored: the cuBLASLt path takes its own bias gradients), under
// CUDA bf16 autocast Linear keeps autocast's bf16 GEMMs for the output and the input and weight
// gradients (ATen's kernels, as torch::linear) and takes only the bias gradient from
// kernels::ColumnSumBf16 (one full-width read of dy, fp32 out, deterministic) instead of ATen's
// bf16 reduction and the cast after it. Off in the library and in `mosaic train|bench` until
// its gpu tests (tests/models/linear_gpu_test.cc, BiasGradGpu*) have run and the benchmark has
// measured it (--fused-bias-grad turns it on): written 2026-12-07, when no GPU was lent.
void SetFuseBiasGrad(bool on);
bool FuseBiasGrad();
// The rule above in one place: the switch on and SetFuseLinearGrad off (what a profile and the
// bench record as "bias-grad").
bool BiasGradKernelOn();
// True when Linear(x, weight, bias) would take the bias-gradient kernel now: BiasGradKernelOn,
// CUDA bf16 autocast, fp32 weight and bias on x's device, a bias, at least one row.
bool BiasGradFuses(const torch::Tensor& x, const torch::Tensor& weight,
                   const torch::Tensor& bias);

// fc2(gelu_tanh(fc1(x))): x (..., C) -> (..., C); w1 (hidden, C), b1 (hidden), w2 (C, hidden),
// b2 (C). fc1's bias and GELU run in its GEMM's epilogue (the pre-activation kept for backward),
// and the backward applies GELU's derivative and sums fc1's bias gradient in fc2's
// input-gradient GEMM; the weight gradients as in Linear. Only where GeluMlpFuses (an error
// otherwise); GeluMlp (blocks.h) calls it then.
torch::Tensor FusedGeluMlp(const torch::Tensor& x, const torch::Tensor& w1,
                           const torch::Tensor& b1, const torch::Tensor& w2,
                           const torch::Tensor& b2);
// LinearGradFuses for both layers, biases defined, w2 (C, hidden) matching w1 (hidden, C).
bool GeluMlpFuses(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                  const torch::Tensor& w2, const torch::Tensor& b2);

// True when Linear(x, weight, bias) would take the fused backward now.
bool LinearGradFuses(const torch::Tensor& x, const torch::Tensor& weight,
                     const torch::Tensor& bias);

}  // namespace mosaic::models
