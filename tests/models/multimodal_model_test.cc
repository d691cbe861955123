// MultimodalModel: built from zoo specs and from tiny LLaVA/omni/ImageBind-like specs, the
// forward follows the edges and equals the per-module path the engine uses, every parameter
// gets a gradient, the start-up table lists every module, and a few optimizer steps on a fixed
// batch make the loss fall.
#include "models/multimodal_model.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/json_reader.h"
#include "models/losses.h"
#include "models/text.h"
#include "models/vit.h"
#include "test_util.h"

namespace mosaic::models {
namespace {

using Shape = std::vector<int64_t>;

ModelSpec LoadZoo(const std::string& name) {
  StatusOr<ModelSpec> spec =
      LoadModelSpec(std::string(MOSAIC_SOURCE_DIR) + "/configs/models/" + name + ".json");
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec{};
}

ModelSpec Parse(const char* text) {
  StatusOr<ModelSpec> spec = ParseModelSpec(Json::parse(text));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec{};
}

const char* kTinyLlava = R"({
  "name": "llava-tiny", "batch_size": 4, "micro_batches": 1, "precision": "fp32",
  "modules": [
    {"name": "vision", "kind": "vit", "width": 16, "depth": 1, "heads": 2, "image_size": 16,
     "patch_size": 8, "pool": "none"},
    {"name": "projector", "kind": "projector", "projector": "mlp2", "in_dim": 16,
     "hidden_dim": 24, "out_dim": 32},
    {"name": "llm", "kind": "llm", "width": 32, "depth": 2, "heads": 4, "kv_heads": 2,
     "seq_len": 8, "vocab_size": 40},
    {"name": "loss", "kind": "loss", "loss": "next_token"}],
  "edges": [["vision", "projector"], ["projector", "llm"], ["llm", "loss"]]})";

const char* kTinyOmni = R"({
  "name": "omni-tiny", "batch_size": 4, "micro_batches": 2, "precision": "bf16",
  "modules": [
    {"name": "vision", "kind": "vit", "width": 16, "depth": 1, "heads": 2, "image_size": 16,
     "patch_size": 8, "pool": "none"},
    {"name": "audio", "kind": "audio", "width": 16, "depth": 1, "heads": 2, "n_mels": 6,
     "frames": 12, "pool": "none"},
    {"name": "vision_proj", "kind": "projector", "projector": "mlp2", "in_dim": 16,
     "hidden_dim": 32, "out_dim": 32},
    {"name": "audio_proj", "kind": "projector", "projector": "linear", "in_dim": 16,
     "out_dim": 32},
    {"name": "llm", "kind": "llm", "width": 32, "depth": 1, "heads": 4, "kv_heads": 1,
     "seq_len": 8, "vocab_size": 40},
    {"name": "loss", "kind": "loss", "loss": "next_token"}],
  "edges": [["vision", "vision_proj"], ["audio", "audio_proj"], ["vision_proj", "llm"],
            ["audio_proj", "llm"], ["llm", "loss"]]})";

const char* kTinyImagebind = R"({
  "name": "imagebind-tiny", "batch_size": 4, "micro_batches": 1, "precision": "fp32",
  "modules": [
    {"name": "image", "kind": "vit", "width": 16, "depth": 1, "heads": 2, "image_size": 16,
     "patch_size": 8, "output_dim": 12},
    {"name": "text", "kind": "text", "width": 16, "depth": 1, "heads": 2, "seq_len": 8,
     "vocab_size": 40, "output_dim": 12},
    {"name": "depth", "kind": "vit", "width": 8, "depth": 1, "heads": 2, "image_size": 16,
     "patch_size": 8, "channels": 1, "output_dim": 12},
    {"name": "audio", "kind": "audio", "width": 8, "depth": 1, "heads": 2, "n_mels": 6,
     "frames": 12, "output_dim": 12},
    {"name": "loss", "kind": "loss", "loss": "contrastive"}],
  "edges": [["image", "loss"], ["text", "loss"], ["depth", "loss"], ["audio", "loss"]]})";

