// LinearWeightBiasGrad; see linear_grad.h.
//
// Note [weight and bias gradients in one GEMM]
// Under bf16 autocast ATen's backward of a linear layer takes three passes where one does: the
// weight gradient dy^T x as a bf16 GEMM, the bias gradient as a separate column sum over dy
// (a reduce_kernel reading all of dy again: at CLIP ViT-B/16 bs128, 96 of them, ~3.4 ms a step
// on the H200, bench/results/diagnosis), then a cast of both from bf16 to the fp32 master
// weights' gradients. cuBLASLt's BGRADB epilogue sums dy's columns while the GEMM streams dy
// through anyway, and with an fp32 output the weight gradient comes straight from the fp32
// accumulators: one kernel, no bf16 rounding of the gradient, no cast.
//
// cuBLASLt is column-major. Row-major dy (rows, out) is column-major (out x rows), x (rows, in)
// is (in x rows) and the row-major (out, in) weight gradient is column-major (in x out). So
//   D (in x out) = A (in x rows) * op(B), A = x as stored, op(B) = (out x rows)^T = dy^T,
// m = in, n = out, k = rows; BGRADB reduces B over k: one sum per column of D, per output
// feature, which is db.
//
// The GELU MLP goes further (Apex's fused_dense_gelu_dense, TransformerEngine's layout): fc1's
// forward writes gelu(z) and keeps z from one epilogue (GELU_AUX_BIAS; no separate GELU pass),
// and fc2's input-gradient GEMM applies gelu'(z) and sums fc1's bias gradient in its epilogue
// (DGELU_BGRAD; no gelu_backward pass, no reduce_kernel). fc1's weight gradient is then
// LinearWeightBiasGrad without a bias.
#include "kernels/linear_grad.h"

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>

namespace mosaic::kernels {
namespace {

template <typename T, cublasStatus_t (*Destroy)(T)>
struct LtDeleter {
  void operator()(T p) const {
    if (p) Destroy(p);
  }
};
using MatmulDesc = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>,
                                   LtDeleter<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>>;
using MatrixLayout =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>,
                    LtDeleter<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>>;
using Preference =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                    LtDeleter<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>>;

#define MOSAIC_LT_RETURN_IF_ERROR(expr)                 \
  do {                                                  \
    const cublasStatus_t mosaic_lt_status_ = (expr);    \
    if (mosaic_lt_status_ != CUBLAS_STATUS_SUCCESS) {   \
      return mosaic_lt_status_;                         \
    }                                                   \
  } while (0)

cublasStatus_t MakeLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                          MatrixLayout* out) {
  cublasLtMatrixLayout_t raw = nullptr;
  MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&raw, type, static_cast<uint64_t>(rows),
                                                       static_cast<uint64_t>(cols), ld));
  out->reset(raw);
  return CUBLAS_STATUS_SUCCESS;
}

// The largest power of two up to 256 that divides the address (cuBLASLt's alignment classes).
uint32_t Alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// One cuBLASLt matmul D = op(A) op(B) (column-major, alpha 1, beta 0) with an epilogue.
struct Gemm {
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;  // stored (m x k) for op N, (k x m) for op T
  cudaDataType_t a_type = CUDA_R_16BF;
  int64_t lda = 0;
  const void* b = nullptr;  // stored (k x n) for op N, (n x k) for op T
  cudaDataType_t b_type = CUDA_R_16BF;
  int64_t ldb = 0;
  void* d = nullptr;  // (m x n)
  cudaDataType_t d_type = CUDA_R_32F;
  int64_t ldd = 0;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  void* bias = nullptr;  // the bias (input) or the bias gradient (output) of the epilogue
  cudaDataType_t bias_type = CUDA_R_32F;
  void* aux = nullptr;  // GELU's pre-activation: written by GELU_AUX, read by DGELU
  cudaDataType_t aux_type = CUDA_R_16BF;
  int64_t aux_ld = 0;
};

// The algorithm of one Gemm's sizes, types, epilogue and alignments.
using AlgoKey = std::tuple<std::array<int64_t, 13>, std::array<uint32_t, 4>, size_t>;

struct AlgoCache {
  std::mutex mu;
  std::map<AlgoKey, std::optional<cublasLtMatmulAlgo_t>> algos;  // nullopt: none exists
};

