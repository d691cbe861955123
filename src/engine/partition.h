// Partitions: where a plan's tasks run on the GPU. A dedicated partition is a green context (its
// own SMs) with a stream in it; a shared partition is a plain stream on the whole GPU. Both are
// handed to torch as c10::cuda::CUDAStream, so ops under a CUDAStreamGuard run there.
//
// Disjointness (Note [one split]): every green context of a PartitionSet is built from ONE split
// of the device's SMs (cuDevSmResourceSplitByCount once: 15 groups of 8 SMs and a remainder of
// 12 on an H100), combining several groups (and maybe the remainder) per partition with
// cuDevResourceGenerateDesc. Partitions of one phase get disjoint groups. Splitting twice, or
// torch's GreenContext::create (always the first N SMs), would give overlapping partitions.
//
//   MOSAIC_ASSIGN_OR_RETURN(auto parts, PartitionSet::Create(plan, torch::Device("cuda:0")));
//   const Partition& p = parts->at(/*phase=*/0, /*index=*/1);
//   { c10::cuda::CUDAStreamGuard guard(*p.stream); y = module(x); }  // on p's SMs only
//
// Where green contexts are unavailable (old driver, no GPU), dedicated partitions fall back to
// plain streams with a one-line warning; on the CPU there are no streams at all.
#pragma once

#include <c10/cuda/CUDAStream.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <torch/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/plan.h"
#include "core/status.h"

namespace mosaic::engine {

// Owns a cudaEvent_t (timing disabled unless asked).
class CudaEvent {
 public:
  static StatusOr<CudaEvent> Create(bool timing = false);
  CudaEvent() = default;
  CudaEvent(CudaEvent&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  CudaEvent& operator=(CudaEvent&& o) noexcept;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  ~CudaEvent();
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Owns a stream made by cudaStreamCreateWithFlags or cuGreenCtxStreamCreate.
class OwnedStream {
 public:
  OwnedStream() = default;
  OwnedStream(cudaStream_t s, bool green) : s_(s), green_(green) {}
  OwnedStream(OwnedStream&& o) noexcept : s_(o.s_), green_(o.green_) { o.s_ = nullptr; }
  OwnedStream& operator=(OwnedStream&& o) noexcept;
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  ~OwnedStream();
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
  bool green_ = false;
};

// A new non-blocking plain stream on the current device; `priority` as in a plan (0 to
// kMaxStreamPriority, higher runs first), mapped by CudaStreamPriority.
StatusOr<OwnedStream> CreatePlainStream(int priority = 0);
// The CUDA priority of a plan's stream priority p: -p, clamped to the device's range (0 down to
// -5 on Hopper; lower numbers run first).
StatusOr<int> CudaStreamPriority(int priority);

// Owns a green context: a set of SMs of one split.
class GreenContext {
 public:
  GreenContext(CUgreenCtx g, int sms, int device) : g_(g), sms_(sms), device_(device) {}
  GreenContext(const GreenContext&) = delete;
  GreenContext& operator=(const GreenContext&) = delete;
  ~GreenContext();
  int sms() const { return sms_; }
  CUgreenCtx get() const { return g_; }
  // A new non-blocking stream whose work runs on this context's SMs only.
  StatusOr<OwnedStream> CreateStream() const;

 private:
  CUgreenCtx g_ = nullptr;
  int sms_ = 0;
  int device_ = 0;
};

// One split of a device's SMs into equal groups and a remainder (Note [one split]).
class SmSplit {
 public:
  // Unavailable when there is no GPU or the driver has no green contexts.
  static StatusOr<std::unique_ptr<SmSplit>> Create(int device_index);
  int granule() const { return granule_; }  // SMs per group (8 on H100)
  int groups() const { return static_cast<int>(groups_.size()); }
  int remainder() const { return remainder_sms_; }  // SMs in the remainder group (12)
  int total() const { return granule_ * groups() + remainder_sms_; }
  // Groups [first, first + count) plus, if asked, the remainder, as one green context.
  StatusOr<std::unique_ptr<GreenContext>> Combine(int first, int count, bool with_remainder) const;
  // How `sms` is made of groups: count (and whether the remainder joins), or InvalidArgument.
  Status Decompose(int sms, int* count, bool* with_remainder) const;

 private:
  int device_ = 0;
  CUdevice dev_ = 0;
  int granule_ = 0;
  std::vector<CUdevResource> groups_;
  CUdevResource remainder_{};
  int remainder_sms_ = 0;
};

struct Partition {
  std::string id;
  PartitionKind kind = PartitionKind::kShared;
  int sms = 0;                            // dedicated: the SMs the plan asked for; shared: 0
  int priority = 0;                       // shared: the plan's stream priority
  bool green = false;                     // dedicated and really on its own SMs (not a fallback)
  const GreenContext* context = nullptr;  // green only
  std::optional<c10::cuda::CUDAStream> stream;  // absent on the CPU
  OwnedStream owner;
};

struct PartitionOptions {
  bool use_green_contexts = true;  // false: every partition is a plain stream
};

// The partitions of every phase of a plan, built once per plan.
class PartitionSet {
 public:
  static StatusOr<std::unique_ptr<PartitionSet>> Create(const Plan& plan, torch::Device device,
                                                        const PartitionOptions& options = {});
  int phases() const { return static_cast<int>(phases_.size()); }
  int partitions(int phase) const { return static_cast<int>(phases_[phase].size()); }
  const Partition& at(int phase, int index) const { return *phases_[phase][index]; }
  bool on_gpu() const { return device_.is_cuda(); }
  torch::Device device() const { return device_; }
  // Whether dedicated partitions really got their own SMs.
  bool green() const { return split_ != nullptr; }
  // A new stream in the same place as partition (phase, index): same green context, or plain
  // with the same priority.
  StatusOr<OwnedStream> CreateStreamLike(int phase, int index) const;

 private:
  torch::Device device_{torch::kCPU};
  std::unique_ptr<SmSplit> split_;
  std::vector<std::unique_ptr<GreenContext>> contexts_;
  std::vector<std::vector<std::unique_ptr<Partition>>> phases_;
};

}  // namespace mosaic::engine