void ExpectEveryParameterHasGradient(MultimodalModelImpl& model) {
  for (const auto& p : model.named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
}

TEST(MultimodalModelTest, ClipTinyForwardBackward) {
  ModelSpec spec = LoadZoo("clip-tiny");
  torch::manual_seed(30);
  StatusOr<MultimodalModel> built = BuildMultimodalModel(spec, torch::kCPU);
  ASSERT_TRUE(built.ok()) << built.status();
  MultimodalModel model = *built;
  Batch batch = SyntheticBatch(spec, 8, torch::kCPU, 1);
  EXPECT_EQ(batch.images.sizes(), Shape({8, 3, 32, 32}));
  EXPECT_EQ(batch.tokens.sizes(), Shape({8, 16}));
  ModelOutput out = model(batch);
  EXPECT_EQ(out.outputs.at("vision").sizes(), Shape({8, 64}));
  EXPECT_EQ(out.outputs.at("text").sizes(), Shape({8, 64}));
  ASSERT_EQ(out.loss.dim(), 0);
  // Random features: about log(8) per direction.
  EXPECT_NEAR(out.loss.item<double>(), std::log(8.0), 1.0);
  out.loss.backward();
  ExpectEveryParameterHasGradient(*model);
}

TEST(MultimodalModelTest, ForwardEqualsPerModulePathAndDirectCalls) {
  ModelSpec spec = LoadZoo("clip-tiny");
  torch::manual_seed(31);
  MultimodalModel model(spec);
  Batch batch = SyntheticBatch(spec, 4, torch::kCPU, 2);
  torch::NoGradGuard g;
  ModelOutput out = model(batch);
  // The engine's path: ModuleInputs + ForwardModule in topological order.
  ModuleOutputs outputs;
  for (const auto& name : spec.TopologicalOrder()) {
    int i = model->IndexOf(name);
    outputs[name] = model->ForwardModule(i, model->ModuleInputs(i, batch, outputs));
  }
  EXPECT_TRUE(torch::equal(outputs.at("loss"), out.loss));
  // And the same as calling the architectures and ClipLoss by hand.
  auto vit =
      std::dynamic_pointer_cast<VisionTransformerImpl>(model->module(spec.IndexOf("vision")));
  auto text = std::dynamic_pointer_cast<TextTransformerImpl>(model->module(spec.IndexOf("text")));
  auto clip = std::dynamic_pointer_cast<ContrastiveLossImpl>(model->module(spec.IndexOf("loss")));
  ASSERT_TRUE(vit && text && clip);
  torch::Tensor want =
      ClipLoss(vit->forward(batch.images), text->forward(batch.tokens), clip->scale());
  EXPECT_TRUE(torch::allclose(want, out.loss));
}

// The engine's decomposition: each module's forward on detached inputs, then each module's
// backward on its own (autograd::grad with the consumers' input gradients as the upstream
// gradient), in reverse topological order, must give the whole model's parameter gradients.
void ExpectPerModuleBackwardEqualsWholeModel(const ModelSpec& spec) {
  torch::manual_seed(36);
  MultimodalModel model(spec);
  Batch batch = SyntheticBatch(spec, 3, torch::kCPU, 10);
  if (batch.token_mask.defined()) batch.token_mask.select(1, 7).fill_(false);
  model->zero_grad();
  model(batch).loss.backward();
  std::vector<torch::Tensor> want;
  for (const auto& p : model->parameters())
    want.push_back(p.grad().clone());

  const std::vector<std::string> order = spec.TopologicalOrder();
  ModuleOutputs outputs;
  std::map<std::string, std::vector<torch::Tensor>> inputs;
  for (const auto& name : order) {
    const int i = spec.IndexOf(name);
    ModuleOutputs detached;
    for (const auto& [k, v] : outputs)
      detached[k] = v.detach().requires_grad_(true);
    inputs[name] = model->ModuleInputs(i, batch, detached);
    outputs[name] = model->ForwardModule(i, inputs[name]);
  }
  std::map<std::string, torch::Tensor> upstream;  // gradient of the total loss w.r.t. outputs
  std::map<std::string, torch::Tensor> got;       // parameter name -> accumulated gradient
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const int i = spec.IndexOf(*it);
    torch::Tensor y = outputs.at(*it);
    torch::Tensor gy = spec.modules[i].is_loss() ? torch::ones_like(y) : upstream.at(*it);
    std::vector<torch::Tensor> wrt = model->ModuleParameters(i);
    const size_t n_params = wrt.size();
    std::vector<std::string> producers = spec.InputsOf(*it);
    for (size_t k = 0; k < producers.size(); ++k)
      wrt.push_back(inputs[*it][k]);
    if (wrt.empty()) continue;
    auto grads = torch::autograd::grad({y}, wrt, {gy}, false, false, /*allow_unused=*/true);
    auto named = model->module(i) ? model->module(i)->named_parameters()
                                  : torch::OrderedDict<std::string, torch::Tensor>();
    for (size_t k = 0; k < n_params; ++k)
      got[*it + "." + named.keys()[k]] = grads[k];
    for (size_t k = 0; k < producers.size(); ++k) {
      torch::Tensor g = grads[n_params + k];
      auto& u = upstream[producers[k]];
      u = u.defined() ? u + g : g;
    }
  }
  auto names = model->named_parameters().keys();
  ASSERT_EQ(got.size(), names.size());
  for (size_t k = 0; k < names.size(); ++k) {
    ASSERT_TRUE(got.count(names[k])) << names[k];
    ASSERT_TRUE(got[names[k]].defined()) << names[k];
    EXPECT_TRUE(torch::allclose(got[names[k]], want[k], 1e-5, 1e-6))
        << spec.name << ": " << names[k] << " " << (got[names[k]] - want[k]).abs().max();
  }
}

