// GPU training (label gpu; skipped without CUDA): clip-b16 and llava-small train 50 steps in
// bf16 autocast on generated shapes and the loss falls; the same through the engine's executor
// (--plan temporal-graph, and --plan auto, which times the planner's candidates first); under
// fp16 a NaN injected into a module's gradients halves the loss scale (--on-nonfinite auto) or
// stops naming the module; the same policies on graph plans (--plan temporal-graph,
// shared-streams); an out of memory while capturing a graph plan (a real one, under a cap on
// torch's caching allocator, with memory held during capture) falls back to temporal-graph,
// then temporal-eager, and trains.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>

#include "core/file_io.h"

#include "models/multimodal_model.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace mosaic::train {
namespace {

double Mean(const std::vector<double>& v, size_t b, size_t e) {
  return std::accumulate(v.begin() + b, v.begin() + e, 0.0) / (e - b);
}

void TrainsOnCuda(const std::string& model, double lr, const std::string& plan = "",
                  bool online = false) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  TrainOptions o;
  o.model_path = model;
  o.configs_dir = testing::SourceDir() + "/configs";
  o.device = "cuda";
  o.steps = 50;
  o.lr = lr;
  o.seed = 1;
  o.log_every = 10;
  o.eval_samples = 64;
  o.plan = plan;
  o.online_replan = online;
  o.replan_every = 10;
  auto r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->losses.size(), 50u);
  const double first = Mean(r->losses, 0, 5), last = Mean(r->losses, 45, 50);
  std::cerr << model << (plan.empty() ? "" : " --plan " + plan) << ": loss " << first << " -> "
            << last << ", " << r->samples_per_second << " samples/s (data included)";
  if (!plan.empty()) {
    std::cerr << ", plan " << r->plan_summary << ", step " << r->measured_step_ms
              << " ms measured, " << r->predicted_step_ms << " ms predicted, " << r->replans
              << " re-plan(s)";
  }
  std::cerr << "\n";
  if (!plan.empty()) {
    EXPECT_FALSE(r->plan_summary.empty());
  }
  EXPECT_LT(last, first);
  for (double l : r->losses)
    EXPECT_TRUE(std::isfinite(l));
}

// 1e-4: at 5e-4 clip-b16 collapsed to a constant loss of ln(batch) (Note [small-model defaults]).
TEST(TrainGpu, ClipB16Bf16LossFalls) {
  TrainsOnCuda("clip-b16", 1e-4);
}
TEST(TrainGpu, LlavaSmallBf16LossFalls) {
  TrainsOnCuda("llava-small", 1e-4);
}
TEST(TrainGpu, ClipB16TemporalGraphPlanLossFalls) {
  TrainsOnCuda("clip-b16", 1e-4, "temporal-graph");
}
TEST(TrainGpu, ClipB16AutoPlanLossFalls) {
  TrainsOnCuda("clip-b16", 1e-4, "auto");
}
// Online calibration: every step's task times folded into the perf model, re-planning every 10.
TEST(TrainGpu, ClipB16OnlineReplanLossFalls) {
  TrainsOnCuda("clip-b16", 1e-4, "temporal-graph", /*online=*/true);
}
TEST(TrainGpu, LlavaSmallAutoPlanLossFalls) {
  TrainsOnCuda("llava-small", 1e-4, "auto");
}

