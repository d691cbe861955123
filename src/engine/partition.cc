// Green contexts, streams and events (partition.h).
#include "engine/partition.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <utility>

#include "engine/cuda_check.h"
#include "engine/driver_api.h"

namespace mosaic::engine {

StatusOr<CudaEvent> CudaEvent::Create(bool timing) {
  CudaEvent e;
  MOSAIC_CUDA_RETURN_IF_ERROR(
      cudaEventCreateWithFlags(&e.e_, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

CudaEvent& CudaEvent::operator=(CudaEvent&& o) noexcept {
  if (this != &o) {
    if (e_) MOSAIC_CUDA_WARN(cudaEventDestroy(e_));
    e_ = o.e_;
    o.e_ = nullptr;
  }
  return *this;
}

CudaEvent::~CudaEvent() {
  if (e_) MOSAIC_CUDA_WARN(cudaEventDestroy(e_));
}

OwnedStream& OwnedStream::operator=(OwnedStream&& o) noexcept {
  if (this != &o) {
    this->~OwnedStream();
    s_ = o.s_;
    green_ = o.green_;
    o.s_ = nullptr;
  }
  return *this;
}

OwnedStream::~OwnedStream() {
  if (!s_) return;
  const DriverApi* api = GetDriverApi();
  if (green_ && api) {
    MOSAIC_CUDA_WARN(api->cuStreamDestroy(reinterpret_cast<CUstream>(s_)));
  } else {
    MOSAIC_CUDA_WARN(cudaStreamDestroy(s_));
  }
  s_ = nullptr;
}

StatusOr<int> CudaStreamPriority(int priority) {
  if (priority < 0 || priority > kMaxStreamPriority)
    return InvalidArgument("stream priority " + std::to_string(priority) + " is not 0 to " +
                           std::to_string(kMaxStreamPriority));
  int least = 0, greatest = 0;  // CUDA: lower numbers run first; least is the default (0)
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  if (least - priority < greatest) {
    static std::once_flag warned;
    std::call_once(warned, [&] {
      std::fprintf(stderr,
                   "mosaic: warning: this GPU has %d stream priority levels; plan priority %d "
                   "runs at its highest (priorities above %d share it)\n",
                   least - greatest + 1, priority, least - greatest);
    });
  }
  return std::max(greatest, least - priority);
}

StatusOr<OwnedStream> CreatePlainStream(int priority) {
  cudaStream_t s = nullptr;
  if (priority == 0) {
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  } else {
    MOSAIC_ASSIGN_OR_RETURN(int cuda_priority, CudaStreamPriority(priority));
    MOSAIC_CUDA_RETURN_IF_ERROR(
        cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, cuda_priority));
  }
  return OwnedStream(s, /*green=*/false);
}

GreenContext::~GreenContext() {
  if (const DriverApi* api = GetDriverApi(); g_ && api)
    MOSAIC_CUDA_WARN(api->cuGreenCtxDestroy(g_));
}

StatusOr<OwnedStream> GreenContext::CreateStream() const {
  const DriverApi* api = GetDriverApi();
  if (!api) return Unavailable("no CUDA driver");
  CUstream s = nullptr;
  MOSAIC_CUDA_RETURN_IF_ERROR(api->cuGreenCtxStreamCreate(&s, g_, CU_STREAM_NON_BLOCKING, 0));
  return OwnedStream(reinterpret_cast<cudaStream_t>(s), /*green=*/true);
}

StatusOr<std::unique_ptr<SmSplit>> SmSplit::Create(int device_index) {
  std::string why;
  const DriverApi* api = GetDriverApi(&why);
  if (!api) return Unavailable(why);
  auto split = std::make_unique<SmSplit>();
  split->device_ = device_index;
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_index));
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaFree(nullptr));  // the primary context must exist
  MOSAIC_CUDA_RETURN_IF_ERROR(api->cuDeviceGet(&split->dev_, device_index));
  CUdevResource all{};
  MOSAIC_CUDA_RETURN_IF_ERROR(
      api->cuDeviceGetDevResource(split->dev_, &all, CU_DEV_RESOURCE_TYPE_SM));
  // The smallest group the hardware co-schedules (8 SMs on H100); one split, never a second.
  const unsigned min_count = std::max(1u, all.sm.smCoscheduledAlignment);
  unsigned n = 0;
  MOSAIC_CUDA_RETURN_IF_ERROR(
      api->cuDevSmResourceSplitByCount(nullptr, &n, &all, nullptr, 0, min_count));
  if (n == 0) return Unavailable("the GPU's SMs cannot be split into groups");
  split->groups_.resize(n);
  MOSAIC_CUDA_RETURN_IF_ERROR(api->cuDevSmResourceSplitByCount(split->groups_.data(), &n, &all,
                                                               &split->remainder_, 0, min_count));
  split->groups_.resize(n);
  split->granule_ = static_cast<int>(split->groups_[0].sm.smCount);
  split->remainder_sms_ = static_cast<int>(split->remainder_.sm.smCount);
  return split;
}

