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
#include "kernels/linear_grad.h"

#include <map>
#include <memory>
#include <mutex>
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

// (rows, in, out, bias, alignments of x, dy, dweight, bias, workspace bytes) -> algorithm.
using AlgoKey = std::tuple<int64_t, int64_t, int64_t, bool, uint32_t, uint32_t, uint32_t,
                           uint32_t, size_t>;

struct AlgoCache {
  std::mutex mu;
  std::map<AlgoKey, cublasLtMatmulAlgo_t> algos;
};

AlgoCache& Cache() {
  static AlgoCache* cache = new AlgoCache();  // never destroyed: used until the process exits
  return *cache;
}

}  // namespace

cublasStatus_t LinearWeightBiasGrad(cublasLtHandle_t handle, const __nv_bfloat16* dy,
                                    const __nv_bfloat16* x, float* dweight, float* dbias,
                                    int64_t rows, int64_t in, int64_t out, void* workspace,
                                    size_t workspace_bytes, cudaStream_t stream) {
  if (rows <= 0 || in <= 0 || out <= 0) return CUBLAS_STATUS_INVALID_VALUE;
  cublasLtMatmulDesc_t raw_desc = nullptr;
  MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  MatmulDesc desc(raw_desc);
  const cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_T;
  MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  if (dbias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BGRADB;
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dbias, sizeof(dbias)));
    const cudaDataType_t bias_type = CUDA_R_32F;
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.get(), CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  MatrixLayout a, b, d;
  MOSAIC_LT_RETURN_IF_ERROR(MakeLayout(CUDA_R_16BF, in, rows, in, &a));    // x
  MOSAIC_LT_RETURN_IF_ERROR(MakeLayout(CUDA_R_16BF, out, rows, out, &b));  // dy, op T
  MOSAIC_LT_RETURN_IF_ERROR(MakeLayout(CUDA_R_32F, in, out, in, &d));      // dweight

  const AlgoKey key{rows,         in,           out,
                    dbias != nullptr,
                    Alignment(x), Alignment(dy), Alignment(dweight),
                    dbias != nullptr ? Alignment(dbias) : 0u,
                    workspace_bytes};
  cublasLtMatmulAlgo_t algo{};
  bool cached = false;
  {
    AlgoCache& cache = Cache();
    std::lock_guard<std::mutex> lock(cache.mu);
    if (auto it = cache.algos.find(key); it != cache.algos.end()) {
      algo = it->second;
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
    const uint32_t align_a = std::get<4>(key), align_b = std::get<5>(key),
                   align_d = std::get<6>(key);
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
        pref.get(), CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    MOSAIC_LT_RETURN_IF_ERROR(cublasLtMatmulAlgoGetHeuristic(handle, desc.get(), a.get(), b.get(),
                                                             d.get(), d.get(), pref.get(), 1,
                                                             &result, &found));
    if (found == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    algo = result.algo;
    AlgoCache& cache = Cache();
    std::lock_guard<std::mutex> lock(cache.mu);
    cache.algos.emplace(key, algo);
  }
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(handle, desc.get(), &alpha, x, a.get(), dy, b.get(), &beta, dweight,
                        d.get(), dweight, d.get(), &algo, workspace, workspace_bytes, stream);
}

}  // namespace mosaic::kernels
