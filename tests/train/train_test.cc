// The training loop on clip-tiny (CPU): the loss falls and held-out retrieval beats chance in a
// short run; a resumed run reproduces the uninterrupted losses bit for bit; a damaged newest
// checkpoint is refused and the previous one is used; broken user data stops or is skipped.
#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <numeric>
#include <sstream>

#include "test_util.h"
#include "train/checkpoint.h"
#include "train/image_codec.h"
#include "train/nonfinite.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace mosaic::train {
namespace {

using testing::TempDir;
using testing::WriteFile;

TrainOptions ClipTiny(int64_t steps, std::ostream* log) {
  TrainOptions o;
  o.model_path = "clip-tiny";
  o.configs_dir = testing::SourceDir() + "/configs";
  o.steps = steps;
  o.seed = 3;
  o.log_every = 1000;
  o.print_model_table = false;
  o.log = log;
  return o;
}

double Mean(const std::vector<double>& v, size_t b, size_t e) {
  return std::accumulate(v.begin() + b, v.begin() + e, 0.0) / (e - b);
}

TEST(Train, ClipTinyLossFallsAndRetrievalBeatsChance) {
  std::ostringstream log;
  TrainOptions o = ClipTiny(400, &log);
  o.lr = 2e-3;
  o.eval_samples = 128;
  auto r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status() << "\n" << log.str();
  ASSERT_EQ(r->losses.size(), 400u);
  const double first = Mean(r->losses, 0, 10), last = Mean(r->losses, 390, 400);
  EXPECT_LT(last, 0.6 * first) << "first " << first << " last " << last;
  ASSERT_TRUE(r->has_retrieval);
  EXPECT_EQ(r->eval_pairs, 128);
  EXPECT_GT(r->retrieval_chance, 0.0);
  EXPECT_LT(r->retrieval_chance, 0.05);
  EXPECT_GT(r->retrieval_top1, 5 * r->retrieval_chance)
      << "top-1 " << r->retrieval_top1 << " chance " << r->retrieval_chance;
}

TEST(Train, ResumeGivesBitIdenticalLosses) {
  TempDir dir("resume");
  std::ostringstream log;
  TrainOptions full = ClipTiny(24, &log);
  full.batch_size = 8;
  full.checkpoint_dir = dir / "full";
  full.checkpoint_every = 12;
  full.keep_checkpoints = 3;
  auto a = Train(full);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->checkpoints_written.size(), 2u);  // steps 12 and 24

  // Start over from step 12 in a folder holding only that checkpoint.
  TrainOptions resumed = full;
  resumed.checkpoint_dir = dir / "resumed";
  ASSERT_TRUE(MakeDirectories(resumed.checkpoint_dir).ok());
  WriteFile(resumed.checkpoint_dir + "/" + CheckpointFileName(12),
            testing::ReadFile(full.checkpoint_dir + "/" + CheckpointFileName(12)));
  resumed.resume = true;
  auto b = Train(resumed);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->first_step, 12);
  ASSERT_EQ(b->losses.size(), 12u);
  for (size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(b->losses[i], a->losses[12 + i]) << "step " << 12 + i;  // bitwise
  }
  EXPECT_EQ(b->retrieval_top1, a->retrieval_top1);
}

TEST(Train, DamagedNewestCheckpointIsRefusedAndThePreviousUsed) {
  TempDir dir("damaged");
  std::ostringstream log;
  TrainOptions o = ClipTiny(6, &log);
  o.batch_size = 4;
  o.eval_samples = 8;
  o.checkpoint_dir = dir.path();
  o.checkpoint_every = 3;
  auto a = Train(o);
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string newest = dir / CheckpointFileName(6);
  const std::string previous = dir / CheckpointFileName(3);
  const std::string previous_bytes = testing::ReadFile(previous);
  std::string bytes = testing::ReadFile(newest);
  WriteFile(newest, bytes.substr(0, bytes.size() / 2));  // a torn copy

  std::ostringstream log2;
  o.log = &log2;
  o.resume = true;
  auto b = Train(o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->first_step, 3);
  EXPECT_NE(log2.str().find("refusing checkpoint: " + newest + ": truncated"), std::string::npos)
      << log2.str();
  EXPECT_EQ(b->losses[0], a->losses[3]);

  // Nothing usable left: a clear error, and the files are left as they were.
  WriteFile(newest, "garbage");
  WriteFile(previous, "garbage too");
  std::ostringstream log3;
  o.log = &log3;
  auto c = Train(o);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("no usable checkpoint"), std::string::npos) << c.status();
  EXPECT_EQ(testing::ReadFile(previous), "garbage too");
  (void)previous_bytes;
}

