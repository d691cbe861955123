// KernelTrace (CUPTI through torch's profiler) and MeasureSmUtilization on a real GPU: every
// kernel comes back with its grid and its stream, and a colocated plan's kernels are all placed
// on the plan's partitions (graph kernels report the stream the graph was launched on).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "engine/kernel_trace.h"
#include "engine/partition.h"
#include "engine/sm_probe.h"
#include "engine/standard_plans.h"
#include "engine/step_timing.h"
#include "test_util.h"

namespace mosaic::engine {
namespace {

const torch::Device kCuda(torch::kCUDA, 0);

TEST(KernelTraceGpu, RecordsTheGridAndStreamOfEveryKernel) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  auto a = CreatePlainStream();
  auto b = CreatePlainStream();
  ASSERT_TRUE(a.ok() && b.ok());
  int* buf = nullptr;
  ASSERT_EQ(cudaMalloc(&buf, 264 * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto trace = KernelTrace::Start();
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_FALSE(KernelTrace::Start().ok());  // one at a time
  ASSERT_TRUE(LaunchStreamMark(a->get()).ok());
  ASSERT_TRUE(LaunchSmProbe(a->get(), 264, buf, 1000).ok());
  ASSERT_EQ(cudaStreamSynchronize(a->get()), cudaSuccess);
  ASSERT_TRUE(LaunchStreamMark(b->get()).ok());
  ASSERT_TRUE(LaunchSmProbe(b->get(), 7, buf, 1000).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto kernels = (*trace)->Stop();
  ASSERT_TRUE(kernels.ok()) << kernels.status();
  cudaFree(buf);
  std::vector<KernelRecord> marks, probes;
  for (const KernelRecord& k : *kernels) {
    if (k.name == kStreamMarkKernel) marks.push_back(k);
    if (k.name.find("SmIdKernel") != std::string::npos) probes.push_back(k);
  }
  ASSERT_EQ(marks.size(), 2u);
  ASSERT_EQ(probes.size(), 2u);
  EXPECT_EQ(marks[0].blocks, 1);
  EXPECT_EQ(probes[0].blocks, 264);
  EXPECT_EQ(probes[1].blocks, 7);
  EXPECT_EQ(marks[0].stream, probes[0].stream);
  EXPECT_EQ(marks[1].stream, probes[1].stream);
  EXPECT_NE(marks[0].stream, marks[1].stream);
  for (const KernelRecord& k : *kernels) EXPECT_LE(k.start_us, k.end_us) << k.name;
  EXPECT_LE(marks[0].end_us, probes[0].start_us);
}

ModelSpec ClipB16() {
  auto s = LoadModelSpec(std::string(MOSAIC_SOURCE_DIR) + "/configs/models/clip-b16.json");
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

// Temporal graphs (the whole GPU), a colocated plan (vision / text on 104 / 28 SMs) and the same
// with both backwards planned on a shared stream (so their graphs, captured in the forwards'
// green contexts, are launched on a plain stream and run in those contexts): every traced kernel
// is placed, the places are the GPU and the two contexts, and the busy SM-time fits the window.
TEST(KernelTraceGpu, UtilizationOfTemporalAndColocatedPlans) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  const ModelSpec spec = ClipB16();
  torch::manual_seed(0);
  auto model = models::BuildMultimodalModel(spec, kCuda);
  ASSERT_TRUE(model.ok()) << model.status();
  const models::Batch batch = models::SyntheticBatch(spec, spec.batch_size, kCuda, 3);
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  StepTimingOptions o;
  const Plan temporal = *TemporalPlan(spec, spec.micro_batches);
  const Plan colocated =
      *PartitionedPlan(spec, spec.micro_batches, {{{"vision"}, 104}, {{"text"}, 28}}, false);
  const Plan shared_backward =
      *PartitionedPlan(spec, spec.micro_batches, {{{"vision"}, 104}, {{"text"}, 28}}, true);
  for (const Plan* plan : {&temporal, &colocated, &shared_backward}) {
    auto u = MeasureSmUtilization(*model, *plan, batch, kCuda, o, /*steps=*/2);
    ASSERT_TRUE(u.ok()) << u.status();
    std::printf("%s: SM-time utilization %.1f%% (%d kernels, %.2f of %.2f ms x %d SMs busy)\n",
                plan == &temporal    ? "temporal"
                : plan == &colocated ? "colocated 104/28"
                                     : "colocated 104/28, backwards shared",
                100 * u->utilization,
                u->kernels, u->busy_sm_ms, u->window_ms, sms);
    EXPECT_EQ(u->steps, 2);
    EXPECT_GT(u->kernels, 100);
    EXPECT_EQ(u->unplaced_kernel_fraction, 0) << "kernels in no place of the plan";
    EXPECT_GT(u->utilization, 0.2);
    EXPECT_LE(u->busy_sm_ms, u->window_ms * sms * (1 + 1e-9));
    if (plan == &temporal) {
      EXPECT_EQ(u->place_sms, std::vector<int>({sms}));
    } else {
      EXPECT_EQ(u->place_sms, std::vector<int>({sms, 104, 28}));
    }
  }
}

}  // namespace
}  // namespace mosaic::engine
