#include "models/blocks.h"

#include <ATen/autocast_mode.h>

#include <cmath>
#include <initializer_list>
#include <tuple>
#include <vector>

#include "models/fused_norm.h"
#include "models/linear.h"

namespace mosaic::models {

namespace {

// Under autocast, ops outside autocast's lists (like _addmm_activation) see the raw dtypes:
// cast activations and weights ourselves so they meet in the autocast dtype.
torch::Tensor AutocastArg(const torch::Tensor& t) {
  const auto device = t.device().type();
  if (!t.defined() || !at::autocast::is_autocast_available(device) ||
      !at::autocast::is_autocast_enabled(device) || !t.is_floating_point())
    return t;
  return at::autocast::cached_cast(at::autocast::get_autocast_dtype(device), t, device);
}

// True when autograd records a graph through an op on these tensors.
bool RecordsGrad(std::initializer_list<torch::Tensor> inputs) {
  if (!torch::GradMode::is_enabled()) return false;
  for (const torch::Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

// gelu_tanh(x W^T + b) with the bias+GELU in the GEMM epilogue on CUDA; on the CPU ATen's
// _addmm_activation uses the exact GELU, so there it is addmm + in-place gelu(tanh).
torch::Tensor FusedAddmmGelu(const torch::Tensor& x2d, const torch::Tensor& w,
                             const torch::Tensor& b) {
  if (x2d.is_cuda()) return at::_addmm_activation(b, x2d, w.t(), 1, 1, /*use_gelu=*/true);
  torch::Tensor z = at::addmm(b, x2d, w.t());
  return at::gelu_(z, "tanh");
}

// Fused forward; the backward recomputes the pre-activation (Note [bias+GELU epilogue]).
class FusedLinearGeluFunction : public torch::autograd::Function<FusedLinearGeluFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x2d,
                               const torch::Tensor& w, const torch::Tensor& b) {
    ctx->save_for_backward({x2d, w, b});
    return FusedAddmmGelu(x2d, w, b);  // (N, out)
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];                                      // (N, in)
    const torch::Tensor& w = saved[1];                                      // (out, in)
    const torch::Tensor& b = saved[2];                                      // (out)
    torch::Tensor z = at::addmm(b, x, w.t());                               // (N, out)
    torch::Tensor gz = at::gelu_backward(grad[0].contiguous(), z, "tanh");  // (N, out)
    return {gz.mm(w), gz.t().mm(x), gz.sum(0)};
  }
};

}  // namespace

torch::Tensor LinearGelu(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, GeluEpilogue epilogue) {
  TORCH_CHECK(bias.defined(), "LinearGelu needs a bias");
  const bool grad = RecordsGrad({x, weight, bias});
  if (epilogue == GeluEpilogue::kUnfused) return at::gelu(at::linear(x, weight, bias), "tanh");
  if (epilogue == GeluEpilogue::kAuto && grad) return at::gelu(Linear(x, weight, bias), "tanh");
  torch::Tensor xc = AutocastArg(x), wc = AutocastArg(weight), bc = AutocastArg(bias);
  auto out_shape = x.sizes().vec();
  out_shape.back() = weight.size(0);
  torch::Tensor x2d = xc.reshape({-1, xc.size(-1)});  // (N, in)
  torch::Tensor y =
      grad ? FusedLinearGeluFunction::apply(x2d, wc, bc) : FusedAddmmGelu(x2d, wc, bc);
  return y.view(out_shape);  // (..., out)
}

std::pair<torch::Tensor, torch::Tensor> RotaryCosSin(int64_t seq_len, int64_t head_dim,
                                                     double theta, torch::Device device) {
  TORCH_CHECK(head_dim % 2 == 0, "rotary head_dim must be even, got ", head_dim);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  // inv_freq_i = theta^(-2i / head_dim), i < head_dim / 2
  torch::Tensor inv_freq =
      torch::pow(theta, -torch::arange(0, head_dim, 2, f32.dtype(torch::kDouble)) / head_dim)
          .to(torch::kFloat);                       // (hd/2)
  torch::Tensor pos = torch::arange(seq_len, f32);  // (T)
  torch::Tensor angles =
      pos.unsqueeze(1) * inv_freq.unsqueeze(0);          // (T, hd/2), fp32 under autocast
  torch::Tensor emb = torch::cat({angles, angles}, -1);  // (T, hd)
  return {emb.cos(), emb.sin()};
}