TEST(MultimodalModelTest, PerModuleBackwardEqualsWholeModel) {
  ExpectPerModuleBackwardEqualsWholeModel(LoadZoo("clip-tiny"));
  ExpectPerModuleBackwardEqualsWholeModel(Parse(kTinyOmni));
  ExpectPerModuleBackwardEqualsWholeModel(Parse(kTinyImagebind));
}

TEST(MultimodalModelTest, TableListsModulesParametersAndFlops) {
  ModelSpec spec = LoadZoo("clip-tiny");
  MultimodalModel model(spec);
  std::string table = ModelTable(*model);
  for (const char* s : {"vision", "text", "loss", "contrastive", "total", "params", "GFLOP"})
    EXPECT_NE(table.find(s), std::string::npos) << s << "\n" << table;
  EXPECT_EQ(model->ParameterCount(spec.IndexOf("loss")), 1);
  EXPECT_EQ(model->ParameterCount(),
            model->ParameterCount(0) + model->ParameterCount(1) + model->ParameterCount(2));
  std::cout << table;
}

TEST(MultimodalModelTest, LlavaStyleFollowsEdges) {
  ModelSpec spec = Parse(kTinyLlava);
  torch::manual_seed(32);
  MultimodalModel model(spec);
  Batch batch = SyntheticBatch(spec, 3, torch::kCPU, 3);
  batch.token_mask[0].narrow(0, 6, 2).fill_(false);
  ModelOutput out = model(batch);
  EXPECT_EQ(out.outputs.at("vision").sizes(), Shape({3, 4, 16}));
  EXPECT_EQ(out.outputs.at("projector").sizes(), Shape({3, 4, 32}));
  EXPECT_EQ(out.outputs.at("llm").sizes(), Shape({3, 8, 40}));
  EXPECT_NEAR(out.loss.item<double>(), std::log(40.0), 1.0);
  EXPECT_EQ(model->ModuleInputs(spec.IndexOf("llm"), batch, out.outputs).size(), 2u);
  EXPECT_EQ(model->module(spec.IndexOf("loss")), nullptr);
  EXPECT_EQ(model->ParameterCount(spec.IndexOf("loss")), 0);
  out.loss.backward();
  ExpectEveryParameterHasGradient(*model);
  std::cout << ModelTable(*model);
}

TEST(MultimodalModelTest, OmniConcatenatesPrefixesInEdgeOrder) {
  ModelSpec spec = Parse(kTinyOmni);
  torch::manual_seed(33);
  MultimodalModel model(spec);
  Batch batch = SyntheticBatch(spec, 2, torch::kCPU, 4);
  EXPECT_EQ(batch.audio.sizes(), Shape({2, 6, 12}));
  ModelOutput out = model(batch);
  EXPECT_EQ(out.outputs.at("audio_proj").sizes(), Shape({2, 6, 32}));
  EXPECT_EQ(out.outputs.at("llm").sizes(), Shape({2, 8, 40}));
  auto in = model->ModuleInputs(spec.IndexOf("llm"), batch, out.outputs);
  ASSERT_EQ(in.size(), 3u);
  EXPECT_TRUE(in[0].equal(out.outputs.at("vision_proj")));
  EXPECT_TRUE(in[1].equal(out.outputs.at("audio_proj")));
  out.loss.backward();
  ExpectEveryParameterHasGradient(*model);
}

TEST(MultimodalModelTest, ImagebindLikeUsesPerModuleInputs) {
  ModelSpec spec = Parse(kTinyImagebind);
  torch::manual_seed(34);
  MultimodalModel model(spec);
  Batch batch = SyntheticBatch(spec, 4, torch::kCPU, 5);
  ASSERT_EQ(batch.inputs.count("depth"), 1u);  // 1 channel, unlike the shared 3-channel images
  EXPECT_EQ(batch.inputs.at("depth").sizes(), Shape({4, 1, 16, 16}));
  ModelOutput out = model(batch);
  // Sum of three CLIP losses against the image: about 3 log(4) at random init.
  EXPECT_NEAR(out.loss.item<double>(), 3 * std::log(4.0), 1.5);
  out.loss.backward();
  ExpectEveryParameterHasGradient(*model);
  // A batch missing an encoder's input is a clear error.
  Batch missing = batch;
  missing.audio = torch::Tensor();
  EXPECT_THROW(model(missing), c10::Error);
}