TEST(Train, BrokenUserDataStopsOrIsSkipped) {
  TempDir dir("userdata");
  for (int i = 0; i < 6; ++i) {
    Image img(20, 20);
    for (auto& p : img.pixels)
      p = static_cast<uint8_t>(40 * i);
    WriteFile(dir / ("ok" + std::to_string(i) + ".png"), *EncodePng(img));
    WriteFile(dir / ("ok" + std::to_string(i) + ".txt"), "a small red circle in the center");
  }
  WriteFile(dir / "bad.jpg", "\xFF\xD8\xFF\xE0 this is not a jpeg");
  WriteFile(dir / "bad.txt", "a large blue square at the top left");
  std::ostringstream log;
  TrainOptions o = ClipTiny(2, &log);
  o.batch_size = 4;
  o.data = dir.path();
  auto stop = Train(o);
  ASSERT_FALSE(stop.ok());
  EXPECT_NE(stop.status().message().find("bad.jpg"), std::string::npos) << stop.status();

  o.on_bad_data = BadDataPolicy::kSkip;
  auto skip = Train(o);
  ASSERT_TRUE(skip.ok()) << skip.status();
  EXPECT_GE(skip->skipped_examples, 1);
  EXPECT_NE(log.str().find("bad.jpg: cannot decode JPEG"), std::string::npos) << log.str();
  EXPECT_FALSE(skip->has_retrieval);  // no held-out pairs for user data without --eval-data
}

TEST(Train, BadOptionsAreClearErrors) {
  std::ostringstream log;
  TrainOptions o = ClipTiny(2, &log);
  o.model_path = "no-such-model";
  EXPECT_FALSE(Train(o).ok());
  o = ClipTiny(2, &log);
  o.device = "tpu";
  auto d = Train(o);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("--device"), std::string::npos);
  o = ClipTiny(2, &log);
  o.batch_size = 6;
  o.micro_batches = 4;
  EXPECT_FALSE(Train(o).ok());
  o = ClipTiny(2, &log);
  o.resume = true;
  EXPECT_FALSE(Train(o).ok());  // --resume without --checkpoint-dir
  EXPECT_EQ(ResolveModelPath("clip-tiny", "configs"), "configs/models/clip-tiny.json");
  EXPECT_EQ(ResolveModelPath("my/model.json", "configs"), "my/model.json");
}

// Tiny specs for the paths clip-tiny does not take: audio (generated tones -> log-mel ->
// audio encoder) and an LLaVA-style next-token model (held-out loss instead of retrieval).
constexpr char kTinyOmni[] = R"({
  "name": "tiny-omni", "batch_size": 4, "micro_batches": 1, "precision": "fp32",
  "modules": [
    {"name": "vision", "kind": "vit", "width": 32, "depth": 1, "heads": 2, "image_size": 16,
     "patch_size": 8, "output_dim": 32, "pool": "cls"},
    {"name": "text", "kind": "text", "width": 32, "depth": 1, "heads": 2, "seq_len": 16,
     "vocab_size": 256, "output_dim": 32, "causal": true, "pool": "last"},
    {"name": "audio", "kind": "audio", "width": 32, "depth": 1, "heads": 2, "n_mels": 16,
     "frames": 20, "output_dim": 32, "pool": "cls"},
    {"name": "loss", "kind": "loss", "loss": "contrastive"}],
  "edges": [["vision", "loss"], ["text", "loss"], ["audio", "loss"]]})";
constexpr char kTinyLlava[] = R"({
  "name": "tiny-llava", "batch_size": 4, "micro_batches": 2, "precision": "fp32",
  "modules": [
    {"name": "vision", "kind": "vit", "width": 32, "depth": 1, "heads": 2, "image_size": 16,
     "patch_size": 8, "pool": "none"},
    {"name": "projector", "kind": "projector", "projector": "mlp2", "in_dim": 32,
     "hidden_dim": 64, "out_dim": 32},
    {"name": "llm", "kind": "llm", "width": 32, "depth": 1, "heads": 2, "kv_heads": 1,
     "mlp_dim": 64, "seq_len": 16, "vocab_size": 256, "rope_theta": 10000},
    {"name": "loss", "kind": "loss", "loss": "next_token"}],
  "edges": [["vision", "projector"], ["projector", "llm"], ["llm", "loss"]]})";

