// Profiler: measures each module's forward and backward (as CUDA graphs, the way the engine runs
// them) under SM quotas from one granule to the whole GPU, and pairs of modules running at the
// same time, and returns a core Profile (core/profile.h) for the perf model and the planner.
//
// Each quota is a green context of one split of the SMs (partition.h); the module's graphs are
// captured on that context's stream (a graph keeps the SMs it was captured on) and replayed
// `warmup` + `repetitions` times; the median goes in. FLOPs and bytes come from core/cost.h.
//
//   ProfileOptions o;  o.quotas = {8, 16, 32, 64, 132};
//   MOSAIC_ASSIGN_OR_RETURN(Profile p, ProfileModel(model, device_spec, torch::kCUDA, o));
//   MOSAIC_RETURN_IF_ERROR(WriteJsonFile("configs/profiles/clip-b16-h100-sxm.json", ToJson(p)));
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/device_spec.h"
#include "core/profile.h"
#include "core/status.h"
#include "models/multimodal_model.h"

namespace mosaic::engine {

struct ProfileOptions {
  std::vector<int> quotas;  // SMs; empty: every granule count 1..groups, then the whole GPU
  int warmup = 3;
  int repetitions = 10;
  bool pairs = true;         // also time pairs of modules side by side
  int micro_batch_size = 0;  // 0: the spec's batch_size / micro_batches
  uint64_t seed = 1;
  std::function<void(const std::string&)> progress;  // one line per measurement (stderr)
};

StatusOr<Profile> ProfileModel(models::MultimodalModel model, const DeviceSpec& device_spec,
                               torch::Device device, const ProfileOptions& options);

// "580.159.04" from the kernel module (or the CUDA driver API version), and torch's version.
std::string DriverVersion();
std::string TorchVersion();

}  // namespace mosaic::engine
