// The fused-kernel switches that `mosaic train` and `mosaic bench` share (commands.h).
#include "cli/commands.h"
#include "models/fused_norm.h"
#include "models/linear.h"
#include "models/vit.h"

namespace mosaic::cli {

void AddFusedKernelFlags(CLI::App* sub, FusedKernelFlags* f) {
  struct Switch {
    const char* names;  // "--x,!--no-x"
    bool* value;
    const char* help;
    const char* env;
  };
  const Switch switches[] = {
      {"--fused-norm,!--no-fused-norm", &f->norm,
       "On CUDA under bf16, in every mode: fuse every residual add into the LayerNorm after it "
       "(one kernel forward, one backward); on by default, --no-fused-norm runs them apart (the "
       "A/B)",
       "MOSAIC_FUSED_NORM"},
      {"--vectorized-norm,!--no-vectorized-norm", &f->vectorized_norm,
       "With --fused-norm: the add + LayerNorm kernels in their vectorized forms (rows in "
       "registers, 16-byte loads); off by default (not yet run on a GPU)",
       "MOSAIC_VECTORIZED_NORM"},
      {"--fused-linear-grad,!--no-fused-linear-grad", &f->linear_grad,
       "On CUDA under bf16, in every mode: take every block projection's weight and bias "
       "gradients in one cuBLASLt GEMM (bias sum in the epilogue, fp32 out); off by default "
       "(measured slower on an H200: docs/benchmarks.md)",
       "MOSAIC_FUSED_LINEAR_GRAD"},
      {"--fused-bias-grad,!--no-fused-bias-grad", &f->bias_grad,
       "On CUDA under bf16, in every mode: take every block projection's bias gradient from one "
       "column-sum kernel (fp32 out, deterministic), the GEMMs staying ATen's; off by default "
       "(not yet run on a GPU)",
       "MOSAIC_FUSED_BIAS_GRAD"},
      {"--patch-gemm,!--no-patch-gemm", &f->patch_gemm,
       "In every mode: run each ViT's patch embedding as one permuting copy and a GEMM instead "
       "of cuDNN's conv (same parameters, same result); off by default (not yet run on a GPU)",
       "MOSAIC_PATCH_GEMM"},
  };
  for (const Switch& s : switches)
    sub->add_flag(s.names, *s.value, s.help)->envname(s.env);
}

void ApplyFusedKernelFlags(const FusedKernelFlags& f) {
  models::SetFuseAddNorm(f.norm);
  models::SetVectorizedAddNorm(f.vectorized_norm);
  models::SetFuseLinearGrad(f.linear_grad);
  models::SetFuseBiasGrad(f.bias_grad);
  models::SetPatchGemm(f.patch_gemm);
}

}  // namespace mosaic::cli
