// AddLayerNorm; see fused_norm.h.
#include "models/fused_norm.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <atomic>

#include "kernels/layer_norm.h"
#include "models/linear.h"
#include "models/vit.h"

namespace mosaic::models {
namespace {

std::atomic<bool> fuse_add_norm{false};
std::atomic<bool> vectorized_add_norm{false};

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool KernelSuits(const Tensor& x, const Tensor& delta, const Tensor& weight, const Tensor& bias) {
  auto fp32_cuda = [](const Tensor& t) {
    return t.is_cuda() && t.scalar_type() == torch::kFloat32;
  };
  const bool one_device = weight.device() == x.device() && bias.device() == x.device() &&
                          (!delta.defined() || delta.device() == x.device());
  return one_device && fp32_cuda(x) && fp32_cuda(weight) && fp32_cuda(bias) &&
         (!delta.defined() || (delta.is_cuda() && delta.scalar_type() == torch::kBFloat16)) &&
         x.size(-1) <= kernels::kMaxLayerNormCols;
}

void CheckCuda(cudaError_t e, const char* what) {
  TORCH_CHECK(e == cudaSuccess, what, ": ", cudaGetErrorString(e));
}

struct AddLayerNormFn : public torch::autograd::Function<AddLayerNormFn> {
  // `delta_or_x` is delta, or x again when there is none (`has_delta` false): autograd
  // functions take no undefined tensors.
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& delta_or_x,
                               const Tensor& weight, const Tensor& bias, double eps, bool kernel,
                               bool vectorized, bool has_delta) {
    const Tensor delta = has_delta ? delta_or_x : Tensor();
    const int64_t C = x.size(-1);
    const int64_t rows = x.numel() / C;
    Tensor h, y, mean, rstd;  // h, y: (..., C); mean, rstd: (rows)
    if (kernel) {
      const c10::cuda::CUDAGuard guard(x.device());
      const Tensor xc = x.contiguous();
      const Tensor dc = delta.defined() ? delta.contiguous() : Tensor();
      const Tensor wc = weight.contiguous(), bc = bias.contiguous();
      h = dc.defined() ? torch::empty_like(xc) : xc;
      y = torch::empty(xc.sizes(), xc.options().dtype(torch::kBFloat16));
      mean = torch::empty({rows}, xc.options());
      rstd = torch::empty({rows}, xc.options());
      CheckCuda(kernels::AddLayerNormForward(
                    xc.data_ptr<float>(),
                    dc.defined() ? reinterpret_cast<const __nv_bfloat16*>(dc.data_ptr()) : nullptr,
                    wc.data_ptr<float>(), bc.data_ptr<float>(),
                    dc.defined() ? h.data_ptr<float>() : nullptr,
                    reinterpret_cast<__nv_bfloat16*>(y.data_ptr()), mean.data_ptr<float>(),
                    rstd.data_ptr<float>(), rows, static_cast<int>(C), static_cast<float>(eps),
                    at::cuda::getCurrentCUDAStream(), vectorized),
                "AddLayerNormForward");
    } else {
      h = delta.defined() ? x + delta.to(torch::kFloat32) : x;
      auto [out, m, r] = at::native_layer_norm(h, {C}, weight, bias, eps);
      y = out.to(torch::kBFloat16);
      mean = m.reshape({rows});
      rstd = r.reshape({rows});
    }
    // An output nobody differentiates stays undefined in backward (no zero-filled rows x C).
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({h, mean, rstd, weight});
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["vectorized"] = vectorized;
    ctx->saved_data["has_delta"] = delta.defined();
    ctx->saved_data["delta_dtype"] =
        static_cast<int64_t>(delta.defined() ? delta.scalar_type() : torch::kFloat32);
    return {h, y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The kernel's gradients have no history and the ATen path treats mean and rstd as
    // constants: a second derivative would be silently wrong.
    TORCH_CHECK(!torch::GradMode::is_enabled(), "AddLayerNorm: double backward is not supported");
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &h = saved[0], &mean = saved[1], &rstd = saved[2], &weight = saved[3];
    const bool kernel = ctx->saved_data["kernel"].toBool();
    const Tensor& gh = grads[0];  // (..., C) fp32, or undefined
    const Tensor& gy = grads[1];  // (..., C) bf16, or undefined
    const int64_t C = h.size(-1);
    const int64_t rows = h.numel() / C;
    Tensor dh, dw, db;
    if (!gy.defined()) {
      dh = gh;  // may be undefined too: then no gradient flows
    } else if (kernel) {
      const c10::cuda::CUDAGuard guard(h.device());
      const Tensor gyc = gy.to(torch::kBFloat16).contiguous();
      const Tensor ghc = gh.defined() ? gh.contiguous() : Tensor();
      dh = torch::empty_like(h);
      dw = torch::zeros({C}, h.options());
      db = torch::zeros({C}, h.options());
      CheckCuda(
          kernels::AddLayerNormBackward(
              reinterpret_cast<const __nv_bfloat16*>(gyc.data_ptr()),
              ghc.defined() ? ghc.data_ptr<float>() : nullptr, h.data_ptr<float>(),
              mean.data_ptr<float>(), rstd.data_ptr<float>(), weight.contiguous().data_ptr<float>(),
              dh.data_ptr<float>(), dw.data_ptr<float>(), db.data_ptr<float>(), rows,
              static_cast<int>(C), at::cuda::getCurrentCUDAStream(),
              ctx->saved_data["vectorized"].toBool()),
          "AddLayerNormBackward");
    } else {
      // The kernel's formulas (Note [fused add + layer norm]) in ATen ops, on (rows, C).
      const Tensor h2 = h.reshape({rows, C});
      const Tensor g2 = gy.to(torch::kFloat32).reshape({rows, C});
      const Tensor s = rstd.reshape({rows, 1});
      const Tensor xhat = (h2 - mean.reshape({rows, 1})) * s;
      const Tensor g = g2 * weight;
      Tensor dx =
          s * (g - g.mean(-1, /*keepdim=*/true) - xhat * (g * xhat).mean(-1, /*keepdim=*/true));
      dx = dx.reshape(h.sizes());
      dh = gh.defined() ? gh + dx : dx;
      dw = (g2 * xhat).sum(0);
      db = g2.sum(0);
    }
    Tensor ddelta;
    if (dh.defined() && ctx->saved_data["has_delta"].toBool())
      ddelta = dh.to(static_cast<c10::ScalarType>(ctx->saved_data["delta_dtype"].toInt()));
    return {dh, ddelta, dw, db, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

std::pair<Tensor, Tensor> AddLayerNorm(const Tensor& x, const Tensor& delta, const Tensor& weight,
                                       const Tensor& bias, double eps, NormPath path) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, "AddLayerNorm: x needs a last dimension");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "AddLayerNorm: x must be fp32 (the residual)");
  TORCH_CHECK(!delta.defined() || delta.sizes() == x.sizes(),
              "AddLayerNorm: delta must have x's shape");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1) && bias.sizes() == weight.sizes(),
              "AddLayerNorm: weight and bias must be (C) with C = x.size(-1)");
  TORCH_CHECK(weight.scalar_type() == torch::kFloat32 && bias.scalar_type() == torch::kFloat32,
              "AddLayerNorm: weight and bias must be fp32 (master weights)");
  const bool suits = KernelSuits(x, delta, weight, bias);
  const bool forced = path == NormPath::kKernel || path == NormPath::kScalarKernel;
  TORCH_CHECK(!forced || suits,
              "AddLayerNorm: the kernel needs CUDA fp32 x/weight/bias, a bf16 delta and C <= ",
              kernels::kMaxLayerNormCols);
  // The kernel's weight/bias sums use atomics (run-to-run rounding differences): under
  // deterministic algorithms kAuto takes the ATen path.
  const bool kernel = forced || (path == NormPath::kAuto && suits &&
                                 !at::globalContext().deterministicAlgorithms());
  // Without a delta h is x itself; autograd hands it back as a view of x.
  variable_list out = AddLayerNormFn::apply(x, delta.defined() ? delta : x, weight, bias, eps,
                                            kernel,
                                            path == NormPath::kKernel ||
                                                (path == NormPath::kAuto && VectorizedAddNorm()),
                                            delta.defined());
  return {out[0], out[1]};
}

void SetFuseAddNorm(bool on) { fuse_add_norm.store(on); }
bool FuseAddNorm() { return fuse_add_norm.load(); }
void SetVectorizedAddNorm(bool on) { vectorized_add_norm.store(on); }
bool VectorizedAddNorm() { return vectorized_add_norm.load(); }
bool VectorizedAddNormOn() { return FuseAddNorm() && VectorizedAddNorm(); }

std::string FusedKernelsInUse() {
  const std::pair<bool, const char*> kernels[] = {
      {FuseAddNorm(), "add-norm"},
      {VectorizedAddNormOn(), "vectorized-norm"},
      {FuseLinearGrad(), "linear-grad"},
      {BiasGradKernelOn(), "bias-grad"},
      {PatchGemm(), "patch-gemm"},
  };
  std::string names;
  for (const auto& [on, name] : kernels)
    if (on) names += (names.empty() ? "" : "+") + std::string(name);
  return names.empty() ? "none" : names;
}

}  // namespace mosaic::models