TEST(TrainGpu, Fp16NonFiniteGradientHalvesTheLossScaleOrStops) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  testing::TempDir dir("fp16_nonfinite");
  auto spec = LoadJsonFile(testing::SourceDir() + "/configs/models/clip-tiny.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  (*spec)["precision"] = "fp16";
  ASSERT_TRUE(WriteJsonFile(dir / "clip-tiny-fp16.json", *spec).ok());
  TrainOptions o;
  o.model_path = dir / "clip-tiny-fp16.json";
  o.configs_dir = testing::SourceDir() + "/configs";
  o.device = "cuda";
  o.steps = 4;
  o.batch_size = 8;
  o.eval_samples = 8;
  o.print_model_table = false;
  o.inject_nonfinite = {2, "vision"};
  std::ostringstream log;
  o.log = &log;
  auto r = Train(o);  // auto: reduce-scale under fp16
  ASSERT_TRUE(r.ok()) << r.status() << "\n" << log.str();
  EXPECT_GE(r->skipped_steps, 1);
  // (Other modules may overflow at the start too, at the initial scale of 65536.)
  EXPECT_NE(log.str().find("step 3: fp16 gradients are NaN/Inf in module 'vision'"),
            std::string::npos)
      << log.str();
  EXPECT_NE(log.str().find("optimizer step skipped, loss scale halved to "), std::string::npos)
      << log.str();
  o.on_nonfinite = NonFinitePolicy::kStop;
  r = Train(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("module 'vision'"), std::string::npos) << r.status();
}

// Non-finite policies on planned steps on CUDA (Note [numeric faults] in nonfinite.h): the
// NaN lands in .grad, which the backward graphs accumulate into; a skipped step leaves the
// parameters as they were; stop names the module.
StatusOr<std::vector<torch::Tensor>> CheckpointParameters(const std::string& model_path,
                                                          const std::string& path) {
  MOSAIC_ASSIGN_OR_RETURN(ModelSpec spec, LoadModelSpec(model_path));
  MOSAIC_ASSIGN_OR_RETURN(models::MultimodalModel model,
                          models::BuildMultimodalModel(spec, torch::kCPU));
  MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::AdamW> opt,
                          MakeAdamW(model->named_parameters(), AdamWConfig{}));
  TrainState st;
  st.model_name = spec.name;
  st.seed = 1;
  MOSAIC_RETURN_IF_ERROR(LoadCheckpoint(path, *model, *opt, &st));
  return model->parameters();
}

bool SameTensors(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k)
    if (!torch::equal(a[k], b[k])) return false;
  return true;
}