TEST(Train, AudioAndNextTokenModelsTrain) {
  TempDir dir("tiny_specs");
  for (const char* spec : {kTinyOmni, kTinyLlava}) {
    const std::string path = dir / (spec == kTinyOmni ? "omni.json" : "llava.json");
    WriteFile(path, spec);
    std::ostringstream log;
    TrainOptions o = ClipTiny(20, &log);
    o.model_path = path;
    o.eval_samples = 16;
    auto r = Train(o);
    ASSERT_TRUE(r.ok()) << path << ": " << r.status() << "\n" << log.str();
    ASSERT_EQ(r->losses.size(), 20u);
    for (double l : r->losses)
      EXPECT_TRUE(std::isfinite(l)) << path;
    EXPECT_LT(Mean(r->losses, 15, 20), Mean(r->losses, 0, 5)) << path;
    EXPECT_EQ(r->has_retrieval, spec == kTinyOmni);
    EXPECT_EQ(r->eval_pairs, 16);
    EXPECT_TRUE(std::isfinite(r->eval_loss));
  }
}

TEST(Train, StopRequestWritesACheckpointAndResumes) {
  TempDir dir("stop");
  std::ostringstream log;
  std::atomic<bool> stop{true};  // as if SIGTERM came during the first step
  TrainOptions o = ClipTiny(10, &log);
  o.batch_size = 4;
  o.eval_samples = 8;
  o.checkpoint_dir = dir.path();
  o.stop_requested = &stop;
  auto a = Train(o);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->interrupted);
  EXPECT_EQ(a->last_step, 1);
  ASSERT_EQ(a->checkpoints_written.size(), 1u);
  EXPECT_EQ(a->checkpoints_written[0], dir / CheckpointFileName(1));
  EXPECT_NE(log.str().find("stopping after step 1"), std::string::npos) << log.str();
  stop = false;
  o.resume = true;
  auto b = Train(o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE(b->interrupted);
  EXPECT_EQ(b->first_step, 1);
  EXPECT_EQ(b->losses.size(), 9u);
}

TEST(Train, MicroBatchesAccumulate) {
  std::ostringstream log;
  TrainOptions o = ClipTiny(4, &log);
  o.batch_size = 8;
  o.micro_batches = 2;
  o.eval_samples = 8;
  auto r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->losses.size(), 4u);
  for (double l : r->losses)
    EXPECT_TRUE(std::isfinite(l));
}

// --plan runs the step through the engine's executor (task by task on the CPU): with one
// micro-batch it is the same math as the plain loop, so the losses agree to float rounding
// (the executor sums gradients module by module, autograd in one graph).
TEST(Train, PlannedStepsMatchThePlainLoop) {
  std::ostringstream log;
  TrainOptions plain = ClipTiny(12, &log);
  plain.batch_size = 8;
  plain.eval_samples = 8;
  auto a = Train(plain);
  ASSERT_TRUE(a.ok()) << a.status();
  for (const std::string plan : {"temporal-eager", "temporal-graph", "shared-streams", "auto"}) {
    TrainOptions o = plain;
    o.plan = plan;
    auto b = Train(o);
    ASSERT_TRUE(b.ok()) << plan << ": " << b.status() << "\n" << log.str();
    ASSERT_EQ(b->losses.size(), a->losses.size());
    for (size_t k = 0; k < a->losses.size(); ++k)
      EXPECT_NEAR(b->losses[k], a->losses[k], 1e-4 * std::abs(a->losses[k]))
          << plan << " step " << k;
    EXPECT_FALSE(b->plan_summary.empty());
  }
}

TEST(Train, BadPlanIsAClearError) {
  std::ostringstream log;
  TrainOptions o = ClipTiny(2, &log);
  o.plan = "fastest-please";
  auto r = Train(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("fastest-please"), std::string::npos) << r.status();
}