torch::Tensor ApplyRotary(const torch::Tensor& x, const torch::Tensor& cos,
                          const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const std::vector<torch::Tensor> halves = x.split(half, -1);  // one cat in backward
  const torch::Tensor &x1 = halves[0], &x2 = halves[1];
  torch::Tensor rotated = torch::cat({-x2, x1}, -1);  // rotate_half: (B, H, T, hd)
  torch::Tensor c = cos.to(x.scalar_type()), s = sin.to(x.scalar_type());
  return x * c + rotated * s;
}

torch::Tensor SinusoidalPositions(int64_t seq_len, int64_t width, torch::Device device) {
  TORCH_CHECK(width % 2 == 0, "sinusoidal width must be even, got ", width);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  const int64_t half = width / 2;
  // Whisper: timescales 10000^(-i / (half - 1)), [sin | cos].
  torch::Tensor inv = torch::exp(-std::log(10000.0) / std::max<int64_t>(half - 1, 1) *
                                 torch::arange(half, f32));                            // (half)
  torch::Tensor angles = torch::arange(seq_len, f32).unsqueeze(1) * inv.unsqueeze(0);  // (T, half)
  return torch::cat({angles.sin(), angles.cos()}, 1);                                  // (T, width)
}

SelfAttentionImpl::SelfAttentionImpl(const AttentionOptions& o) : options_(o) {
  if (options_.kv_heads() == 0) options_.kv_heads(options_.heads());
  TORCH_CHECK(o.width() % o.heads() == 0, "heads ", o.heads(), " must divide width ", o.width());
  TORCH_CHECK(o.heads() % options_.kv_heads() == 0, "kv_heads ", options_.kv_heads(),
              " must divide heads ", o.heads());
  const int64_t head_dim = o.width() / o.heads();
  const int64_t qkv_out = (o.heads() + 2 * options_.kv_heads()) * head_dim;
  qkv = register_module(
      "qkv", torch::nn::Linear(torch::nn::LinearOptions(o.width(), qkv_out).bias(o.bias())));
  out = register_module(
      "out", torch::nn::Linear(torch::nn::LinearOptions(o.width(), o.width()).bias(o.bias())));
}

// Note [one split for q, k, v]
// q, k and v are views of the one qkv GEMM's output. Taken with three narrows, backward turns
// each into a slice_backward (a zero-filled (B, T, (H + 2 KV) hd) tensor with the slice copied
// in) and sums the three: two full-size adds. Taken with one split, backward is one cat. The
// values are the same (adding zeros is exact); the memory traffic of the q/k/v gradient falls
// from about 11 passes over the qkv output to 2. At ViT-B/16 bs128 that is ~1 GB per layer
// (the bf16 copies and adds in bench/results/diagnosis/h200-2026-12-04-clip-b16-bs128.bench.json).
torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& key_mask) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  const int64_t H = options_.heads(), KV = options_.kv_heads(), hd = C / H;
  torch::Tensor qkv_out;  // (B, T, (H + 2 KV) hd)
  if (options_.key_bias() || !qkv->bias.defined()) {
    qkv_out = Linear(x, qkv->weight, qkv->bias);
  } else {
    const torch::Tensor& b = qkv->bias;
    qkv_out =
        Linear(x, qkv->weight,
                      torch::cat({b.narrow(0, 0, H * hd), torch::zeros({KV * hd}, b.options()),
                                  b.narrow(0, (H + KV) * hd, KV * hd)}));
  }
  // One split, not three narrows (Note [one split for q, k, v]).
  const std::vector<torch::Tensor> parts = qkv_out.split_with_sizes({H * hd, KV * hd, KV * hd}, -1);
  torch::Tensor q = parts[0].view({B, T, H, hd}).transpose(1, 2);   // (B, H, T, hd)
  torch::Tensor k = parts[1].view({B, T, KV, hd}).transpose(1, 2);  // (B, KV, T, hd)
  torch::Tensor v = parts[2].view({B, T, KV, hd}).transpose(1, 2);  // (B, KV, T, hd)
  if (options_.rope_theta() > 0) {
    if (!rope_cos_.defined() || rope_cos_.device() != x.device() || rope_cos_.size(0) < T) {
      std::tie(rope_cos_, rope_sin_) = RotaryCosSin(T, hd, options_.rope_theta(), x.device());
    }
    torch::Tensor cos = rope_cos_.narrow(0, 0, T), sin = rope_sin_.narrow(0, 0, T);  // (T, hd)
    q = ApplyRotary(q, cos, sin);
    k = ApplyRotary(k, cos, sin);
  }
  std::optional<torch::Tensor> mask;
  bool is_causal = options_.causal();
  if (key_mask.defined()) {
    torch::Tensor m = key_mask.to(torch::kBool).view({B, 1, 1, T});  // (B, 1, 1, T): keys
    if (is_causal) {
      m = m & torch::ones({T, T}, m.options()).tril();  // (B, 1, T, T)
      is_causal = false;
    }
    mask = m;
  }
  torch::Tensor y = at::scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal, std::nullopt,
                                                     /*enable_gqa=*/KV != H);  // (B, H, T, hd)
  return Linear(y.transpose(1, 2).reshape({B, T, C}), out->weight, out->bias);  // (B, T, C)
}