TEST(MultimodalModelTest, LossFallsOnAFixedBatch) {
  for (const char* which : {"clip", "llava"}) {
    ModelSpec spec = std::string(which) == "clip" ? LoadZoo("clip-tiny") : Parse(kTinyLlava);
    torch::manual_seed(35);
    MultimodalModel model(spec);
    Batch batch = SyntheticBatch(spec, 8, torch::kCPU, 6);
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(2e-3));
    double first = 0, last = 0;
    for (int step = 0; step < 60; ++step) {
      opt.zero_grad();
      torch::Tensor loss = model(batch).loss;
      loss.backward();
      opt.step();
      if (step == 0) first = loss.item<double>();
      if (step % 10 == 0)
        std::cout << which << " step " << step << " loss " << loss.item<double>() << "\n";
      last = loss.item<double>();
    }
    EXPECT_LT(last, 0.5 * first) << which << ": " << first << " -> " << last;
  }
}

TEST(MultimodalModelTest, BuildReportsUnbuildableSpecsAsStatus) {
  ModelSpec spec = LoadZoo("clip-tiny");
  spec.modules[0].heads = 3;  // does not divide width 64; ParseModelSpec would have caught it
  StatusOr<MultimodalModel> built = BuildMultimodalModel(spec, torch::kCPU);
  ASSERT_FALSE(built.ok());
  EXPECT_EQ(built.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(built.status().message().find("clip-tiny"), std::string::npos);
  EXPECT_NE(built.status().message().find("heads 3"), std::string::npos) << built.status();
  EXPECT_FALSE(BuildMultimodalModel(ModelSpec{}, torch::kCPU).ok());
}

TEST(BatchTest, CheckBatchNamesTheModuleAndField) {
  ModelSpec spec = Parse(kTinyImagebind);
  Batch good = SyntheticBatch(spec, 4, torch::kCPU, 9);
  EXPECT_TRUE(CheckBatch(spec, good).ok()) << CheckBatch(spec, good);
  auto message = [&](const Batch& b) { return CheckBatch(spec, b).message(); };
  Batch b = good;
  b.images = torch::randn({4, 3, 8, 8});
  EXPECT_NE(message(b).find("batch.images for module \"image\": expected (4, 3, 16, 16)"),
            std::string::npos)
      << message(b);
  b = good;
  b.inputs.erase("depth");  // falls back to the 3-channel images: wrong for a 1-channel encoder
  EXPECT_NE(message(b).find("module \"depth\""), std::string::npos) << message(b);
  b = good;
  b.tokens = b.tokens.clone();
  b.tokens[1][2] = 40;
  EXPECT_NE(message(b).find("outside [0, 40)"), std::string::npos) << message(b);
  EXPECT_TRUE(CheckBatch(spec, b, /*check_values=*/false).ok());
  b = good;
  b.audio = torch::randn({3, 6, 12});
  EXPECT_NE(message(b).find("batch.audio for module \"audio\""), std::string::npos) << message(b);
  b = good;
  b.token_mask = torch::ones({4, 3}, torch::kBool);
  EXPECT_NE(message(b).find("token_mask"), std::string::npos) << message(b);
  EXPECT_EQ(CheckBatch(spec, Batch{}).code(), StatusCode::kInvalidArgument);
}

TEST(BatchTest, SliceToAndSyntheticDeterminism) {
  ModelSpec spec = LoadZoo("clip-tiny");
  Batch a = SyntheticBatch(spec, 6, torch::kCPU, 7), b = SyntheticBatch(spec, 6, torch::kCPU, 7);
  EXPECT_TRUE(a.images.equal(b.images));
  EXPECT_TRUE(a.tokens.equal(b.tokens));
  EXPECT_FALSE(a.images.equal(SyntheticBatch(spec, 6, torch::kCPU, 8).images));
  EXPECT_EQ(a.tokens.select(1, 15).min().item<int64_t>(), 511);  // end of text
  EXPECT_GE(a.tokens.min().item<int64_t>(), 1);
  Batch s = a.Slice(2, 3);
  EXPECT_EQ(s.size(), 3);
  EXPECT_TRUE(s.images.equal(a.images.narrow(0, 2, 3)));
  EXPECT_TRUE(s.token_mask.defined());
  EXPECT_EQ(a.To(torch::kCPU).size(), 6);
  EXPECT_EQ(Batch{}.size(), 0);
}

TEST(AutocastGuardTest, CpuStaysFp32) {
  AutocastGuard guard(torch::kCPU, Precision::kBf16);
  EXPECT_FALSE(guard.active());
  torch::Tensor y = torch::nn::Linear(4, 4)(torch::randn({2, 4}));
  EXPECT_EQ(y.scalar_type(), torch::kFloat);
}

}  // namespace
}  // namespace mosaic::models
