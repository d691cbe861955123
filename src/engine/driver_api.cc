// Run-time lookup of the driver entry points (driver_api.h).
#include "engine/driver_api.h"

#include <cuda_runtime_api.h>

namespace mosaic::engine {
namespace {

// The ABI of the headers we compiled against (cuGreenCtxStreamCreate, for one, is not there at
// 12.4 even though green contexts are); the driver must be at least this new.
constexpr unsigned kApiVersion = CUDA_VERSION;

template <typename Fn>
bool Load(const char* name, Fn* fn, std::string* why) {
  cudaDriverEntryPointQueryResult result = cudaDriverEntryPointSymbolNotFound;
  void* p = nullptr;
  const cudaError_t e =
      cudaGetDriverEntryPointByVersion(name, &p, kApiVersion, cudaEnableDefault, &result);
  if (e != cudaSuccess || result != cudaDriverEntryPointSuccess || p == nullptr) {
    cudaGetLastError();
    if (why->empty()) {
      *why = e != cudaSuccess ? std::string("no CUDA driver (") + cudaGetErrorString(e) + ")"
                              : std::string("the CUDA driver lacks ") + name;
    }
    return false;
  }
  *fn = reinterpret_cast<Fn>(p);
  return true;
}

struct Loaded {
  DriverApi api;
  std::string why;
  bool ok = false;
};

Loaded LoadAll() {
  Loaded l;
  DriverApi& a = l.api;
  std::string& w = l.why;
  l.ok = Load("cuDeviceGet", &a.cuDeviceGet, &w) & Load("cuGetErrorName", &a.cuGetErrorName, &w) &
         Load("cuDeviceGetDevResource", &a.cuDeviceGetDevResource, &w) &
         Load("cuDevSmResourceSplitByCount", &a.cuDevSmResourceSplitByCount, &w) &
         Load("cuDevResourceGenerateDesc", &a.cuDevResourceGenerateDesc, &w) &
         Load("cuGreenCtxCreate", &a.cuGreenCtxCreate, &w) &
         Load("cuGreenCtxDestroy", &a.cuGreenCtxDestroy, &w) &
         Load("cuGreenCtxStreamCreate", &a.cuGreenCtxStreamCreate, &w) &
         Load("cuStreamDestroy", &a.cuStreamDestroy, &w) &
         Load("cuStreamGetCtx", &a.cuStreamGetCtx, &w);
  return l;
}

const Loaded& Get() {
  static const Loaded loaded = LoadAll();
  return loaded;
}

}  // namespace

const DriverApi* GetDriverApi(std::string* why) {
  const Loaded& l = Get();
  if (!l.ok && why) *why = l.why;
  return l.ok ? &l.api : nullptr;
}

std::string DriverErrorName(CUresult e) {
  const Loaded& l = Get();
  const char* name = nullptr;
  if (l.api.cuGetErrorName && l.api.cuGetErrorName(e, &name) == CUDA_SUCCESS && name) return name;
  return "CUresult " + std::to_string(static_cast<int>(e));
}

}  // namespace mosaic::engine