torch::Tensor Activate(const torch::Tensor& x, Activation activation) {
  switch (activation) {
    case Activation::kGeluTanh:
      return at::gelu(x, "tanh");
    case Activation::kQuickGelu:
      return x * torch::sigmoid(1.702 * x);  // as HF's QuickGELUActivation computes it
    case Activation::kGelu:
      return at::gelu(x);
  }
  TORCH_INTERNAL_ASSERT(false, "unknown activation");
}

GeluMlpImpl::GeluMlpImpl(int64_t width, int64_t hidden, GeluEpilogue e, Activation a)
    : epilogue(e), activation(a) {
  fc1 = register_module("fc1", torch::nn::Linear(width, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, width));
}

torch::Tensor GeluMlpImpl::forward(const torch::Tensor& x) {
  if (activation != Activation::kGeluTanh) {
    torch::Tensor a = Activate(Linear(x, fc1->weight, fc1->bias), activation);  // (..., hidden)
    return Linear(a, fc2->weight, fc2->bias);                                   // (..., C)
  }
  // Without a recorded graph LinearGelu's forward-only fused op is cheaper (no z kept).
  const bool grad = RecordsGrad({x, fc1->weight, fc1->bias, fc2->weight, fc2->bias});
  if (epilogue == GeluEpilogue::kAuto && grad &&
      GeluMlpFuses(x, fc1->weight, fc1->bias, fc2->weight, fc2->bias))
    return FusedGeluMlp(x, fc1->weight, fc1->bias, fc2->weight, fc2->bias);  // (..., C)
  torch::Tensor h = LinearGelu(x, fc1->weight, fc1->bias, epilogue);  // (..., hidden)
  return Linear(h, fc2->weight, fc2->bias);                           // (..., C)
}

SwiGluMlpImpl::SwiGluMlpImpl(int64_t width, int64_t hidden) {
  gate_up = register_module(
      "gate_up", torch::nn::Linear(torch::nn::LinearOptions(width, 2 * hidden).bias(false)));
  down = register_module("down",
                         torch::nn::Linear(torch::nn::LinearOptions(hidden, width).bias(false)));
}

torch::Tensor SwiGluMlpImpl::forward(const torch::Tensor& x) {
  torch::Tensor gu = Linear(x, gate_up->weight, {});  // (..., 2 hidden)
  auto halves = gu.chunk(2, -1);                    // gate, up: (..., hidden)
  return Linear(torch::silu(halves[0]) * halves[1], down->weight, {});  // (..., C)
}