AlgoCache& Cache() {
  static AlgoCache* cache = new AlgoCache();  // never destroyed: used until the process exits
  return *cache;
}

template <typename T>
cublasStatus_t SetDesc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                       const T& value) {
  return cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value));
}

cublasStatus_t RunGemm(cublasLtHandle_t handle, const Gemm& g, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream) {
  if (g.m <= 0 || g.n <= 0 || g.k <= 0) return CUBLAS_STATUS_INVALID_VALUE;
  cublasLtMatmulDesc_t raw_desc = nullptr;
  MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  MatmulDesc desc(raw_desc);
  MOSAIC_LT_RETURN_IF_ERROR(SetDesc(desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, g.trans_a));
  MOSAIC_LT_RETURN_IF_ERROR(SetDesc(desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, g.trans_b));
  if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    MOSAIC_LT_RETURN_IF_ERROR(SetDesc(desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE, g.epilogue));
  }
  if (g.bias != nullptr) {
    MOSAIC_LT_RETURN_IF_ERROR(SetDesc(desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias));
    MOSAIC_LT_RETURN_IF_ERROR(
        SetDesc(desc.get(), CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, g.bias_type));
  }
  if (g.aux != nullptr) {
    MOSAIC_LT_RETURN_IF_ERROR(
        SetDesc(desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux));
    MOSAIC_LT_RETURN_IF_ERROR(SetDesc(desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, g.aux_ld));
    MOSAIC_LT_RETURN_IF_ERROR(
        SetDesc(desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, g.aux_type));
  }
  const bool ta = g.trans_a == CUBLAS_OP_T, tb = g.trans_b == CUBLAS_OP_T;
  MatrixLayout a, b, d;
  MOSAIC_LT_RETURN_IF_ERROR(MakeLayout(g.a_type, ta ? g.k : g.m, ta ? g.m : g.k, g.lda, &a));
  MOSAIC_LT_RETURN_IF_ERROR(MakeLayout(g.b_type, tb ? g.n : g.k, tb ? g.k : g.n, g.ldb, &b));
  MOSAIC_LT_RETURN_IF_ERROR(MakeLayout(g.d_type, g.m, g.n, g.ldd, &d));

  const std::array<uint32_t, 4> align{Alignment(g.a), Alignment(g.b), Alignment(g.d),
                                       g.aux != nullptr ? Alignment(g.aux) : 0u};
  const AlgoKey key{{g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, g.epilogue,
                     g.bias != nullptr ? Alignment(g.bias) : 0, g.aux_ld,
                     static_cast<int64_t>(g.a_type) * 1000 + g.b_type,
                     static_cast<int64_t>(g.d_type) * 1000 + g.bias_type},
                    align,
                    workspace_bytes};
  cublasLtMatmulAlgo_t algo{};
  bool cached = false;
  {
    AlgoCache& cache = Cache();
    std::lock_guard<std::mutex> lock(cache.mu);
    if (auto it = cache.algos.find(key); it != cache.algos.end()) {
      if (!it->second) return CUBLAS_STATUS_NOT_SUPPORTED;  // asked before: no algorithm
      algo = *it->second;
      cached = true;
    }
  }
  if (!cached) {
    cublasLtMatmulPreference_t raw_pref = nullptr;
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&raw_pref));
    Preference pref(raw_pref);
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
        sizeof(workspace_bytes)));
    const cublasLtMatmulPreferenceAttributes_t which[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const uint32_t value[4] = {align[0], align[1], align[2], align[2]};
    for (int i = 0; i < 4; ++i) {
      MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(pref.get(), which[i],
                                                                     &value[i], sizeof(value[i])));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(
        handle, desc.get(), a.get(), b.get(), d.get(), d.get(), pref.get(), 1, &result, &found);
    if (h != CUBLAS_STATUS_SUCCESS && h != CUBLAS_STATUS_NOT_SUPPORTED) return h;
    AlgoCache& cache = Cache();
    std::lock_guard<std::mutex> lock(cache.mu);
    if (h == CUBLAS_STATUS_NOT_SUPPORTED || found == 0) {
      cache.algos.emplace(key, std::nullopt);  // remembered: the heuristic is not asked again
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    algo = result.algo;
    cache.algos.emplace(key, algo);
  }
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(handle, desc.get(), &alpha, g.a, a.get(), g.b, b.get(), &beta, g.d,
                        d.get(), g.d, d.get(), &algo, workspace, workspace_bytes, stream);
}

}  // namespace

