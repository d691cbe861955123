// Linear; see linear.h.
#include "models/linear.h"

#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <atomic>

#include "kernels/linear_grad.h"

namespace mosaic::models {
namespace {

std::atomic<bool> fuse_linear_grad{false};

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = x W^T + b in bf16 (autocast's GEMM); backward: dx = dy W (bf16, as ATen), and dW, db from
// one cuBLASLt call in fp32. `bias_or_weight` is the bias, or the weight again when there is
// none (`has_bias` false): autograd functions take no undefined tensors.
struct LinearBf16Fn : public torch::autograd::Function<LinearBf16Fn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& bias_or_weight, bool has_bias) {
    const int64_t in = x.size(-1), out = weight.size(0);
    const Tensor x2d = x.to(torch::kBFloat16).reshape({-1, in}).contiguous();  // (N, in)
    const Tensor wb = weight.to(torch::kBFloat16);                              // (out, in)
    const Tensor y2d = has_bias ? at::addmm(bias_or_weight.to(torch::kBFloat16), x2d, wb.t())
                                : at::mm(x2d, wb.t());  // (N, out)
    ctx->save_for_backward({x2d, wb});
    ctx->saved_data["has_bias"] = has_bias;
    auto out_shape = x.sizes().vec();
    out_shape.back() = out;
    return y2d.view(out_shape);  // (..., out)
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& x2d = saved[0];  // (N, in) bf16
    const Tensor& wb = saved[1];   // (out, in) bf16
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const int64_t rows = x2d.size(0), in = x2d.size(1), out = wb.size(0);
    const Tensor g = grads[0].to(torch::kBFloat16).reshape({rows, out}).contiguous();  // (N, out)
    Tensor dx;
    if (ctx->needs_input_grad(0)) {
      auto x_shape = grads[0].sizes().vec();
      x_shape.back() = in;
      dx = g.mm(wb).view(x_shape);  // (..., in) bf16; autograd casts it to x's dtype
    }
    Tensor dw, db;
    if (ctx->needs_input_grad(1) || (has_bias && ctx->needs_input_grad(2))) {
      const c10::cuda::CUDAGuard guard(g.device());
      dw = torch::empty({out, in}, g.options().dtype(torch::kFloat32));
      if (has_bias) db = torch::empty({out}, g.options().dtype(torch::kFloat32));
      const cublasStatus_t s = kernels::LinearWeightBiasGrad(
          at::cuda::getCurrentCUDABlasLtHandle(),
          reinterpret_cast<const __nv_bfloat16*>(g.data_ptr()),
          reinterpret_cast<const __nv_bfloat16*>(x2d.data_ptr()), dw.data_ptr<float>(),
          has_bias ? db.data_ptr<float>() : nullptr, rows, in, out,
          at::cuda::getCUDABlasLtWorkspace(), at::cuda::getCUDABlasLtWorkspaceSize(),
          at::cuda::getCurrentCUDAStream());
      if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
        // No cuBLASLt algorithm for these sizes: ATen's kernels, as torch::linear's backward.
        dw = g.t().mm(x2d).to(torch::kFloat32);
        if (has_bias) db = g.sum(0).to(torch::kFloat32);
      } else {
        TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "LinearWeightBiasGrad (", rows, " x ", in,
                    " -> ", out, "): cuBLASLt status ", static_cast<int>(s));
      }
    }
    return {dx, dw, has_bias ? db : Tensor(), Tensor()};
  }
};

}  // namespace

void SetFuseLinearGrad(bool on) { fuse_linear_grad.store(on); }
bool FuseLinearGrad() { return fuse_linear_grad.load(); }

bool LinearGradFuses(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (!FuseLinearGrad() || !x.is_cuda() || !x.is_floating_point() || x.dim() < 1) return false;
  if (!at::autocast::is_autocast_enabled(at::kCUDA) ||
      at::autocast::get_autocast_dtype(at::kCUDA) != at::kBFloat16)
    return false;
  auto fp32_here = [&](const Tensor& t) {
    return t.scalar_type() == torch::kFloat32 && t.device() == x.device();
  };
  if (weight.dim() != 2 || !fp32_here(weight) || (bias.defined() && !fp32_here(bias)))
    return false;
  return weight.size(1) == x.size(-1) && weight.size(0) % 8 == 0 && weight.size(1) % 8 == 0;
}

Tensor Linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (!LinearGradFuses(x, weight, bias)) return torch::linear(x, weight, bias);
  return LinearBf16Fn::apply(x, weight, bias.defined() ? bias : weight, bias.defined());
}

}  // namespace mosaic::models