RmsNormImpl::RmsNormImpl(int64_t width, double e) : eps(e) {
  weight = register_parameter("weight", torch::ones({width}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  torch::Tensor xf = AtLeastFp32(x);  // (..., C)
  torch::Tensor y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (y * weight).to(x.scalar_type());
}

TransformerBlockImpl::TransformerBlockImpl(const BlockOptions& o) : options_(o) {
  const int64_t mlp_dim = o.mlp_dim() > 0 ? o.mlp_dim() : 4 * o.width();
  if (o.norm() == NormKind::kLayerNorm) {
    const double eps = o.norm_eps() > 0 ? o.norm_eps() : 1e-5;
    ln1 = register_module("ln1",
                          torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.width()}).eps(eps)));
    ln2 = register_module("ln2",
                          torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.width()}).eps(eps)));
  } else {
    const double eps = o.norm_eps() > 0 ? o.norm_eps() : 1e-6;
    rms1 = register_module("rms1", RmsNorm(o.width(), eps));
    rms2 = register_module("rms2", RmsNorm(o.width(), eps));
  }
  attn = register_module("attn", SelfAttention(AttentionOptions(o.width(), o.heads())
                                                   .kv_heads(o.kv_heads())
                                                   .causal(o.causal())
                                                   .bias(o.bias())
                                                   .key_bias(o.key_bias())
                                                   .rope_theta(o.rope_theta())));
  if (o.mlp() == MlpKind::kGelu) {
    gelu_mlp = register_module("mlp", GeluMlp(o.width(), mlp_dim, o.epilogue(), o.activation()));
  } else {
    swiglu_mlp = register_module("mlp", SwiGluMlp(o.width(), mlp_dim));
  }
}

torch::Tensor TransformerBlockImpl::Norm1(const torch::Tensor& x) {
  return ln1 ? ln1(x) : rms1(x);
}
torch::Tensor TransformerBlockImpl::Norm2(const torch::Tensor& x) {
  return ln2 ? ln2(x) : rms2(x);
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& key_mask) {
  torch::Tensor h = x + attn(Norm1(x), key_mask);  // (B, T, C)
  torch::Tensor n = Norm2(h);
  return h + (gelu_mlp ? gelu_mlp(n) : swiglu_mlp(n));  // (B, T, C)
}

std::pair<torch::Tensor, torch::Tensor> TransformerBlockImpl::ForwardAddNorm(
    const torch::Tensor& h, const torch::Tensor& pending, const torch::Tensor& key_mask) {
  TORCH_CHECK(ln1, "ForwardAddNorm needs LayerNorm blocks");
  const double eps = ln1->options.eps();
  auto [h1, n1] = AddLayerNorm(h, pending, ln1->weight, ln1->bias, eps);  // (B, T, C) fp32, bf16
  auto [h2, n2] = AddLayerNorm(h1, attn(n1, key_mask), ln2->weight, ln2->bias, eps);
  return {h2, gelu_mlp ? gelu_mlp(n2) : swiglu_mlp(n2)};
}

namespace {

// Note [add + norm fusion in the stack]: the fusion's precondition. The branch outputs must
// come out of autocast in bf16 and the residual stream be fp32, as AddLayerNorm's kernel takes.
bool FusesAddNorm(torch::nn::ModuleList& layers, const torch::Tensor& x) {
  if (!FuseAddNorm() || layers->is_empty() || x.scalar_type() != torch::kFloat32) return false;
  if (!layers[0]->as<TransformerBlockImpl>()->layer_norm()) return false;
  const auto device = x.device().type();
  return at::autocast::is_autocast_available(device) &&
         at::autocast::is_autocast_enabled(device) &&
         at::autocast::get_autocast_dtype(device) == torch::kBFloat16;
}

}  // namespace

TransformerStackImpl::TransformerStackImpl(const BlockOptions& options, int64_t depth) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < depth; ++i)
    layers->push_back(TransformerBlock(options));
}

torch::Tensor TransformerStackImpl::forward(const torch::Tensor& x, const torch::Tensor& key_mask) {
  torch::Tensor h = x;
  if (FusesAddNorm(layers, x)) {
    torch::Tensor pending;  // the last block's MLP output, not yet added to h
    for (const auto& block : *layers)
      std::tie(h, pending) = block->as<TransformerBlockImpl>()->ForwardAddNorm(h, pending, key_mask);
    return h + pending;  // (B, T, C) fp32
  }
  for (const auto& block : *layers)
    h = block->as<TransformerBlockImpl>()->forward(h, key_mask);
  return h;
}

void InitTransformerWeights(torch::nn::Module& module, double std) {
  torch::NoGradGuard no_grad;
  // include_self=false: constructors call this before the module is held by a shared_ptr.
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      linear->weight.normal_(0.0, std);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* embedding = m->as<torch::nn::EmbeddingImpl>()) {
      embedding->weight.normal_(0.0, std);
    } else if (auto* ln = m->as<torch::nn::LayerNormImpl>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    }
  }
}

}  // namespace mosaic::models
