// GPU (label gpu, run on an H100): real-size zoo models train in bf16 autocast on CUDA, and the
// CUDA-only paths (flash attention, the cuBLASLt bias+GELU epilogue) agree with the CPU math.
// Prints eager samples/s for clip-b16 at batch 32 and llava-small at its micro-batch.
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/json_reader.h"
#include "models/blocks.h"
#include "models/linear.h"
#include "models/multimodal_model.h"
#include "models/switch_scope.h"
#include "models/vit.h"

namespace mosaic::models {
namespace {

#define REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

ModelSpec LoadZoo(const std::string& name) {
  StatusOr<ModelSpec> spec =
      LoadModelSpec(std::string(MOSAIC_SOURCE_DIR) + "/configs/models/" + name + ".json");
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec{};
}

// Trains `steps` AdamW steps on one fixed batch in the spec's precision; returns the losses
// and prints eager throughput over the steps after the first `warmup`.
std::vector<double> TrainFixedBatch(const ModelSpec& spec, int64_t batch_size, int steps,
                                    int warmup, double lr) {
  torch::Device cuda(torch::kCUDA);
  torch::manual_seed(40);
  StatusOr<MultimodalModel> built = BuildMultimodalModel(spec, cuda);
  EXPECT_TRUE(built.ok()) << built.status();
  MultimodalModel model = *built;
  std::cout << ModelTable(*model);
  Batch batch = SyntheticBatch(spec, batch_size, cuda, 1);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(lr));
  std::vector<double> losses;
  std::chrono::steady_clock::time_point start;
  for (int step = 0; step < steps; ++step) {
    if (step == warmup) {
      torch::cuda::synchronize();
      start = std::chrono::steady_clock::now();
    }
    opt.zero_grad();
    torch::Tensor loss;
    {
      AutocastGuard autocast(cuda, spec.precision);
      EXPECT_TRUE(autocast.active());
      loss = model(batch).loss;
    }
    loss.backward();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  torch::cuda::synchronize();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double per_step = s / (steps - warmup);
  std::printf("%s: batch %lld, eager bf16 step %.2f ms, %.1f samples/s, loss %.3f -> %.3f\n",
              spec.name.c_str(), static_cast<long long>(batch_size), per_step * 1e3,
              batch_size / per_step, losses.front(), losses.back());
  for (const auto& p : model->named_parameters()) {
    EXPECT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  return losses;
}

TEST(GpuModelsTest, ClipB16TrainsInBf16) {
  REQUIRE_CUDA();
  ModelSpec spec = LoadZoo("clip-b16");
  std::vector<double> losses = TrainFixedBatch(spec, 32, 20, 5, 1e-4);
  EXPECT_TRUE(std::isfinite(losses.back()));
  EXPECT_LT(losses.back(), 0.5 * losses.front());
}

TEST(GpuModelsTest, LlavaSmallTrainsInBf16) {
  REQUIRE_CUDA();
  ModelSpec spec = LoadZoo("llava-small");
  std::vector<double> losses = TrainFixedBatch(spec, spec.micro_batch_size(), 12, 4, 1e-4);
  EXPECT_TRUE(std::isfinite(losses.back()));
  EXPECT_LT(losses.back(), losses.front() - 1.0);
}

// Where an eager step's time goes (forward, backward, AdamW), for the lead's notes and for the
// engine's later comparisons; asserts nothing but that it runs.
TEST(GpuModelsTest, ClipB16StepBreakdown) {
  REQUIRE_CUDA();
  ModelSpec spec = LoadZoo("clip-b16");
  torch::Device cuda(torch::kCUDA);
  torch::manual_seed(43);
  MultimodalModel model(spec);
  model->to(cuda);
  Batch batch = SyntheticBatch(spec, 32, cuda, 2);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-4));
  using Clock = std::chrono::steady_clock;
  double fwd = 0, bwd = 0, step = 0;
  const int warmup = 3, iters = 10;
  for (int i = 0; i < warmup + iters; ++i) {
    torch::cuda::synchronize();
    auto t0 = Clock::now();
    opt.zero_grad();
    torch::Tensor loss;
    {
      AutocastGuard autocast(cuda, spec.precision);
      loss = model(batch).loss;
    }
    torch::cuda::synchronize();
    auto t1 = Clock::now();
    loss.backward();
    torch::cuda::synchronize();
    auto t2 = Clock::now();
    opt.step();
    torch::cuda::synchronize();
    auto t3 = Clock::now();
    if (i < warmup) continue;
    fwd += std::chrono::duration<double, std::milli>(t1 - t0).count() / iters;
    bwd += std::chrono::duration<double, std::milli>(t2 - t1).count() / iters;
    step += std::chrono::duration<double, std::milli>(t3 - t2).count() / iters;
  }
  std::printf(
      "clip-b16 bs32 eager bf16 (synchronized phases): forward %.2f ms, backward %.2f ms, "
      "AdamW (libtorch, unfused) %.2f ms\n",
      fwd, bwd, step);
}

// Every module kind can be captured on its own as a forward and a backward CUDA graph (what the
// engine does) and the replay equals eager: no host synchronization or CPU-side state inside
// the per-module forwards.
TEST(GpuModelsTest, EveryModuleCapturesAsForwardAndBackwardGraphs) {
  REQUIRE_CUDA();
  const char* omni = R"({
    "name": "omni-graph", "batch_size": 4, "micro_batches": 1, "precision": "bf16",
    "modules": [
      {"name": "vision", "kind": "vit", "width": 64, "depth": 2, "heads": 2, "image_size": 32,
       "patch_size": 8, "pool": "none"},
      {"name": "audio", "kind": "audio", "width": 64, "depth": 2, "heads": 2, "n_mels": 16,
       "frames": 32, "pool": "none"},
      {"name": "vision_proj", "kind": "projector", "projector": "mlp2", "in_dim": 64,
       "hidden_dim": 128, "out_dim": 128},
      {"name": "audio_proj", "kind": "projector", "projector": "linear", "in_dim": 64,
       "out_dim": 128},
      {"name": "llm", "kind": "llm", "width": 128, "depth": 2, "heads": 4, "kv_heads": 2,
       "seq_len": 16, "vocab_size": 100},
      {"name": "loss", "kind": "loss", "loss": "next_token"}],
    "edges": [["vision", "vision_proj"], ["audio", "audio_proj"], ["vision_proj", "llm"],
              ["audio_proj", "llm"], ["llm", "loss"]]})";
  // clip-tiny twice: the second time with its patch embedding as one GEMM (--patch-gemm).
  const std::vector<ModelSpec> specs{LoadZoo("clip-tiny"), *ParseModelSpec(Json::parse(omni)),
                                     LoadZoo("clip-tiny")};
  for (size_t k = 0; k < specs.size(); ++k) {
    ModelSpec spec = specs[k];
    const SwitchScope<PatchGemm, SetPatchGemm> patch_gemm(k == 2);
    spec.precision = Precision::kBf16;
    torch::Device cuda(torch::kCUDA, 0);
    torch::manual_seed(44);
    MultimodalModel model(spec);
    model->to(cuda);
    Batch batch = SyntheticBatch(spec, 4, cuda, 3);
    batch.token_mask.select(1, 15).fill_(false);  // some padding
    ModuleOutputs eager;
    {
      // No autograd graph here: it would keep the parameters' AccumulateGrad nodes bound to the
      // default stream, and the captured backward below would then have to wait on that
      // (legacy) stream, which a capture forbids.
      torch::NoGradGuard no_grad;
      AutocastGuard autocast(cuda, spec.precision);
      eager = model(batch).outputs;
    }
    for (const std::string& name : spec.TopologicalOrder()) {
      const int i = spec.IndexOf(name);
      std::vector<torch::Tensor> inputs;
      for (const torch::Tensor& t : model->ModuleInputs(i, batch, eager)) {
        torch::Tensor x = t.defined() ? t.detach().clone() : t;
        if (x.defined() && x.is_floating_point()) x.requires_grad_(true);
        inputs.push_back(x);
      }
      std::vector<torch::Tensor> wrt = model->ModuleParameters(i);
      for (const auto& x : inputs)
        if (x.defined() && x.requires_grad()) wrt.push_back(x);
      c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
      torch::cuda::synchronize();  // inputs were made on the default stream
      c10::cuda::CUDAStreamGuard on_side(side);
      for (int w = 0; w < 2; ++w) {  // warm up on the capture stream
        torch::Tensor y;
        {
          AutocastGuard autocast(cuda, spec.precision);
          y = model->ForwardModule(i, inputs);
        }
        torch::autograd::grad({y}, wrt, {torch::ones_like(y)}, true, false, true);
      }
      at::cuda::CUDAGraph fwd, bwd;
      const auto pool = at::cuda::graph_pool_handle();
      torch::Tensor y;
      {
        AutocastGuard autocast(cuda, spec.precision);
        at::autocast::set_autocast_cache_enabled(false);
        fwd.capture_begin(pool);
        y = model->ForwardModule(i, inputs);
        fwd.capture_end();
        at::autocast::set_autocast_cache_enabled(true);
      }
      torch::Tensor gy = torch::ones_like(y);
      bwd.capture_begin(pool);
      std::vector<torch::Tensor> grads = torch::autograd::grad({y}, wrt, {gy}, true, false, true);
      bwd.capture_end();
      fwd.replay();
      bwd.replay();
      side.synchronize();
      torch::Tensor want = eager.at(name).to(torch::kFloat), got = y.detach().to(torch::kFloat);
      EXPECT_TRUE(torch::allclose(got, want, 1e-2, 1e-2))
          << spec.name << "/" << name << ": " << (got - want).abs().max();
      int with_grad = 0;
      for (const auto& g : grads)
        if (g.defined()) {
          EXPECT_TRUE(torch::isfinite(g).all().item<bool>()) << spec.name << "/" << name;
          ++with_grad;
        }
      EXPECT_EQ(with_grad, static_cast<int>(wrt.size())) << spec.name << "/" << name;
    }
  }
}

