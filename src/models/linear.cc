// Linear; see linear.h.
#include "models/linear.h"

#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <atomic>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/bias_grad.h"
#include "kernels/linear_grad.h"

namespace mosaic::models {
namespace {

std::atomic<bool> fuse_linear_grad{false};
std::atomic<bool> fuse_bias_grad{false};

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const __nv_bfloat16* Bf16(const Tensor& t) {
  return reinterpret_cast<const __nv_bfloat16*>(t.data_ptr());
}
__nv_bfloat16* MutableBf16(Tensor& t) { return reinterpret_cast<__nv_bfloat16*>(t.data_ptr()); }

// x (..., in) as the (N, in) bf16 rows the GEMMs take.
Tensor Bf16Rows(const Tensor& x) {
  return x.to(torch::kBFloat16).reshape({-1, x.size(-1)}).contiguous();
}

// `sizes` with the last dimension replaced by `last`: (..., in) -> (..., last).
std::vector<int64_t> WithLast(c10::IntArrayRef sizes, int64_t last) {
  std::vector<int64_t> s = sizes.vec();
  s.back() = last;
  return s;
}

void CheckLt(cublasStatus_t s, const char* what, int64_t rows, int64_t in, int64_t out) {
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, what, " (", rows, " x ", in, " -> ", out,
              "): cuBLASLt status ", static_cast<int>(s));
}

// dW (out, in) = g^T x and, with a bias, db (out) = column sums of g, both fp32, from one
// cuBLASLt GEMM; ATen's kernels where cuBLASLt has no algorithm for the sizes.
// g (N, out), x (N, in): bf16, contiguous.
std::pair<Tensor, Tensor> WeightBiasGrad(const Tensor& g, const Tensor& x, bool has_bias) {
  const int64_t rows = x.size(0), in = x.size(1), out = g.size(1);
  const c10::cuda::CUDAGuard guard(g.device());
  Tensor dw = torch::empty({out, in}, g.options().dtype(torch::kFloat32));
  Tensor db = has_bias ? torch::empty({out}, g.options().dtype(torch::kFloat32)) : Tensor();
  const cublasStatus_t s = kernels::LinearWeightBiasGrad(
      at::cuda::getCurrentCUDABlasLtHandle(), Bf16(g), Bf16(x), dw.data_ptr<float>(),
      has_bias ? db.data_ptr<float>() : nullptr, rows, in, out,
      at::cuda::getCUDABlasLtWorkspace(), at::cuda::getCUDABlasLtWorkspaceSize(),
      at::cuda::getCurrentCUDAStream());
  if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
    // No cuBLASLt algorithm for these sizes: ATen's kernels, as torch::linear's backward.
    dw = g.t().mm(x).to(torch::kFloat32);
    if (has_bias) db = g.sum(0).to(torch::kFloat32);
  } else {
    CheckLt(s, "LinearWeightBiasGrad", rows, in, out);
  }
  return {dw, db};
}

