// Shared transformer building blocks for every architecture in src/models: self-attention on
// at::scaled_dot_product_attention (flash/efficient kernels on CUDA, the math path on the CPU),
// a GELU MLP with a fused bias+GELU GEMM epilogue where it pays (Note [bias+GELU epilogue]),
// a SwiGLU MLP, RMSNorm, rotary position embeddings and the pre-norm block that combines them.
// Not torch::nn::TransformerEncoder, which gpu-facts.md measured to be slower.
//
//   TransformerBlock block(BlockOptions(/*width=*/64, /*heads=*/4).causal(true));
//   torch::Tensor y = block(x);  // x, y: (B, T, 64)
//
// Every forward takes and returns plain tensors so that a module can be captured on its own
// (forward and backward as separate CUDA graphs) by the engine.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>

#include "core/model_spec.h"

namespace mosaic::models {

// GELU everywhere in Mosaic is the tanh approximation: it is what the cuBLASLt GELU epilogue
// computes, so the fused and the unfused paths compute the same function on every device.
//
// Note [bias+GELU epilogue]
// at::_addmm_activation(b, x, w^T, use_gelu=true) fuses bias and GELU into the GEMM (cuBLASLt
// epilogue on CUDA), but it has no autograd formula and does not return the pre-activation
// that GELU's backward needs. So:
//  - kAuto: the fused op when no gradient is recorded (eval, no_grad); with gradients, at::addmm
//    (bias in the GEMM epilogue) followed by gelu(tanh), which keeps the pre-activation.
//  - kFused: the fused op, with a custom backward that recomputes the pre-activation (one extra
//    GEMM in backward: cheaper in memory, dearer in FLOPs; for activation-memory-bound runs).
//  - kUnfused: plain addmm + gelu(tanh), the reference.
// On the CPU, ATen's _addmm_activation applies the exact (erf) GELU, so kFused and kAuto use
// addmm + gelu(tanh) there and the CPU and GPU compute the same function.
enum class GeluEpilogue { kAuto, kFused, kUnfused };

// y = gelu_tanh(x W^T + b). x (..., in), weight (out, in), bias (out) -> (..., out).
torch::Tensor LinearGelu(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, GeluEpilogue epilogue = GeluEpilogue::kAuto);

// Rotary position embedding (rotate-half / GPT-NeoX layout).
// RotaryCosSin: cos and sin, each (T, head_dim), for positions 0..T-1, fp32.
std::pair<torch::Tensor, torch::Tensor> RotaryCosSin(int64_t seq_len, int64_t head_dim,
                                                     double theta, torch::Device device);
// x (B, H, T, head_dim), cos/sin (T, head_dim) -> (B, H, T, head_dim) in x's dtype.
torch::Tensor ApplyRotary(const torch::Tensor& x, const torch::Tensor& cos,
                          const torch::Tensor& sin);

// Fixed sinusoidal positions (Transformer/Whisper): (T, width), fp32.
torch::Tensor SinusoidalPositions(int64_t seq_len, int64_t width, torch::Device device);

struct AttentionOptions {
  AttentionOptions(int64_t width, int64_t heads) : width_(width), heads_(heads) {}
  TORCH_ARG(int64_t, width);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(int64_t, kv_heads) = 0;  // grouped-query attention; 0: same as heads
  TORCH_ARG(bool, causal) = false;
  TORCH_ARG(bool, bias) = true;  // biases on the q/k/v and output projections
  // false (with bias): the k rows of qkv.bias are held at zero: the forward uses zeros in their
  // place, so they get an exactly-zero gradient and AdamW never moves them (Whisper's k_proj has
  // no bias; the parameter keeps its fused (H + 2 KV) hd shape).
  TORCH_ARG(bool, key_bias) = true;
  TORCH_ARG(double, rope_theta) = 0;  // > 0: rotary positions on q and k
};

// Multi-head self-attention with one fused q/k/v projection.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SelfAttentionImpl(const AttentionOptions& options);
  // x (B, T, C); key_mask (B, T) bool, true at real tokens, optional -> (B, T, C).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_mask = {});

  const AttentionOptions& options() const { return options_; }
  torch::nn::Linear qkv{nullptr};  // C -> (heads + 2 * kv_heads) * head_dim
  torch::nn::Linear out{nullptr};  // C -> C

 private:
  AttentionOptions options_;
  // Rotary tables for the longest sequence seen on their device (not state: not saved, not
  // moved by to(); rebuilt when the device changes or a longer sequence comes).
  torch::Tensor rope_cos_, rope_sin_;
};
TORCH_MODULE(SelfAttention);

// The MLP activation alone (Activation in core/model_spec.h): gelu(tanh), quick_gelu or gelu(erf).
torch::Tensor Activate(const torch::Tensor& x, Activation activation);

