// KernelTrace over torch's kineto profiler (see kernel_trace.h).
#include "engine/kernel_trace.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>

namespace mosaic::engine {
namespace {

namespace prof = torch::profiler::impl;

std::set<prof::ActivityType> CudaOnly() { return {prof::ActivityType::CUDA}; }

// Kineto's per-kernel metadata (grid, stream) reaches KinetoEvent::metadataJson only when asked.
prof::ProfilerConfig Config() {
  prof::ExperimentalConfig experimental;
  experimental.expose_kineto_event_metadata = true;
  return prof::ProfilerConfig(prof::ProfilerState::KINETO, /*report_input_shapes=*/false,
                              /*profile_memory=*/false, /*with_stack=*/false,
                              /*with_flops=*/false, /*with_modules=*/false, experimental);
}

// kineto's libkineto::ActivityType::CONCURRENT_KERNEL (kineto/ActivityType.h).
constexpr uint8_t kConcurrentKernel = 5;

}  // namespace

StatusOr<std::unique_ptr<KernelTrace>> KernelTrace::Start() {
  if (prof::profilerEnabled()) return FailedPrecondition("kernel trace: the profiler is already on");
  std::unique_ptr<KernelTrace> t(new KernelTrace());
  try {
    torch::autograd::profiler::prepareProfiler(Config(), CudaOnly());
    torch::autograd::profiler::enableProfiler(Config(), CudaOnly());
  } catch (const std::exception& e) {
    return FailedPrecondition(std::string("kernel trace: the profiler did not start: ") +
                              e.what());
  }
  t->running_ = true;
  return t;
}

KernelTrace::~KernelTrace() {
  if (!running_) return;
  try {
    torch::autograd::profiler::disableProfiler();
  } catch (const std::exception&) {  // nothing to report from a destructor
  }
}

StatusOr<std::vector<KernelRecord>> KernelTrace::Stop() {
  if (!running_) return FailedPrecondition("kernel trace: not running");
  running_ = false;
  std::unique_ptr<torch::autograd::profiler::ProfilerResult> result;
  try {
    result = torch::autograd::profiler::disableProfiler();
  } catch (const std::exception& e) {
    return Internal(std::string("kernel trace: stopping the profiler failed: ") + e.what());
  }
  std::vector<KernelRecord> out;
  if (!result) return out;
  // Epoch nanoseconds (~1.8e18) do not fit a double's 53 bits: take them from the first start.
  uint64_t base = UINT64_MAX;
  for (const auto& e : result->events())
    if (e.deviceType() == c10::DeviceType::CUDA && e.activityType() == kConcurrentKernel)
      base = std::min<uint64_t>(base, e.startNs());
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA || e.activityType() != kConcurrentKernel) continue;
    // kineto's kernel metadata: `"device": 0, "context": 1, "stream": 7, ..., "grid": [x, y, z]`
    const nlohmann::json meta = nlohmann::json::parse("{" + e.metadataJson() + "}", nullptr,
                                                      /*allow_exceptions=*/false);
    const auto bad = [&] {
      return Internal("kernel trace: unexpected metadata of kernel " + e.name() + ": {" +
                      e.metadataJson().substr(0, 300) + "}");
    };
    if (meta.is_discarded() || !meta.contains("grid") || !meta["grid"].is_array()) return bad();
    KernelRecord k;
    k.start_us = static_cast<double>(e.startNs() - base) / 1000;
    k.end_us = static_cast<double>(e.endNs() - base) / 1000;
    k.stream = e.deviceResourceId();
    k.device = e.deviceIndex();
    for (auto [key, field] : {std::pair<const char*, int64_t*>{"stream", &k.stream},
                              {"context", &k.context}, {"device", &k.device}}) {
      if (!meta.contains(key)) continue;
      if (!meta[key].is_number_integer()) return bad();
      *field = meta[key].get<int64_t>();
    }
    k.blocks = 1;
    for (const auto& g : meta["grid"]) {
      if (!g.is_number_integer()) return bad();
      k.blocks *= g.get<int64_t>();
    }
    k.name = e.name();
    out.push_back(std::move(k));
  }
  std::sort(out.begin(), out.end(),
            [](const KernelRecord& a, const KernelRecord& b) { return a.start_us < b.start_us; });
  return out;
}

}  // namespace mosaic::engine