// db (out) fp32 = column sums of g (N, out) bf16 contiguous: Note [bias gradient kernel].
Tensor ColumnSum(const Tensor& g) {
  const int64_t rows = g.size(0), out = g.size(1);
  const c10::cuda::CUDAGuard guard(g.device());
  const int slices = kernels::ColumnSumSlices(
      rows, static_cast<int>(out), at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  Tensor db = torch::empty({out}, g.options().dtype(torch::kFloat32));
  Tensor workspace = torch::empty({slices, out}, g.options().dtype(torch::kFloat32));
  const cudaError_t e = kernels::ColumnSumBf16(Bf16(g), db.data_ptr<float>(),
                                               workspace.data_ptr<float>(), rows,
                                               static_cast<int>(out), slices,
                                               at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(e == cudaSuccess, "ColumnSumBf16 (", rows, " x ", out,
              "): ", cudaGetErrorString(e));
  return db;
}

// How LinearBf16Fn's backward takes the weight and bias gradients.
enum class LinearGrads : int64_t {
  kCublasLt,   // both from one cuBLASLt GEMM in fp32: Note [weight and bias gradients in one
               // GEMM]
  kColumnSum,  // dW from ATen's bf16 GEMM, db from ColumnSum: Note [bias gradient kernel]
};

// y = x W^T + b in bf16 (autocast's GEMM); backward: dx = dy W (bf16, as ATen), and dW, db as
// `grads` says. `bias_or_weight` is the bias, or the weight again when there is none
// (`has_bias` false): autograd functions take no undefined tensors.
struct LinearBf16Fn : public torch::autograd::Function<LinearBf16Fn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& bias_or_weight, bool has_bias, int64_t grads) {
    const int64_t out = weight.size(0);
    const Tensor x2d = Bf16Rows(x);                 // (N, in)
    const Tensor wb = weight.to(torch::kBFloat16);  // (out, in)
    const Tensor y2d = has_bias ? at::addmm(bias_or_weight.to(torch::kBFloat16), x2d, wb.t())
                                : at::mm(x2d, wb.t());  // (N, out)
    ctx->save_for_backward({x2d, wb});
    ctx->saved_data["has_bias"] = has_bias;
    ctx->saved_data["grads"] = grads;
    // _unsafe_view: a view made inside a custom Function (and views of it, like the q/k/v
    // split) could never be modified in place; this output owns its storage.
    return at::_unsafe_view(y2d, WithLast(x.sizes(), out));  // (..., out)
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto how = static_cast<LinearGrads>(ctx->saved_data["grads"].toInt());
    // Both modes compute their gradients without history: a second derivative would be
    // silently wrong.
    TORCH_CHECK(!torch::GradMode::is_enabled(), "Linear: double backward is not supported");
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& x2d = saved[0];  // (N, in) bf16
    const Tensor& wb = saved[1];   // (out, in) bf16
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const int64_t rows = x2d.size(0), in = x2d.size(1), out = wb.size(0);
    const Tensor g = grads[0].to(torch::kBFloat16).reshape({rows, out}).contiguous();  // (N, out)
    Tensor dx;
    if (ctx->needs_input_grad(0)) {
      // (..., in) bf16; autograd casts it to x's dtype
      dx = g.mm(wb).view(WithLast(grads[0].sizes(), in));
    }
    Tensor dw, db;
    if (how == LinearGrads::kColumnSum) {
      if (ctx->needs_input_grad(1)) dw = g.t().mm(x2d);  // (out, in) bf16; autograd casts it
      if (has_bias && ctx->needs_input_grad(2)) db = ColumnSum(g);  // (out) fp32
    } else if (ctx->needs_input_grad(1) || (has_bias && ctx->needs_input_grad(2))) {
      std::tie(dw, db) = WeightBiasGrad(g, x2d, has_bias);
    }
    return {dx, dw, has_bias ? db : Tensor(), Tensor(), Tensor()};
  }
};

// fc2(gelu_tanh(fc1(x))) in bf16 with fc1's bias + GELU in its GEMM's epilogue (z kept), and
// in backward fc2's input-gradient GEMM applying gelu'(z) and summing fc1's bias gradient.
struct GeluMlpFn : public torch::autograd::Function<GeluMlpFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w1,
                        const Tensor& b1, const Tensor& w2, const Tensor& b2) {
    const int64_t in = x.size(-1), hidden = w1.size(0), width = w2.size(0);
    const Tensor x2d = Bf16Rows(x);  // (N, in)
    const int64_t rows = x2d.size(0);
    const Tensor w1b = w1.to(torch::kBFloat16), b1b = b1.to(torch::kBFloat16);  // (hidden, in)
    const Tensor w2b = w2.to(torch::kBFloat16), b2b = b2.to(torch::kBFloat16);  // (C, hidden)
    const c10::cuda::CUDAGuard guard(x2d.device());
    Tensor z = torch::empty({rows, hidden}, x2d.options());  // (N, hidden) pre-activation
    Tensor h = torch::empty({rows, hidden}, x2d.options());  // (N, hidden) gelu(z)
    const cublasStatus_t s = kernels::LinearGeluForward(
        at::cuda::getCurrentCUDABlasLtHandle(), Bf16(x2d), Bf16(w1b), Bf16(b1b), MutableBf16(h),
        MutableBf16(z), rows, in, hidden, at::cuda::getCUDABlasLtWorkspace(),
        at::cuda::getCUDABlasLtWorkspaceSize(), at::cuda::getCurrentCUDAStream());
    if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
      z = at::addmm(b1b, x2d, w1b.t());
      h = at::gelu(z, "tanh");
    } else {
      CheckLt(s, "LinearGeluForward", rows, in, hidden);
    }
    const Tensor y2d = at::addmm(b2b, h, w2b.t());  // (N, C)
    ctx->save_for_backward({x2d, w1b, z, h, w2b});
    return at::_unsafe_view(y2d, WithLast(x.sizes(), width));  // (..., C), as in LinearBf16Fn
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "FusedGeluMlp: double backward is not supported");  // as LinearBf16Fn
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x2d = saved[0], &w1b = saved[1], &z = saved[2], &h = saved[3], &w2b = saved[4];
    const int64_t rows = x2d.size(0), in = x2d.size(1), hidden = w1b.size(0);
    const int64_t width = w2b.size(0);
    const Tensor g = grads[0].to(torch::kBFloat16).reshape({rows, width}).contiguous();  // (N, C)
    auto [dw2, db2] = WeightBiasGrad(g, h, /*has_bias=*/true);
    const c10::cuda::CUDAGuard guard(g.device());
    Tensor dz = torch::empty({rows, hidden}, g.options());  // (N, hidden) bf16
    // The bias gradient of DGELU_BGRAD takes D's type (cublasLt.h: "the same type as the
    // output elements"): bf16 here, cast to the fp32 master bias after.
    Tensor db1 = torch::empty({hidden}, g.options());
    const cublasStatus_t s = kernels::GeluBackwardGemm(
        at::cuda::getCurrentCUDABlasLtHandle(), Bf16(g), Bf16(w2b), Bf16(z), MutableBf16(dz),
        MutableBf16(db1), rows, hidden, width, at::cuda::getCUDABlasLtWorkspace(),
        at::cuda::getCUDABlasLtWorkspaceSize(), at::cuda::getCurrentCUDAStream());
    if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
      dz = at::gelu_backward(g.mm(w2b), z, "tanh");
      db1 = dz.sum(0).to(torch::kFloat32);
    } else {
      CheckLt(s, "GeluBackwardGemm", rows, width, hidden);
      db1 = db1.to(torch::kFloat32);
    }
    Tensor dw1 = WeightBiasGrad(dz, x2d, /*has_bias=*/false).first;
    Tensor dx;
    if (ctx->needs_input_grad(0)) {
      // (..., in) bf16; autograd casts it to x's dtype
      dx = dz.mm(w1b).view(WithLast(grads[0].sizes(), in));
    }
    return {dx, dw1, db1, dw2, db2};
  }
};

}  // namespace

