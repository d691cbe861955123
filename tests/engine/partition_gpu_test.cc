// Partitions on a real GPU: green contexts built from one split are disjoint (a kernel records
// the %smid of every block), a graph retargeted to a partition runs there, and the fallback
// without green contexts gives plain streams.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <iterator>

#include "engine/graphed_module.h"
#include "engine/partition.h"
#include "engine/sm_probe.h"

namespace mosaic::engine {
namespace {

constexpr int kBlocks = 2048;

Plan ThreePartitions() {
  Plan p;
  p.name = "probe";
  PhaseSpec ph;
  ph.name = "all";
  ph.partitions.push_back({"a", PartitionKind::kDedicated, SmCount(64), {}});
  ph.partitions.push_back({"b", PartitionKind::kDedicated, SmCount(28), {}});
  ph.partitions.push_back({"c", PartitionKind::kDedicated, SmCount(40), {}});
  ph.partitions.push_back({"s", PartitionKind::kShared, SmCount(0), {}});
  p.phases.push_back(ph);
  return p;
}

std::string Show(const std::set<int>& s) {
  std::string out;
  for (int x : s)
    out += std::to_string(x) + " ";
  return out;
}

class PartitionGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  }
};

TEST_F(PartitionGpu, OneSplitCoversTheDevice) {
  auto split = SmSplit::Create(0);
  ASSERT_TRUE(split.ok()) << split.status();
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  std::cout << prop.name << ": " << (*split)->groups() << " groups of " << (*split)->granule()
            << " SMs + remainder " << (*split)->remainder() << "\n";
  EXPECT_EQ((*split)->total(), prop.multiProcessorCount);
  EXPECT_GT((*split)->groups(), 1);
}

TEST_F(PartitionGpu, DedicatedPartitionsOfAPhaseAreDisjoint) {
  auto set = PartitionSet::Create(ThreePartitions(), torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_TRUE((*set)->green()) << "green contexts unavailable on this GPU";
  std::vector<std::set<int>> used;
  for (int p = 0; p < 3; ++p) {
    const Partition& part = (*set)->at(0, p);
    EXPECT_TRUE(part.green);
    auto sms = ProbeSms(part.stream->stream(), kBlocks);
    ASSERT_TRUE(sms.ok()) << sms.status();
    std::cout << "partition " << part.id << " (" << part.sms << " SMs) ran on " << sms->size()
              << " SMs: " << Show(*sms) << "\n";
    EXPECT_LE(static_cast<int>(sms->size()), part.sms);
    EXPECT_GE(static_cast<int>(sms->size()), part.sms / 2) << "the probe should fill most SMs";
    used.push_back(*sms);
  }
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b) {
      std::vector<int> both;
      std::set_intersection(used[a].begin(), used[a].end(), used[b].begin(), used[b].end(),
                            std::back_inserter(both));
      EXPECT_TRUE(both.empty()) << "partitions " << a << " and " << b << " share " << both.size()
                                << " SMs";
    }
  // The shared partition is a plain stream: it may use every SM.
  auto shared = ProbeSms((*set)->at(0, 3).stream->stream(), kBlocks);
  ASSERT_TRUE(shared.ok());
  EXPECT_GT(shared->size(), used[0].size());
}

// A graph captured on a partition's stream runs on that partition's SMs wherever it is launched
// (here: on a plain stream): what lets the engine replay per-partition graphs.
TEST_F(PartitionGpu, GraphCapturedOnAPartitionStaysThere) {
  auto set = PartitionSet::Create(ThreePartitions(), torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_TRUE((*set)->green());
  auto sms_b = ProbeSms((*set)->at(0, 1).stream->stream(), kBlocks);
  ASSERT_TRUE(sms_b.ok());
  auto cap = (*set)->CreateStreamLike(0, 1);  // a second stream in b's green context
  auto plain = CreatePlainStream();
  ASSERT_TRUE(cap.ok() && plain.ok());
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, sizeof(int) * kBlocks), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(cap->get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_TRUE(LaunchSmProbe(cap->get(), kBlocks, d).ok());
  ASSERT_EQ(cudaStreamEndCapture(cap->get(), &graph), cudaSuccess);
  auto exec = GraphExec::Create(graph);
  ASSERT_TRUE(exec.ok()) << exec.status();
  ASSERT_TRUE(exec->Launch(plain->get()).ok());
  std::vector<int> h(kBlocks);
  ASSERT_EQ(
      cudaMemcpyAsync(h.data(), d, sizeof(int) * kBlocks, cudaMemcpyDeviceToHost, plain->get()),
      cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(plain->get()), cudaSuccess);
  const std::set<int> ran(h.begin(), h.end());
  std::cout << "graph captured in b, launched on a plain stream: " << ran.size() << " SMs\n";
  int outside = 0;
  for (int sm : ran)
    outside += sms_b->count(sm) ? 0 : 1;
  EXPECT_EQ(outside, 0) << "SMs outside b: " << Show(ran);
  cudaGraphDestroy(graph);
  cudaFree(d);
}

TEST_F(PartitionGpu, WithoutGreenContextsDedicatedPartitionsArePlainStreams) {
  PartitionOptions o;
  o.use_green_contexts = false;
  auto set = PartitionSet::Create(ThreePartitions(), torch::Device(torch::kCUDA, 0), o);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_FALSE((*set)->green());
  for (int p = 0; p < 4; ++p) {
    EXPECT_FALSE((*set)->at(0, p).green);
    ASSERT_TRUE((*set)->at(0, p).stream.has_value());
  }
}

TEST_F(PartitionGpu, SharedPartitionsGetThePlansStreamPriority) {
  Plan p = ThreePartitions();
  p.phases[0].partitions[3].priority = 2;
  PartitionSpec low{"low", PartitionKind::kShared, SmCount(0), {}};
  p.phases[0].partitions.push_back(low);
  auto set = PartitionSet::Create(p, torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(set.ok()) << set.status();
  int least = 0, greatest = 0;
  ASSERT_EQ(cudaDeviceGetStreamPriorityRange(&least, &greatest), cudaSuccess);
  auto priority_of = [](cudaStream_t s) {
    int v = 1;
    EXPECT_EQ(cudaStreamGetPriority(s, &v), cudaSuccess);
    return v;
  };
  EXPECT_EQ(priority_of((*set)->at(0, 3).stream->stream()), std::max(greatest, least - 2));
  EXPECT_EQ(priority_of((*set)->at(0, 4).stream->stream()), least);
  // A stream made like it (graph capture) has the same priority.
  auto like = (*set)->CreateStreamLike(0, 3);
  ASSERT_TRUE(like.ok()) << like.status();
  EXPECT_EQ(priority_of(like->get()), std::max(greatest, least - 2));
  EXPECT_LT(greatest, least) << "this GPU has no stream priorities";
}

TEST_F(PartitionGpu, AQuotaTheSplitCannotMakeIsRefused) {
  Plan p = ThreePartitions();
  p.phases[0].partitions[0].sms = SmCount(96);  // with 28 + 40: more groups than the split has
  auto set = PartitionSet::Create(p, torch::Device(torch::kCUDA, 0));
  EXPECT_FALSE(set.ok());
}

}  // namespace
}  // namespace mosaic::engine