// fc2(act(fc1(x))): (..., C) -> (..., C). act is gelu_tanh (with the epilogue choice) unless
// `activation` says otherwise (pretrained checkpoints: quick_gelu, exact gelu; never fused).
class GeluMlpImpl : public torch::nn::Module {
 public:
  GeluMlpImpl(int64_t width, int64_t hidden, GeluEpilogue epilogue = GeluEpilogue::kAuto,
              Activation activation = Activation::kGeluTanh);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  GeluEpilogue epilogue;
  Activation activation;
};
TORCH_MODULE(GeluMlp);

// down(silu(gate(x)) * up(x)), no biases (LLaMA); gate and up are one fused GEMM.
class SwiGluMlpImpl : public torch::nn::Module {
 public:
  SwiGluMlpImpl(int64_t width, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);  // (..., C) -> (..., C)
  torch::nn::Linear gate_up{nullptr};             // C -> 2 * hidden: [gate | up]
  torch::nn::Linear down{nullptr};                // hidden -> C
};
TORCH_MODULE(SwiGluMlp);

// x / rms(x) * weight, computed in fp32, returned in x's dtype.
class RmsNormImpl : public torch::nn::Module {
 public:
  explicit RmsNormImpl(int64_t width, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);  // (..., C) -> (..., C)
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RmsNorm);

enum class NormKind { kLayerNorm, kRmsNorm };
enum class MlpKind { kGelu, kSwiGlu };

struct BlockOptions {
  BlockOptions(int64_t width, int64_t heads) : width_(width), heads_(heads) {}
  TORCH_ARG(int64_t, width);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(int64_t, kv_heads) = 0;  // 0: heads
  TORCH_ARG(int64_t, mlp_dim) = 0;   // 0: 4 * width
  TORCH_ARG(bool, causal) = false;
  TORCH_ARG(double, rope_theta) = 0;
  TORCH_ARG(NormKind, norm) = NormKind::kLayerNorm;
  TORCH_ARG(MlpKind, mlp) = MlpKind::kGelu;
  TORCH_ARG(bool, bias) = true;      // linear biases (false for the LLaMA-style decoder)
  TORCH_ARG(bool, key_bias) = true;  // AttentionOptions::key_bias
  TORCH_ARG(GeluEpilogue, epilogue) = GeluEpilogue::kAuto;
  TORCH_ARG(Activation, activation) = Activation::kGeluTanh;  // the GELU MLP's activation
  TORCH_ARG(double, norm_eps) = 0;  // 0: 1e-5 for LayerNorm, 1e-6 for RMSNorm
};

// Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(x)).
class TransformerBlockImpl : public torch::nn::Module {
 public:
  explicit TransformerBlockImpl(const BlockOptions& options);
  // x (B, T, C), key_mask (B, T) bool optional -> (B, T, C).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_mask = {});
  // The block with its residual adds fused into its LayerNorms (Note [add + norm fusion in the
  // stack], models/fused_norm.h; LayerNorm blocks only). The block's input is h + pending
  // (pending: the block before's MLP output, not yet added; undefined for the first block).
  // Returns (h', mlp_out): the block's output is h' + mlp_out. h, h' (B, T, C) fp32.
  std::pair<torch::Tensor, torch::Tensor> ForwardAddNorm(const torch::Tensor& h,
                                                         const torch::Tensor& pending,
                                                         const torch::Tensor& key_mask = {});
  bool layer_norm() const { return static_cast<bool>(ln1); }

  // Exactly one of each pair is set, by options.norm() / options.mlp().
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  RmsNorm rms1{nullptr}, rms2{nullptr};
  SelfAttention attn{nullptr};
  GeluMlp gelu_mlp{nullptr};
  SwiGluMlp swiglu_mlp{nullptr};

 private:
  torch::Tensor Norm1(const torch::Tensor& x);
  torch::Tensor Norm2(const torch::Tensor& x);
  BlockOptions options_;
};
TORCH_MODULE(TransformerBlock);

// `depth` blocks of the same options, applied in order; with their residual adds fused into
// the LayerNorms when FuseAddNorm() and bf16 autocast allow (Note [add + norm fusion in the
// stack]).
class TransformerStackImpl : public torch::nn::Module {
 public:
  TransformerStackImpl(const BlockOptions& options, int64_t depth);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_mask = {});
  torch::nn::ModuleList layers{nullptr};  // TransformerBlock, parameter names "<stack>.layers.<i>."
};
TORCH_MODULE(TransformerStack);

// x in fp32, or in fp64 when it already is (so double-precision gradient checks stay exact).
inline torch::Tensor AtLeastFp32(const torch::Tensor& x) {
  return x.scalar_type() == torch::kDouble ? x : x.to(torch::kFloat);
}

// Initializes Linear/Embedding weights N(0, std) and biases 0 (LayerNorm: 1 and 0) for every
// submodule of `module`; the architectures call it once at construction.
void InitTransformerWeights(torch::nn::Module& module, double std = 0.02);

}  // namespace mosaic::models