void SetFuseLinearGrad(bool on) { fuse_linear_grad.store(on); }
bool FuseLinearGrad() { return fuse_linear_grad.load(); }
void SetFuseBiasGrad(bool on) { fuse_bias_grad.store(on); }
bool FuseBiasGrad() { return fuse_bias_grad.load(); }

namespace {

// CUDA x under bf16 autocast, a 2-D fp32 weight (out, x.size(-1)) and an fp32 bias (if any) on
// x's device: what both kernel paths of Linear need.
bool Bf16AutocastLinear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (!x.is_cuda() || !x.is_floating_point() || x.dim() < 1) return false;
  if (!at::autocast::is_autocast_enabled(at::kCUDA) ||
      at::autocast::get_autocast_dtype(at::kCUDA) != at::kBFloat16)
    return false;
  auto fp32_here = [&](const Tensor& t) {
    return t.scalar_type() == torch::kFloat32 && t.device() == x.device();
  };
  return weight.dim() == 2 && fp32_here(weight) && (!bias.defined() || fp32_here(bias)) &&
         weight.size(1) == x.size(-1);
}

}  // namespace

bool BiasGradKernelOn() { return FuseBiasGrad() && !FuseLinearGrad(); }

bool BiasGradFuses(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return BiasGradKernelOn() && bias.defined() && Bf16AutocastLinear(x, weight, bias) &&
         x.numel() > 0;
}

bool LinearGradFuses(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (!FuseLinearGrad() || !Bf16AutocastLinear(x, weight, bias)) return false;
  if (weight.size(0) % 8 != 0 || weight.size(1) % 8 != 0) return false;
  // At least two rows: no empty GEMM, and cuBLASLt has summed bias gradients over k = 1 wrongly
  // (OneFlow routes that case around BGRADB); one row is cheap in ATen anyway.
  return x.size(-1) > 0 && x.numel() / x.size(-1) >= 2;
}

bool GeluMlpFuses(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                  const Tensor& b2) {
  if (!b1.defined() || !b2.defined() || !LinearGradFuses(x, w1, b1)) return false;
  if (w2.dim() != 2 || w2.size(1) != w1.size(0) || w2.size(0) % 8 != 0) return false;
  return w2.scalar_type() == torch::kFloat32 && b2.scalar_type() == torch::kFloat32 &&
         w2.device() == x.device() && b2.device() == x.device();
}

Tensor FusedGeluMlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                    const Tensor& b2) {
  TORCH_CHECK(GeluMlpFuses(x, w1, b1, w2, b2),
              "FusedGeluMlp: needs CUDA bf16 autocast, fp32 weights and biases, widths that "
              "are multiples of 8 and the setting on (GeluMlpFuses)");
  return GeluMlpFn::apply(x, w1, b1, w2, b2);
}

Tensor Linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (BiasGradFuses(x, weight, bias)) {
    return LinearBf16Fn::apply(x, weight, bias, true,
                               static_cast<int64_t>(LinearGrads::kColumnSum));
  }
  if (!LinearGradFuses(x, weight, bias)) return torch::linear(x, weight, bias);
  return LinearBf16Fn::apply(x, weight, bias.defined() ? bias : weight, bias.defined(),
                             static_cast<int64_t>(LinearGrads::kCublasLt));
}

}  // namespace mosaic::models
