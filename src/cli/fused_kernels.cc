// The fused-kernel switches that `mosaic train` and `mosaic bench` share (commands.h).
#include "cli/commands.h"
#include "models/fused_norm.h"
#include "models/linear.h"
#include "models/vit.h"

namespace mosaic::cli {

void AddFusedKernelFlags(CLI::App* sub, FusedKernelFlags* f) {
  sub->add_flag("--fused-norm,!--no-fused-norm", f->norm,
                "On CUDA under bf16, in every mode: fuse every residual add into the LayerNorm "
                "after it (one kernel forward, one backward); on by default, --no-fused-norm "
                "runs them apart (the A/B)")
      ->envname("MOSAIC_FUSED_NORM");
  sub->add_flag("--vectorized-norm,!--no-vectorized-norm", f->vectorized_norm,
                "With --fused-norm: the add + LayerNorm kernels in their vectorized forms (rows "
                "in registers, 16-byte loads); off by default (not yet run on a GPU)")
      ->envname("MOSAIC_VECTORIZED_NORM");
  sub->add_flag("--fused-linear-grad,!--no-fused-linear-grad", f->linear_grad,
                "On CUDA under bf16, in every mode: take every block projection's weight and "
                "bias gradients in one cuBLASLt GEMM (bias sum in the epilogue, fp32 out); off "
                "by default (measured slower on an H200: docs/benchmarks.md)")
      ->envname("MOSAIC_FUSED_LINEAR_GRAD");
  sub->add_flag("--fused-bias-grad,!--no-fused-bias-grad", f->bias_grad,
                "On CUDA under bf16, in every mode: take every block projection's bias gradient "
                "from one column-sum kernel (fp32 out, deterministic), the GEMMs staying ATen's; "
                "off by default (not yet run on a GPU)")
      ->envname("MOSAIC_FUSED_BIAS_GRAD");
  sub->add_flag("--patch-gemm,!--no-patch-gemm", f->patch_gemm,
                "In every mode: run each ViT's patch embedding as one permuting copy and a GEMM "
                "instead of cuDNN's conv (same parameters, same result); off by default (not yet "
                "run on a GPU)")
      ->envname("MOSAIC_PATCH_GEMM");
}

void ApplyFusedKernelFlags(const FusedKernelFlags& f) {
  models::SetFuseAddNorm(f.norm);
  models::SetVectorizedAddNorm(f.vectorized_norm);
  models::SetFuseLinearGrad(f.linear_grad);
  models::SetFuseBiasGrad(f.bias_grad);
  models::SetPatchGemm(f.patch_gemm);
}

}  // namespace mosaic::cli