TEST(TrainGpu, PlannedNonFiniteSkipsOrStopsNamingTheModule) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const std::string model_path = testing::SourceDir() + "/configs/models/clip-tiny.json";
  for (const std::string plan : {"temporal-graph", "shared-streams"}) {
    SCOPED_TRACE(plan);
    testing::TempDir dir("gpu_plan_nonfinite");
    TrainOptions o;
    o.model_path = model_path;
    o.configs_dir = testing::SourceDir() + "/configs";
    o.device = "cuda";
    o.plan = plan;
    o.steps = 4;
    o.batch_size = 16;
    o.seed = 1;
    o.eval_samples = 16;
    o.print_model_table = false;
    o.checkpoint_dir = dir / "ckpt";
    o.checkpoint_every = 1;
    o.keep_checkpoints = 10;
    o.inject_nonfinite = {2, "vision"};
    std::ostringstream log;
    o.log = &log;

    o.on_nonfinite = NonFinitePolicy::kSkip;
    auto r = Train(o);
    ASSERT_TRUE(r.ok()) << r.status() << "\n" << log.str();
    EXPECT_EQ(r->skipped_steps, 1);
    EXPECT_NE(log.str().find("mosaic train: step 3: gradients are NaN/Inf in module 'vision'; "
                             "optimizer step skipped (--on-nonfinite skip)\n"),
              std::string::npos)
        << log.str();
    std::vector<std::vector<torch::Tensor>> after(5);
    for (int k = 1; k <= 4; ++k) {
      auto p = CheckpointParameters(model_path, dir / ("ckpt/" + CheckpointFileName(k)));
      ASSERT_TRUE(p.ok()) << p.status();
      after[k] = *p;
    }
    EXPECT_FALSE(SameTensors(after[1], after[2]));
    EXPECT_TRUE(SameTensors(after[2], after[3]));  // the skipped step
    EXPECT_FALSE(SameTensors(after[3], after[4]));
    for (const torch::Tensor& p : after[4])
      EXPECT_TRUE(p.isfinite().all().item<bool>());

    // reduce-scale without a loss scale (fp32: the executor has none) is skip, and says so.
    o.checkpoint_dir = dir / "ckpt-reduce";
    o.on_nonfinite = NonFinitePolicy::kReduceScale;
    log.str("");
    r = Train(o);
    ASSERT_TRUE(r.ok()) << r.status() << "\n" << log.str();
    EXPECT_EQ(r->skipped_steps, 1);
    EXPECT_NE(log.str().find("mosaic train: step 3: gradients are NaN/Inf in module 'vision'; "
                             "optimizer step skipped (no loss scale to reduce in fp32) "
                             "(--on-nonfinite reduce-scale)\n"),
              std::string::npos)
        << log.str();

    // A NaN loss: skipped the same way.
    o.checkpoint_dir = dir / "ckpt-loss";
    o.on_nonfinite = NonFinitePolicy::kSkip;
    o.inject_nonfinite = {1, "loss"};
    log.str("");
    r = Train(o);
    ASSERT_TRUE(r.ok()) << r.status() << "\n" << log.str();
    EXPECT_EQ(r->skipped_steps, 1);
    EXPECT_NE(log.str().find("mosaic train: step 2: loss is NaN (whole batch), every module's "
                             "output finite; optimizer step skipped (--on-nonfinite skip)\n"),
              std::string::npos)
        << log.str();

    // auto without a loss scale: stop, naming the module and the last checkpoint.
    o.checkpoint_dir = dir / "ckpt-stop";
    o.on_nonfinite = NonFinitePolicy::kAuto;
    o.inject_nonfinite = {2, "text"};
    r = Train(o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status();
    EXPECT_EQ(r.status().message(),
              "step 3: gradients are NaN/Inf in module 'text'; stopping (--on-nonfinite stop; "
              "lower --lr or check the data); last checkpoint " +
                  dir / ("ckpt-stop/" + CheckpointFileName(2)));
  }
}

// Peak bytes torch's caching allocator reserved from the device (what a memory fraction caps)
// while `run` ran, starting from an empty cache.
int64_t PeakReservedBytes(const std::function<void()>& run) {
  // The caching allocator's per-device stats exist once CUDA is initialized in this process
  // (before, resetPeakStats throws "Invalid device argument").
  torch::zeros({1}, torch::kCUDA);
  torch::cuda::synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  run();
  torch::cuda::synchronize();
  const int64_t peak = c10::cuda::CUDACachingAllocator::getDeviceStats(0).reserved_bytes[0].peak;
  c10::cuda::CUDACachingAllocator::emptyCache();
  return peak;
}

// A cap on the caching allocator for a scope: allocations past it raise a real CUDA out of
// memory (torch.cuda.set_per_process_memory_fraction).
class AllocatorCap {
 public:
  explicit AllocatorCap(int64_t bytes) {
    const double total = static_cast<double>(at::cuda::getDeviceProperties(0)->totalGlobalMem);
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::setMemoryFraction(std::min(1.0, bytes / total), 0);
  }
  ~AllocatorCap() {
    c10::cuda::CUDACachingAllocator::setMemoryFraction(1.0, 0);
    c10::cuda::CUDACachingAllocator::emptyCache();
  }
};

double GiB(int64_t bytes) {
  return static_cast<double>(bytes) / (1 << 30);
}