cublasStatus_t LinearWeightBiasGrad(cublasLtHandle_t handle, const __nv_bfloat16* dy,
                                    const __nv_bfloat16* x, float* dweight, float* dbias,
                                    int64_t rows, int64_t in, int64_t out, void* workspace,
                                    size_t workspace_bytes, cudaStream_t stream) {
  Gemm g;
  g.trans_a = CUBLAS_OP_N;
  g.trans_b = CUBLAS_OP_T;
  g.m = in;
  g.n = out;
  g.k = rows;
  g.a = x;  // (in x rows)
  g.lda = in;
  g.b = dy;  // (out x rows), op T
  g.ldb = out;
  g.d = dweight;  // (in x out): row-major (out, in)
  g.d_type = CUDA_R_32F;
  g.ldd = in;
  if (dbias != nullptr) {
    g.epilogue = CUBLASLT_EPILOGUE_BGRADB;
    g.bias = dbias;
    g.bias_type = CUDA_R_32F;
  }
  return RunGemm(handle, g, workspace, workspace_bytes, stream);
}

// Row-major z, h (rows, hidden) are column-major (hidden x rows); W (hidden, in) row-major is
// column-major (in x hidden), so W^T x^T: m = hidden, n = rows, k = in, A = W op T, B = x op N.
// The epilogue's bias is per row of D: per hidden unit.
cublasStatus_t LinearGeluForward(cublasLtHandle_t handle, const __nv_bfloat16* x,
                                 const __nv_bfloat16* weight, const __nv_bfloat16* bias,
                                 __nv_bfloat16* h, __nv_bfloat16* z, int64_t rows, int64_t in,
                                 int64_t hidden, void* workspace, size_t workspace_bytes,
                                 cudaStream_t stream) {
  Gemm g;
  g.trans_a = CUBLAS_OP_T;
  g.trans_b = CUBLAS_OP_N;
  g.m = hidden;
  g.n = rows;
  g.k = in;
  g.a = weight;  // (in x hidden), op T
  g.lda = in;
  g.b = x;  // (in x rows)
  g.ldb = in;
  g.d = h;  // (hidden x rows)
  g.d_type = CUDA_R_16BF;
  g.ldd = hidden;
  g.epilogue = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  g.bias = const_cast<__nv_bfloat16*>(bias);  // read, not written, by this epilogue
  g.bias_type = CUDA_R_16BF;
  g.aux = z;
  g.aux_type = CUDA_R_16BF;
  g.aux_ld = hidden;
  return RunGemm(handle, g, workspace, workspace_bytes, stream);
}

// dh = dy W2 (rows, hidden): column-major (hidden x rows) = W2 (hidden x C as stored) op N times
// dy (C x rows as stored) op N; m = hidden, n = rows, k = C. DGELU_BGRAD multiplies by
// gelu'(z) and sums the result over rows (the columns of D) into the bias gradient.
cublasStatus_t GeluBackwardGemm(cublasLtHandle_t handle, const __nv_bfloat16* dy,
                                const __nv_bfloat16* weight2, const __nv_bfloat16* z,
                                __nv_bfloat16* dz, __nv_bfloat16* dbias, int64_t rows,
                                int64_t hidden, int64_t width, void* workspace,
                                size_t workspace_bytes, cudaStream_t stream) {
  Gemm g;
  g.trans_a = CUBLAS_OP_N;
  g.trans_b = CUBLAS_OP_N;
  g.m = hidden;
  g.n = rows;
  g.k = width;
  g.a = weight2;  // W2 (C, hidden) row-major: (hidden x C)
  g.lda = hidden;
  g.b = dy;  // (C x rows)
  g.ldb = width;
  g.d = dz;  // (hidden x rows)
  g.d_type = CUDA_R_16BF;
  g.ldd = hidden;
  g.epilogue = CUBLASLT_EPILOGUE_DGELU_BGRAD;
  g.bias = dbias;
  g.bias_type = CUDA_R_16BF;  // D's type
  g.aux = const_cast<__nv_bfloat16*>(z);  // read, not written, by this epilogue
  g.aux_type = CUDA_R_16BF;
  g.aux_ld = hidden;
  return RunGemm(handle, g, workspace, workspace_bytes, stream);
}

}  // namespace mosaic::kernels