// Note [numeric faults]: the executor keeps no module outputs, so a NaN loss from a planned
// step is traced by running the forward again, micro-batch by micro-batch.
TEST(NonFinite, DiagnoseLossFaultNamesTheFirstModuleWithANonFiniteOutput) {
  auto spec = LoadModelSpec(testing::SourceDir() + "/configs/models/clip-tiny.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto model = models::BuildMultimodalModel(*spec, torch::kCPU);
  ASSERT_TRUE(model.ok()) << model.status();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<models::Batch> micro = {models::SyntheticBatch(*spec, 2, torch::kCPU, 1),
                                      models::SyntheticBatch(*spec, 2, torch::kCPU, 2)};
  EXPECT_EQ(DiagnoseLossFault(**model, micro, torch::kCPU, nan),
            "loss is NaN (whole batch), every module's output finite");
  micro[1].images[0][0][0][0] = nan;
  EXPECT_EQ(DiagnoseLossFault(**model, micro, torch::kCPU, nan),
            "loss is NaN (micro-batch 1), first non-finite output from module 'vision'");
  EXPECT_EQ(DescribeLossFault(std::numeric_limits<double>::infinity(), 0, {"text"}),
            "loss is +Inf (micro-batch 0), first non-finite output from module 'text'");
}

// The shared end of every step (eager and planned): the verdict and the line per policy, and
// the cap on non-finite steps in a row.
TEST(NonFinite, GuardVerdictsPerPolicy) {
  auto spec = LoadModelSpec(testing::SourceDir() + "/configs/models/clip-tiny.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto model = models::BuildMultimodalModel(*spec, torch::kCPU);
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<torch::Tensor> params = (*model)->parameters();
  for (torch::Tensor& p : params)
    p.mutable_grad() = torch::zeros_like(p);
  LossScaler no_scale(false, torch::kCPU);
  std::string line;

  NonFiniteGuard stop(NonFinitePolicy::kAuto, &no_scale, "fp32 on the CPU");
  EXPECT_EQ(stop.policy(), NonFinitePolicy::kStop);
  EXPECT_EQ(stop.Check(0, "", **model, params, &line), StepVerdict::kApply);
  ASSERT_TRUE(InjectNonFiniteGradient(**model, "text").ok());
  EXPECT_EQ(stop.Check(4, "", **model, params, &line), StepVerdict::kStop);
  EXPECT_EQ(line,
            "step 5: gradients are NaN/Inf in module 'text'; stopping (--on-nonfinite stop; "
            "lower --lr or check the data)");
  EXPECT_EQ(stop.skipped_steps(), 1);

  NonFiniteGuard reduce(NonFinitePolicy::kReduceScale, &no_scale, "fp32 on the CPU");
  EXPECT_EQ(reduce.Check(0, "loss is NaN (whole batch), every module's output finite", **model,
                         params, &line),
            StepVerdict::kSkip);
  EXPECT_EQ(line,
            "step 1: loss is NaN (whole batch), every module's output finite; optimizer step "
            "skipped (no loss scale to reduce in fp32 on the CPU) (--on-nonfinite reduce-scale)");

  NonFiniteGuard skip(NonFinitePolicy::kSkip, &no_scale, "fp32 on the CPU");
  for (int k = 0; k < kMaxConsecutiveNonFiniteSteps - 1; ++k)
    ASSERT_EQ(skip.Check(k, "", **model, params, &line), StepVerdict::kSkip) << k;
  EXPECT_EQ(line,
            "step 24: gradients are NaN/Inf in module 'text'; optimizer step skipped "
            "(--on-nonfinite skip)");
  EXPECT_EQ(skip.Check(24, "", **model, params, &line), StepVerdict::kStop);
  EXPECT_EQ(line,
            "step 25: gradients are NaN/Inf in module 'text'; 25 steps in a row were NaN/Inf, the "
            "run has diverged; stopping");
  EXPECT_EQ(skip.skipped_steps(), 25);
  // A finite step in between resets the count.
  NonFiniteGuard reset(NonFinitePolicy::kSkip, &no_scale, "fp32 on the CPU");
  for (int k = 0; k < kMaxConsecutiveNonFiniteSteps - 1; ++k)
    ASSERT_EQ(reset.Check(k, "", **model, params, &line), StepVerdict::kSkip);
  for (torch::Tensor& p : params)
    p.mutable_grad().zero_();
  EXPECT_EQ(reset.Check(24, "", **model, params, &line), StepVerdict::kApply);
  ASSERT_TRUE(InjectNonFiniteGradient(**model, "vision").ok());
  EXPECT_EQ(reset.Check(25, "", **model, params, &line), StepVerdict::kSkip);
  EXPECT_EQ(reset.skipped_steps(), 25);
}

}  // namespace
}  // namespace mosaic::train