// Out of memory while capturing falls back to a smaller plan, says so, and trains. Two ways to
// run out, each under a cap on GPU memory (torch's per-process memory fraction): between what
// two plans need, where the measured peaks leave room (on the H200 the three plans' peaks are
// within 1.5%: graphs cost no memory over eager training there); and always with a ballast held
// while graph plans capture (TrainOptions::capture_ballast_bytes: graphs that need more than
// eager training), which makes both graph plans run out and the eager plan train.
TEST(TrainGpu, OutOfMemoryWhileCapturingFallsBackToASmallerPlan) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  TrainOptions o;
  o.model_path = "clip-b16";
  o.configs_dir = testing::SourceDir() + "/configs";
  o.device = "cuda";
  o.batch_size = 128;  // activations well above the weights and AdamW state
  o.lr = 1e-4;
  o.seed = 1;
  o.log_every = 10;
  o.eval_samples = 64;
  o.print_model_table = false;
  std::ostringstream log;
  o.log = &log;

  // What 3 steps of training under each plan reserve at the peak: captures, AdamW state and
  // evaluation included.
  std::map<std::string, int64_t> peak;
  int64_t max_peak = 0;
  for (const char* plan : {"shared-streams", "temporal-graph", "temporal-eager"}) {
    TrainOptions t = o;
    t.plan = plan;
    t.steps = 3;
    Status trained = Status::Ok();
    peak[plan] = PeakReservedBytes([&]() { trained = Train(t).status(); });
    ASSERT_TRUE(trained.ok()) << plan << ": " << trained << "\n" << log.str();
    max_peak = std::max(max_peak, peak[plan]);
    std::cerr << plan << ": peak " << GiB(peak[plan]) << " GiB reserved\n";
  }
  struct Case {
    std::string from, to;               // the plan asked for, the plan that trains
    std::vector<std::string> fallbacks;  // the plans fallen back to, in order
    int64_t ballast = 0, cap = 0;        // bytes
  };
  std::vector<Case> cases;
  // A cap halfway (geometric mean) between the peak of the last plan that must fail and the
  // plan that trains, where the peaks differ by over 5%.
  if (peak["shared-streams"] > peak["temporal-graph"] * 21 / 20) {
    cases.push_back({"shared-streams", "temporal-graph", {"temporal-graph"}, 0,
                     static_cast<int64_t>(std::sqrt(static_cast<double>(peak["shared-streams"]) *
                                                    static_cast<double>(peak["temporal-graph"])))});
  }
  // The ballast: half the largest peak, held while capturing; the cap a quarter of the largest
  // peak above it. A graph plan then needs its peak + the ballast (over the cap), eager training
  // its peak (under it); the ballast itself fits beside the weights and AdamW state.
  cases.push_back({"shared-streams", "temporal-eager", {"temporal-graph", "temporal-eager"},
                   max_peak / 2, max_peak + max_peak / 4});

  for (const Case& c : cases) {
    SCOPED_TRACE(c.from + " -> " + c.to);
    std::cerr << c.from << ": capped at " << GiB(c.cap) << " GiB, ballast while capturing "
              << GiB(c.ballast) << " GiB\n";
    log.str("");
    TrainOptions t = o;
    t.plan = c.from;
    t.steps = 50;
    t.capture_ballast_bytes = c.ballast;
    StatusOr<TrainResult> r = Internal("not run");
    {
      AllocatorCap limit(c.cap);
      r = Train(t);
    }
    ASSERT_TRUE(r.ok()) << r.status() << "\n" << log.str();
    std::string failed = c.from;
    for (const std::string& next : c.fallbacks) {
      EXPECT_NE(log.str().find("mosaic train: plan " + failed +
                               " ran out of GPU memory while capturing; falling back to " + next +
                               "\n"),
                std::string::npos)
          << log.str();
      failed = next;
    }
    const std::string mode = c.to == "temporal-eager" ? "eager" : "graph";
    EXPECT_EQ(r->plan_summary, c.to + " (fallback: out of memory), " + mode) << log.str();
    ASSERT_EQ(r->losses.size(), 50u);
    for (double l : r->losses)
      EXPECT_TRUE(std::isfinite(l));
    const double first = Mean(r->losses, 0, 5), last = Mean(r->losses, 45, 50);
    std::cerr << "under the cap: loss " << first << " -> " << last << ", plan " << r->plan_summary
              << "\n";
    EXPECT_LT(last, first);
  }
}

}  // namespace
}  // namespace mosaic::train