Status SmSplit::Decompose(int sms, int* count, bool* with_remainder) const {
  if (sms > 0 && sms % granule_ == 0 && sms / granule_ <= groups()) {
    *count = sms / granule_;
    *with_remainder = false;
    return Status::Ok();
  }
  const int rest = sms - remainder_sms_;
  if (remainder_sms_ > 0 && rest >= 0 && rest % granule_ == 0 && rest / granule_ <= groups()) {
    *count = rest / granule_;
    *with_remainder = true;
    return Status::Ok();
  }
  return InvalidArgument(std::to_string(sms) + " SMs is not k*" + std::to_string(granule_) +
                         " (k <= " + std::to_string(groups()) + ") or that plus the remainder of " +
                         std::to_string(remainder_sms_) + " on this GPU");
}

StatusOr<std::unique_ptr<GreenContext>> SmSplit::Combine(int first, int count,
                                                         bool with_remainder) const {
  const DriverApi* api = GetDriverApi();
  if (first < 0 || count < 0 || first + count > groups() || (count == 0 && !with_remainder)) {
    return InvalidArgument("no such SM groups: [" + std::to_string(first) + ", " +
                           std::to_string(first + count) + ") of " + std::to_string(groups()));
  }
  std::vector<CUdevResource> parts(groups_.begin() + first, groups_.begin() + first + count);
  if (with_remainder) parts.push_back(remainder_);
  CUdevResourceDesc desc = nullptr;
  MOSAIC_CUDA_RETURN_IF_ERROR(
      api->cuDevResourceGenerateDesc(&desc, parts.data(), static_cast<unsigned>(parts.size())));
  CUgreenCtx g = nullptr;
  MOSAIC_CUDA_RETURN_IF_ERROR(api->cuGreenCtxCreate(&g, desc, dev_, CU_GREEN_CTX_DEFAULT_STREAM));
  return std::make_unique<GreenContext>(g, count * granule_ + (with_remainder ? remainder_sms_ : 0),
                                        device_);
}

StatusOr<std::unique_ptr<PartitionSet>> PartitionSet::Create(const Plan& plan, torch::Device device,
                                                             const PartitionOptions& options) {
  auto set = std::make_unique<PartitionSet>();
  set->device_ = device;
  if (device.is_cuda() && options.use_green_contexts) {
    const bool any_dedicated = [&] {
      for (const PhaseSpec& ph : plan.phases)
        for (const PartitionSpec& p : ph.partitions)
          if (p.kind == PartitionKind::kDedicated) return true;
      return false;
    }();
    if (any_dedicated) {
      auto split = SmSplit::Create(device.has_index() ? device.index() : 0);
      if (split.ok()) {
        set->split_ = std::move(*split);
      } else {
        WarnOnce("green contexts unavailable (" + split.status().message() +
                 "); dedicated partitions run on plain streams sharing the whole GPU");
      }
    }
  }
  const int dev_index = device.has_index() ? device.index() : 0;
  for (size_t ph = 0; ph < plan.phases.size(); ++ph) {
    const PhaseSpec& phase = plan.phases[ph];
    std::vector<std::unique_ptr<Partition>> parts;
    int next_group = 0;
    bool remainder_used = false;
    for (const PartitionSpec& spec : phase.partitions) {
      auto p = std::make_unique<Partition>();
      p->id = spec.id;
      p->kind = spec.kind;
      p->sms = spec.kind == PartitionKind::kDedicated ? spec.sms.value() : 0;
      p->priority = spec.kind == PartitionKind::kShared ? spec.priority : 0;
      if (device.is_cuda()) {
        if (spec.kind == PartitionKind::kDedicated && set->split_) {
          int count = 0;
          bool with_rem = false;
          const std::string where = "phases[" + std::to_string(ph) + "] (" + phase.name +
                                    ") partition \"" + spec.id + "\"";
          Status s = set->split_->Decompose(p->sms, &count, &with_rem);
          if (!s.ok()) return FailedPrecondition(where + ": " + s.message());
          if (next_group + count > set->split_->groups() || (with_rem && remainder_used)) {
            return FailedPrecondition(where +
                                      ": the phase's dedicated partitions need more SMs "
                                      "than this GPU's split has");
          }
          MOSAIC_ASSIGN_OR_RETURN(auto ctx, set->split_->Combine(next_group, count, with_rem));
          next_group += count;
          remainder_used = remainder_used || with_rem;
          MOSAIC_ASSIGN_OR_RETURN(p->owner, ctx->CreateStream());
          p->green = true;
          p->context = ctx.get();
          set->contexts_.push_back(std::move(ctx));
        } else {
          MOSAIC_ASSIGN_OR_RETURN(p->owner, CreatePlainStream(p->priority));
        }
        p->stream = c10::cuda::getStreamFromExternal(p->owner.get(), dev_index);
      }
      parts.push_back(std::move(p));
    }
    set->phases_.push_back(std::move(parts));
  }
  return set;
}

StatusOr<OwnedStream> PartitionSet::CreateStreamLike(int phase, int index) const {
  const Partition& p = at(phase, index);
  if (!device_.is_cuda()) return FailedPrecondition("no streams on the CPU");
  if (p.context) return p.context->CreateStream();
  return CreatePlainStream(p.priority);
}

}  // namespace mosaic::engine