// Note [patch embedding as one GEMM] on the GPU under bf16 autocast, at clip-b16's patch shape:
// the GEMM's patches and weight and bias gradients against cuDNN's conv, both from the same bf16
// operands (a wrong pixel order would be off by the patches' whole scale, not by bf16 rounding),
// with Linear on each of its paths: autocast's GEMMs, the bias-gradient kernel, cuBLASLt's.
TEST(GpuModelsTest, PatchGemmMatchesTheConvUnderBf16Autocast) {
  REQUIRE_CUDA();
  torch::manual_seed(44);
  ModuleSpec m = LoadZoo("clip-b16").modules.at(0);  // the vision tower, one block of it
  ASSERT_EQ(m.kind, ModuleKind::kVit);
  ASSERT_EQ(m.image_size, 224);
  ASSERT_EQ(m.patch_size, 16);
  ASSERT_EQ(m.width, 768);
  ASSERT_TRUE(m.patch_bias);
  m.depth = 1;
  VisionTransformer vit(m);
  vit->to(torch::kCUDA);
  const torch::Tensor images = torch::randn({4, 3, 224, 224}, torch::kCUDA);
  const torch::Tensor g = torch::randn({4, 196, 768}, torch::kCUDA);
  struct Out {
    torch::Tensor y, dw, db;
  };
  auto run = [&](bool gemm) {
    const SwitchScope<PatchGemm, SetPatchGemm> scope(gemm);
    vit->zero_grad();
    torch::Tensor y;
    {
      AutocastGuard autocast(torch::kCUDA, Precision::kBf16);
      y = vit->EmbedPatches(images);  // (4, 196, 768)
    }
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16) << "gemm " << gemm;
    EXPECT_EQ(y.is_contiguous(), gemm) << "the path taken";
    (y.to(torch::kFloat) * g).sum().backward();
    return Out{y.detach().to(torch::kFloat), vit->patch_embed->weight.grad().clone(),
               vit->patch_embed->bias.grad().clone()};
  };
  auto scaled = [](const torch::Tensor& a, const torch::Tensor& ref) {
    return ((a - ref).abs().max() / ref.abs().max()).item<double>();
  };
  const Out conv = run(false);
  for (int path = 0; path < 3; ++path) {  // autocast's GEMMs, bias-grad kernel, cuBLASLt
    const SwitchScope<FuseBiasGrad, SetFuseBiasGrad> bias(path == 1);
    const SwitchScope<FuseLinearGrad, SetFuseLinearGrad> linear(path == 2);
    const Out gemm = run(true);
    EXPECT_LT(scaled(gemm.y, conv.y), 1.0 / 64) << "path " << path;
    EXPECT_LT(scaled(gemm.dw, conv.dw), 1.0 / 64) << "path " << path;
    EXPECT_LT(scaled(gemm.db, conv.db), 1.0 / 64) << "path " << path;
  }
}

