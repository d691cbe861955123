// The CUDA driver functions the engine uses (green contexts), looked up at
// run time through the runtime's cudaGetDriverEntryPointByVersion instead of linking libcuda:
// the engine's binaries must load on machines with the CUDA toolkit but no driver (CI), where
// the CPU path runs.
//
//   const DriverApi* api = GetDriverApi();   // nullptr: no driver or too old
//   if (api) api->cuGreenCtxCreate(&g, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM);
#pragma once

#include <cuda.h>

#include <string>

namespace mosaic::engine {

struct DriverApi {
  decltype(&::cuDeviceGet) cuDeviceGet = nullptr;
  decltype(&::cuGetErrorName) cuGetErrorName = nullptr;
  decltype(&::cuDeviceGetDevResource) cuDeviceGetDevResource = nullptr;
  decltype(&::cuDevSmResourceSplitByCount) cuDevSmResourceSplitByCount = nullptr;
  decltype(&::cuDevResourceGenerateDesc) cuDevResourceGenerateDesc = nullptr;
  decltype(&::cuGreenCtxCreate) cuGreenCtxCreate = nullptr;
  decltype(&::cuGreenCtxDestroy) cuGreenCtxDestroy = nullptr;
  decltype(&::cuGreenCtxStreamCreate) cuGreenCtxStreamCreate = nullptr;
  decltype(&::cuStreamDestroy) cuStreamDestroy = nullptr;
  decltype(&::cuStreamGetCtx) cuStreamGetCtx = nullptr;
};

// The driver's functions, or nullptr (with the reason in *why) when there is no driver or one
// of them is missing. Looked up once.
const DriverApi* GetDriverApi(std::string* why = nullptr);

// "CUDA_ERROR_INVALID_VALUE" (or the number when the driver cannot say).
std::string DriverErrorName(CUresult e);

}  // namespace mosaic::engine