TEST(GpuBlocksTest, FlashAttentionMatchesCpuMath) {
  REQUIRE_CUDA();
  torch::manual_seed(41);
  for (bool causal : {false, true}) {
    SelfAttention attn(AttentionOptions(128, 2).kv_heads(1).causal(causal).rope_theta(10000));
    torch::Tensor x = torch::randn({2, 64, 128});
    torch::Tensor want = attn(x);
    attn->to(torch::kCUDA, torch::kBFloat16);
    torch::Tensor got = attn(x.to(torch::kCUDA, torch::kBFloat16)).to(torch::kCPU, torch::kFloat);
    EXPECT_LT((got - want).abs().max().item<double>(), 0.05 * want.abs().max().item<double>())
        << "causal " << causal;
  }
}

TEST(GpuBlocksTest, CublasLtGeluEpilogueMatchesUnfused) {
  REQUIRE_CUDA();
  at::globalContext().setAllowTF32CuBLAS(false);
  torch::manual_seed(42);
  auto opts = torch::TensorOptions().device(torch::kCUDA);
  torch::Tensor x = torch::randn({64, 96}, opts), w = torch::randn({128, 96}, opts) * 0.1,
                b = torch::randn({128}, opts);
  torch::Tensor fused = at::_addmm_activation(b, x, w.t(), 1, 1, /*use_gelu=*/true);
  torch::Tensor unfused = torch::gelu(torch::addmm(b, x, w.t()), "tanh");
  EXPECT_TRUE(torch::allclose(fused, unfused, 1e-4, 1e-4)) << (fused - unfused).abs().max();
  // Our wrapper, with gradients, under bf16 autocast.
  for (GeluEpilogue e : {GeluEpilogue::kAuto, GeluEpilogue::kFused, GeluEpilogue::kUnfused}) {
    torch::Tensor wg = w.clone().requires_grad_();
    torch::Tensor y;
    {
      AutocastGuard autocast(torch::kCUDA, Precision::kBf16);
      y = LinearGelu(x, wg, b, e);
    }
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
    EXPECT_LT((y.to(torch::kFloat) - unfused).abs().max().item<double>(), 0.1);
    y.to(torch::kFloat).sum().backward();
    EXPECT_TRUE(torch::isfinite(wg.grad()).all().item<bool>());
  }
}

}  // namespace
}  // namespace mosaic::models
