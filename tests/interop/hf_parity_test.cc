// Parity with Hugging Face transformers (fp32, CPU): tiny random CLIPModel and LlamaForCausalLM
// folders made by make_reference.py (the interop_make_reference fixture) are imported into
// Mosaic, run on the same inputs, and compared with HF's outputs and the gradient of every
// parameter; exported back, every tensor is bit-identical and transformers loads the folder.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "common/run_command.h"
#include "core/file_io.h"
#include "interop/hf_model.h"
#include "interop/safetensors.h"
#include "models/losses.h"

namespace mosaic::interop {
namespace {

constexpr double kTol = 1e-5;  // fp32, the issue's bound

std::string Ref(const std::string& name) {
  return std::string(MOSAIC_INTEROP_REFERENCE_DIR) + "/" + name;
}

std::string TempDir() {
  char tmpl[] = "/tmp/mosaic_interop_XXXXXX";
  char* dir = ::mkdtemp(tmpl);
  EXPECT_NE(dir, nullptr);
  return dir ? dir : "/tmp";
}

TensorMap Reference(const std::string& model) {
  auto r = ReadSafetensors(Ref(model) + "/reference.safetensors");
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : TensorMap{};
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

void ExpectClose(const torch::Tensor& mosaic, const torch::Tensor& hf, const std::string& what,
                 bool print = true) {
  ASSERT_EQ(mosaic.sizes(), hf.sizes()) << what;
  const double diff = MaxAbsDiff(mosaic, hf);
  EXPECT_LE(diff, kTol) << what;
  if (print) std::printf("%s: max |diff| %.3g\n", what.c_str(), diff);
}

// Every HF parameter's gradient against Mosaic's (mapped back to HF names), and none missing.
// Mosaic's parameter names to the reference's (HF's by default, OpenCLIP's for OpenCLIP).
using NameMap = StatusOr<TensorMap> (*)(const ModelSpec&, const TensorMap&);

void ExpectGradientsMatch(models::MultimodalModelImpl& model, const TensorMap& ref,
                          NameMap to_reference = &MosaicToHf) {
  TensorMap grads;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    grads.emplace(p.key(), p.value().grad());
  }
  auto hf = to_reference(model.spec(), grads);
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  int compared = 0;
  double worst = 0;
  for (const auto& [name, g] : *hf) {
    auto it = ref.find("grad." + name);
    ASSERT_NE(it, ref.end()) << "HF has no gradient for " << name;
    ExpectClose(g, it->second, "grad of " + name, /*print=*/false);
    worst = std::max(worst, MaxAbsDiff(g, it->second));
    ++compared;
  }
  int in_ref = 0;
  for (const auto& [name, t] : ref)
    in_ref += name.rfind("grad.", 0) == 0;
  EXPECT_EQ(compared, in_ref);
  EXPECT_GE(compared, 20);  // tied Llama: 2 layers x 9 + embedding + norm
  std::printf("compared %d gradients, max |diff| %.3g\n", compared, worst);
}

void CheckClipModel(HfImport* hf, const std::string& name, NameMap to_reference = &MosaicToHf) {
  TensorMap ref = Reference(name);
  models::Batch batch;
  batch.images = ref.at("input.pixel_values");
  batch.tokens = ref.at("input.input_ids");
  batch.token_mask = ref.at("input.attention_mask").to(torch::kBool);
  ASSERT_TRUE(models::CheckBatch(hf->spec, batch).ok());
  models::ModelOutput out = hf->model->forward(batch);
  out.loss.backward();
  const torch::Tensor img = out.outputs.at("vision"), txt = out.outputs.at("text");
  ExpectClose(img, ref.at("out.image_features"), "image features");
  ExpectClose(txt, ref.at("out.text_features"), "text features");
  namespace F = torch::nn::functional;
  auto unit = F::NormalizeFuncOptions().dim(1);
  ExpectClose(F::normalize(img, unit), ref.at("out.image_embeds"), "image embeds");
  ExpectClose(F::normalize(txt, unit), ref.at("out.text_embeds"), "text embeds");
  auto* loss = hf->model->module(hf->model->IndexOf("loss"))->as<models::ContrastiveLossImpl>();
  torch::Tensor logits = loss->scale() * F::normalize(img, unit).mm(F::normalize(txt, unit).t());
  ExpectClose(logits, ref.at("out.logits_per_image"), "logits_per_image");
  ExpectClose(out.loss, ref.at("out.loss"), "loss");
  ExpectGradientsMatch(*hf->model, ref, to_reference);
}

void CheckClip(const std::string& name) {
  auto hf = ImportHfModel(Ref(name), torch::kCPU);
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  CheckClipModel(&*hf, name);
}

void CheckLlama(const std::string& name) {
  auto hf = ImportHfModel(Ref(name), torch::kCPU);
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  TensorMap ref = Reference(name);
  models::Batch batch;
  batch.tokens = ref.at("input.input_ids");
  models::ModelOutput out = hf->model->forward(batch);
  out.loss.backward();
  ExpectClose(out.outputs.at("llm"), ref.at("out.logits"), "logits");
  ExpectClose(out.loss, ref.at("out.loss"), "loss");
  ExpectGradientsMatch(*hf->model, ref);
}

// LlavaForConditionalGeneration: HF's input is [16 image placeholders, text], Mosaic's the
// image as the LLM's prefix and the text tokens; the reference holds HF's logits at the text
// positions and its gradients under HF's runtime names (model.vision_tower.*, lm_head.*, ...),
// which HfToMosaic maps onto Mosaic's parameters like the folder's saved names.
TEST(HfParity, LlavaMatchesTransformers) {
  auto hf = ImportHfModel(Ref("llava"), torch::kCPU);
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  const ModuleSpec& v = *hf->spec.Find("vision");
  EXPECT_EQ(v.feature_layer, -2);
  EXPECT_TRUE(v.drop_cls);
  EXPECT_EQ(hf->spec.Find("projector")->activation, Activation::kGelu);
  TensorMap ref = Reference("llava");
  models::Batch batch;
  batch.images = ref.at("input.pixel_values");
  batch.tokens = ref.at("input.input_ids");
  batch.token_mask = ref.at("input.attention_mask").to(torch::kBool);
  models::ModelOutput out = hf->model->forward(batch);
  out.loss.backward();
  ExpectClose(out.outputs.at("projector"), ref.at("out.image_features"), "image features");
  ExpectClose(out.outputs.at("llm"), ref.at("out.logits"), "logits (text positions)");
  ExpectClose(out.loss, ref.at("out.loss"), "loss");

  TensorMap hf_grads;
  for (const auto& [name, t] : ref)
    if (name.rfind("grad.", 0) == 0) hf_grads.emplace(name.substr(5), t);
  auto expected = HfToMosaic(hf->spec, hf_grads);
  ASSERT_TRUE(expected.ok()) << expected.status().message();
  int compared = 0, unused = 0;
  double worst = 0;
  for (const auto& p : hf->model->named_parameters(/*recurse=*/true)) {
    auto found = expected->find(p.key());
    ASSERT_NE(found, expected->end()) << "HF has no gradient for " << p.key();
    const torch::Tensor& e = found->second;
    // The tower's last block and ln_post (skipped by feature_layer -2) get no gradient, as in
    // HF (whose missing gradients the reference stores as zeros).
    torch::Tensor g = p.value().grad();
    if (!g.defined()) {
      ++unused;
      g = torch::zeros_like(p.value());
    }
    ExpectClose(g, e, "grad of " + p.key(), /*print=*/false);
    worst = std::max(worst, MaxAbsDiff(g, e));
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(expected->size()));
  EXPECT_EQ(unused, 14);  // vision block 2 (12 Mosaic tensors, q/k/v fused) + ln_post (2)
  std::printf("compared %d gradients (%d unused), max |diff| %.3g\n", compared, unused, worst);

  // The test can tell the layers apart: read at the last block (-1), the same weights give
  // other logits.
  ModelSpec last = hf->spec;
  last.modules[static_cast<size_t>(last.IndexOf("vision"))].feature_layer = -1;
  auto other = models::BuildMultimodalModel(last, torch::kCPU);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(LoadHfWeights(Ref("llava"), **other).ok());
  torch::NoGradGuard no_grad;
  EXPECT_GT(MaxAbsDiff((*other)->forward(batch).outputs.at("llm"), ref.at("out.logits")), 1e-3);
}

TEST(HfConfig, LlavaConfigsAreCheckedAndNamesAccepted) {
  auto llava = [](const std::string& edit) {
    auto config = LoadJsonFile(Ref("llava") + "/config.json");
    EXPECT_TRUE(config.ok());
    Json c = *config;
    c.merge_patch(Json::parse(edit));
    auto spec = SpecFromHfConfig(c, "config.json");
    return spec.ok() ? std::string("accepted") : spec.status().message();
  };
  EXPECT_EQ(llava("{}"), "accepted");
  EXPECT_EQ(llava(R"({"vision_feature_select_strategy": "full"})"),
            "config.json: vision_feature_select_strategy: \"full\" is not supported (only "
            "\"default\": the class token dropped)");
  EXPECT_NE(llava(R"({"vision_feature_layer": [-2, -1]})")
                .find("vision_feature_layer: expected "
                      "an integer"),
            std::string::npos);
  EXPECT_NE(llava(R"({"vision_feature_layer": -4})")
                .find("vision_feature_layer: -4 is not a "
                      "layer in [-3, -1] or [1, 3]"),
            std::string::npos);
  EXPECT_EQ(llava(R"({"projector_hidden_act": "relu"})"),
            "config.json: projector_hidden_act: \"relu\" is not supported (gelu, "
            "gelu_pytorch_tanh)");
  EXPECT_EQ(llava(R"({"vision_config": {"model_type": "siglip_vision_model"}})"),
            "config.json: vision_config.model_type: \"siglip_vision_model\" is not supported "
            "(only a CLIP tower, clip_vision_model)");

  // transformers 5's runtime names and llava-hf's vision_tower.vision_model.* map like the
  // saved ones; one tensor under two spellings is an error naming both.
  auto spec = LoadHfSpec(Ref("llava"));
  ASSERT_TRUE(spec.ok());
  auto saved = ReadModelWeights(Ref("llava"));
  ASSERT_TRUE(saved.ok());
  TensorMap runtime;
  for (const auto& [name, t] : *saved) {
    std::string n = name;
    if (n.rfind("vision_tower.", 0) == 0) n = "model.vision_tower.vision_model." + n.substr(13);
    if (n.rfind("language_model.model.", 0) == 0) n = "model.language_model." + n.substr(21);
    if (n == "language_model.lm_head.weight") n = "lm_head.weight";
    runtime.emplace(n, t);
  }
  auto a = HfToMosaic(*spec, *saved), b = HfToMosaic(*spec, runtime);
  ASSERT_TRUE(a.ok() && b.ok()) << (b.ok() ? a.status().message() : b.status().message());
  for (const auto& [name, t] : *a)
    EXPECT_TRUE(torch::equal(t, b->at(name))) << name;
  runtime.emplace("language_model.lm_head.weight", saved->at("language_model.lm_head.weight"));
  auto twice = HfToMosaic(*spec, runtime);
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("appears twice"), std::string::npos)
      << twice.status().message();
}

// HF -> Mosaic -> HF: every tensor bit-identical, same names; transformers loads the export
// into the same class and computes the same outputs (check_export.py).
void CheckRoundTrip(const std::string& name, torch::ScalarType dtype = torch::kFloat) {
  auto hf = ImportHfModel(Ref(name), torch::kCPU);
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  const std::string out = TempDir();
  ASSERT_TRUE(ExportHfModel(*hf->model, out, dtype).ok());
  auto original = ReadModelWeights(Ref(name));
  auto exported = ReadModelWeights(out);
  ASSERT_TRUE(original.ok() && exported.ok());
  ASSERT_EQ(original->size(), exported->size());
  for (const auto& [n, t] : *original) {
    ASSERT_TRUE(exported->count(n)) << n;
    EXPECT_TRUE(torch::equal(exported->at(n), t.to(dtype))) << n;
  }
  if (dtype != torch::kFloat) return;
  auto r = testing::RunCommand(std::string(MOSAIC_PYTHON) + " " + MOSAIC_SOURCE_DIR +
                               "/tests/interop/check_export.py " + out + " " + Ref(name));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("export ok"), std::string::npos) << r.out;
}

TEST(HfParity, ClipQuickGeluArgmaxPoolingMatchesTransformers) {
  CheckClip("clip-quickgelu");
}
TEST(HfParity, ClipGeluEosPoolingShardedMatchesTransformers) {
  CheckClip("clip-gelu-sharded");
}
TEST(HfParity, LlamaGqaMatchesTransformers) {
  CheckLlama("llama");
}
TEST(HfParity, LlamaTiedEmbeddingsMatchesTransformers) {
  CheckLlama("llama-tied");
}

TEST(HfRoundTrip, ClipIsBitIdenticalAndLoadsInTransformers) {
  CheckRoundTrip("clip-quickgelu");
}
TEST(HfRoundTrip, ShardedClipIsBitIdenticalAndLoads) {
  CheckRoundTrip("clip-gelu-sharded");
}
TEST(HfRoundTrip, LlamaIsBitIdenticalAndLoadsInTransformers) {
  CheckRoundTrip("llama");
}
TEST(HfRoundTrip, TiedLlamaIsBitIdenticalAndLoads) {
  CheckRoundTrip("llama-tied");
}
TEST(HfRoundTrip, LlavaIsBitIdenticalAndLoadsInTransformers) {
  CheckRoundTrip("llava");
}

TEST(HfRoundTrip, Bf16ExportRoundTripsBf16Weights) {
  // bf16 -> fp32 master weights -> bf16 is exact.
  auto hf = ImportHfModel(Ref("llama"), torch::kCPU);
  ASSERT_TRUE(hf.ok());
  const std::string bf16 = TempDir();
  ASSERT_TRUE(ExportHfModel(*hf->model, bf16, torch::kBFloat16).ok());
  auto again = ImportHfModel(bf16, torch::kCPU);
  ASSERT_TRUE(again.ok()) << again.status().message();
  const std::string out = TempDir();
  ASSERT_TRUE(ExportHfModel(*again->model, out, torch::kBFloat16).ok());
  auto a = ReadModelWeights(bf16), b = ReadModelWeights(out);
  ASSERT_TRUE(a.ok() && b.ok());
  for (const auto& [n, t] : *a) {
    EXPECT_EQ(t.scalar_type(), torch::kBFloat16) << n;
    EXPECT_TRUE(torch::equal(b->at(n), t)) << n;
  }
}

// clip-quickgelu's architecture (its HF config) with the OpenCLIP state dict `file` loaded.
StatusOr<HfImport> LoadOpenClipAsQuickGelu(const std::string& file) {
  HfImport oc;
  MOSAIC_ASSIGN_OR_RETURN(oc.spec, LoadHfSpec(Ref("clip-quickgelu")));
  MOSAIC_ASSIGN_OR_RETURN(oc.model, models::BuildMultimodalModel(oc.spec, torch::kCPU));
  MOSAIC_RETURN_IF_ERROR(LoadOpenClipWeights(file, *oc.model));
  return oc;
}

// OpenCLIP's state-dict names (written by make_reference.py from OpenCLIP's module layout) load
// into the same Mosaic model and compute the same, and map back bit-identically.
TEST(OpenClip, StateDictMatchesTransformersAndRoundTrips) {
  const std::string file = Ref("clip-quickgelu") + "/open_clip_model.safetensors";
  auto hf = LoadOpenClipAsQuickGelu(file);
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  const ModelSpec* spec = &hf->spec;
  CheckClipModel(&*hf, "clip-quickgelu");
  auto original = ReadSafetensors(file);
  auto back = MosaicToOpenClip(*spec, MosaicParameters(*hf->model));
  ASSERT_TRUE(original.ok() && back.ok());
  ASSERT_EQ(original->size(), back->size());
  for (const auto& [n, t] : *original) {
    ASSERT_TRUE(back->count(n)) << n;
    EXPECT_TRUE(torch::equal(back->at(n), t)) << n;
  }
  // Its names are checked like HF's.
  TensorMap broken = *original;
  broken.erase("visual.proj");
  auto error = OpenClipToMosaic(*spec, broken);
  ASSERT_FALSE(error.ok());
  EXPECT_EQ(error.status().message(), "missing tensor \"visual.proj\" (shape [48, 24])");
}

// OpenCLIP itself (open_clip.model.CLIP, make_reference.py) in the configuration of
// clip-quickgelu, with its own random weights: Mosaic loads its state dict and computes its
// features, logits and ClipLoss, and every gradient under OpenCLIP's names, within 1e-5.
TEST(OpenClip, MatchesOpenClipItself) {
  auto oc = LoadOpenClipAsQuickGelu(Ref("open-clip") + "/open_clip_model.safetensors");
  ASSERT_TRUE(oc.ok()) << oc.status().message();
  CheckClipModel(&*oc, "open-clip", &MosaicToOpenClip);
}

// --- Whisper's audio encoder ----------------------------------------------------------------
// The same encoder weights saved as WhisperForConditionalGeneration (model.encoder.*, a decoder
// Mosaic does not read), WhisperForAudioClassification (encoder.*, head, 5 shards) and
// WhisperEncoder alone; reference: last_hidden_state, its mean (the pooled feature) and every
// encoder parameter's gradient of loss = mean(last_hidden_state * probe) (a mean, as Mosaic's
// losses are, so that gradients are O(1e-2) like the other models' and 1e-5 is as strict).

std::string WhisperPrefix(const std::string& name) {
  return name == "whisper" ? "model.encoder." : name == "whisper-classifier" ? "encoder." : "";
}

// Mosaic's gradients mapped back to HF names, compared with HF's (the k-bias rows must be exactly
// zero: MosaicToWhisper checks). Frozen positions (freeze_positions, Whisper's definition) have
// no gradient; trainable ones (what transformers 5.23's from_pretrained gives) match HF's.
void ExpectWhisperGradientsMatch(models::AudioEncoderImpl& encoder, const TensorMap& ref) {
  const bool frozen = !encoder.positions.requires_grad();
  EXPECT_EQ(encoder.positions.grad().defined(), !frozen);
  TensorMap grads;
  for (const auto& p : encoder.named_parameters(/*recurse=*/true)) {
    if (p.key() == "positions" && frozen) {
      grads.emplace(p.key(), torch::zeros_like(p.value()));
      continue;
    }
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    grads.emplace(p.key(), p.value().grad());
  }
  auto hf = MosaicToWhisper(encoder.spec(), grads);
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  int compared = 0;
  double worst = 0;
  for (const auto& [name, g] : *hf) {
    if (name == "embed_positions.weight" && frozen) continue;
    auto it = ref.find("grad." + name);
    ASSERT_NE(it, ref.end()) << "HF has no gradient for " << name;
    ExpectClose(g, it->second, "grad of " + name, /*print=*/false);
    worst = std::max(worst, MaxAbsDiff(g, it->second));
    ++compared;
  }
  int in_ref = 0;
  for (const auto& [name, t] : ref)
    in_ref += name.rfind("grad.", 0) == 0;
  EXPECT_EQ(compared, in_ref - (frozen ? 1 : 0));
  // 4 conv + 2 x 15 per layer (no k bias) + 2 final LayerNorm, + the positions when trained
  EXPECT_EQ(compared, frozen ? 36 : 37);
  std::printf("compared %d gradients, max |diff| %.3g\n", compared, worst);
}

// The encoder's output on the reference input, and (with the same weights) the pooled feature.
std::pair<torch::Tensor, torch::Tensor> RunWhisper(models::AudioEncoderImpl& encoder,
                                                   const TensorMap& ref) {
  torch::Tensor hidden = encoder.forward(ref.at("input.input_features"));
  ModuleSpec pooled_spec = encoder.spec();
  pooled_spec.pool = Pooling::kMean;
  models::AudioEncoder pooled(pooled_spec);
  {
    torch::NoGradGuard no_grad;
    auto from = encoder.named_parameters(/*recurse=*/true);
    for (auto& p : pooled->named_parameters(/*recurse=*/true))
      p.value().copy_(from[p.key()]);
  }
  return {hidden, pooled->forward(ref.at("input.input_features"))};
}

void CheckWhisper(const std::string& name, int64_t unused, bool train_positions = false) {
  auto w = ImportWhisperEncoder(Ref(name), torch::kCPU);
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_FALSE(w->encoder->positions.requires_grad());
  if (train_positions) w->encoder->positions.requires_grad_(true);  // freeze_positions false
  EXPECT_EQ(w->unused_tensors, unused);
  TensorMap ref = Reference(name);
  auto [hidden, pooled] = RunWhisper(*w->encoder, ref);
  ExpectClose(hidden, ref.at("out.last_hidden_state"), name + " last hidden state");
  ExpectClose(pooled, ref.at("out.pooled"), name + " pooled feature");
  (hidden * ref.at("input.probe")).mean().backward();
  ExpectWhisperGradientsMatch(*w->encoder, ref);
}

TEST(HfParity, WhisperForConditionalGenerationEncoderMatchesTransformers) {
  CheckWhisper("whisper", 28);  // model.decoder.*: 65 tensors saved, 37 of the encoder
}
TEST(HfParity, WhisperForAudioClassificationShardedMatchesTransformers) {
  CheckWhisper("whisper-classifier", 4);  // projector, classifier (weight, bias)
}
TEST(HfParity, WhisperEncoderFolderMatchesTransformers) {
  CheckWhisper("whisper-encoder", 0);
}
TEST(HfParity, WhisperTrainablePositionsMatchTransformers) {
  CheckWhisper("whisper-encoder", 0, /*train_positions=*/true);
}

// The bound can fail: a swapped q/k projection, a reversed position table, or GELU(tanh) in
// place of Whisper's exact GELU each move the output far beyond 1e-5.
TEST(HfParity, WhisperWrongMappingsBreakTheBound) {
  auto spec = LoadJsonFile(Ref("whisper") + "/config.json");
  ASSERT_TRUE(spec.ok());
  auto audio = WhisperAudioSpec(*spec, "config.json");
  ASSERT_TRUE(audio.ok()) << audio.status().message();
  auto weights = ReadModelWeights(Ref("whisper"));
  ASSERT_TRUE(weights.ok());
  TensorMap ref = Reference("whisper");
  auto diff_with = [&](const ModuleSpec& a, const TensorMap& hf) {
    auto mosaic = WhisperToMosaic(a, hf);
    EXPECT_TRUE(mosaic.ok()) << mosaic.status().message();
    models::AudioEncoder enc(a);
    torch::NoGradGuard no_grad;
    for (auto& p : enc->named_parameters(/*recurse=*/true))
      p.value().copy_(mosaic->at(p.key()));
    return MaxAbsDiff(enc(ref.at("input.input_features")), ref.at("out.last_hidden_state"));
  };
  EXPECT_LE(diff_with(*audio, *weights), kTol);
  TensorMap swapped = *weights;
  std::swap(swapped.at("model.encoder.layers.0.self_attn.q_proj.weight"),
            swapped.at("model.encoder.layers.0.self_attn.k_proj.weight"));
  TensorMap reversed = *weights;
  reversed.at("model.encoder.embed_positions.weight") =
      reversed.at("model.encoder.embed_positions.weight").flip(0);
  ModuleSpec tanh = *audio;
  tanh.activation = Activation::kGeluTanh;
  const double d_swap = diff_with(*audio, swapped), d_rev = diff_with(*audio, reversed),
               d_tanh = diff_with(tanh, *weights);
  std::printf("q/k swapped %.3g, positions reversed %.3g, gelu(tanh) %.3g\n", d_swap, d_rev,
              d_tanh);
  EXPECT_GT(d_swap, 100 * kTol);
  EXPECT_GT(d_rev, 100 * kTol);
  EXPECT_GT(d_tanh, 10 * kTol);
}

// HF -> Mosaic -> HF: every encoder tensor bit-identical (from each layout to WhisperEncoder's
// names); transformers' WhisperEncoder loads the export and computes the original's output
// (check_export.py), also in bf16.
void CheckWhisperRoundTrip(const std::string& name, torch::ScalarType dtype = torch::kFloat) {
  auto w = ImportWhisperEncoder(Ref(name), torch::kCPU);
  ASSERT_TRUE(w.ok()) << w.status().message();
  const std::string out = TempDir();
  Status s = ExportWhisperEncoder(*w->encoder, out, dtype);
  ASSERT_TRUE(s.ok()) << s.message();
  auto original = ReadModelWeights(Ref(name));
  auto exported = ReadModelWeights(out);
  ASSERT_TRUE(original.ok() && exported.ok());
  EXPECT_EQ(exported->size(), 37u);  // 4 conv + positions + 2 x 15 + 2
  const std::string prefix = WhisperPrefix(name);
  for (const auto& [n, t] : *exported) {
    ASSERT_TRUE(original->count(prefix + n)) << n;
    EXPECT_TRUE(torch::equal(t, original->at(prefix + n).to(dtype))) << n;
  }
  if (dtype != torch::kFloat) return;
  auto r = testing::RunCommand(std::string(MOSAIC_PYTHON) + " " + MOSAIC_SOURCE_DIR +
                               "/tests/interop/check_export.py " + out + " " + Ref(name));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("export ok: WhisperEncoder"), std::string::npos) << r.out;
}

TEST(HfRoundTrip, WhisperEncoderIsBitIdenticalAndLoadsInTransformers) {
  CheckWhisperRoundTrip("whisper");
  CheckWhisperRoundTrip("whisper-classifier");
  CheckWhisperRoundTrip("whisper-encoder");
  CheckWhisperRoundTrip("whisper", torch::kBFloat16);
}

TEST(HfWhisperErrors, TensorsAndConfigsAreChecked) {
  auto config = LoadJsonFile(Ref("whisper") + "/config.json");
  ASSERT_TRUE(config.ok());
  auto audio = WhisperAudioSpec(*config, "config.json");
  ASSERT_TRUE(audio.ok());
  EXPECT_EQ(audio->frames, 24);
  EXPECT_EQ(audio->mlp_dim, 48);
  auto weights = ReadModelWeights(Ref("whisper"));
  ASSERT_TRUE(weights.ok());
  auto error = [&](const TensorMap& w) {
    auto r = WhisperToMosaic(*audio, w);
    return r.ok() ? std::string("accepted") : r.status().message();
  };
  EXPECT_EQ(error(*weights), "accepted");
  TensorMap w = *weights;
  w.erase("model.encoder.layers.1.self_attn.v_proj.bias");
  EXPECT_EQ(error(w),
            "missing tensor \"model.encoder.layers.1.self_attn.v_proj.bias\" (shape [32])");
  w = *weights;
  w["model.encoder.layers.0.self_attn.k_proj.bias"] = torch::zeros({32});
  EXPECT_EQ(error(w),
            "extra tensor \"model.encoder.layers.0.self_attn.k_proj.bias\" (shape [32]) has no "
            "place in the Whisper encoder the config describes");
  w = *weights;
  w["model.encoder.embed_positions.weight"] = torch::zeros({1500, 32});
  EXPECT_EQ(error(w),
            "tensor \"model.encoder.embed_positions.weight\" has shape [1500, 32], the config "
            "implies [12, 32]");
  w = *weights;
  w["encoder.conv1.weight"] = w.at("model.encoder.conv1.weight");
  EXPECT_EQ(error(w),
            "tensors under both \"model.encoder.\" and \"encoder.\": two Whisper encoders");

  auto with = [&](const std::string& edit) {
    Json c = *config;
    c.merge_patch(Json::parse(edit));
    auto a = WhisperAudioSpec(c, "config.json");
    return a.ok() ? std::string("accepted") : a.status().message();
  };
  EXPECT_EQ(with(R"({"activation_function": "relu"})"),
            "config.json: activation_function: \"relu\" is not supported (only \"gelu\", which "
            "Whisper's conv front end uses too)");
  EXPECT_EQ(with(R"({"encoder_layers": 0})"),
            "config.json: encoder_layers: expected a positive integer");
  auto whole = SpecFromHfConfig(*config, "config.json");
  ASSERT_FALSE(whole.ok());
  EXPECT_NE(whole.status().message().find("a Whisper folder holds an audio encoder"),
            std::string::npos);

  // The export refuses a module that is not Whisper's encoder, naming the options.
  ModuleSpec mosaic_audio = *audio;
  mosaic_audio.activation = Activation::kGeluTanh;
  mosaic_audio.key_bias = true;
  mosaic_audio.freeze_positions = false;
  mosaic_audio.pool = Pooling::kMean;
  mosaic_audio.norm_before_pool = false;
  EXPECT_EQ(WhisperFits(mosaic_audio).message(),
            "module \"audio\": Whisper's encoder needs \"activation\": \"gelu\", \"key_bias\": "
            "false, \"freeze_positions\": true, \"norm_before_pool\": true");
}

// A Whisper folder fills the audio module of a larger model (a vision + text + Whisper audio
// contrastive spec): every encoder parameter equals the standalone import, the rest stays as
// initialised and is reported; sizes that do not fit are named.
constexpr char kWhisperClap[] = R"({
  "name": "tiny-whisper-clap", "batch_size": 4, "micro_batches": 1, "precision": "fp32",
  "modules": [
    {"name": "vision", "kind": "vit", "width": 32, "depth": 1, "heads": 2, "image_size": 16,
     "patch_size": 8, "output_dim": 32, "pool": "cls"},
    {"name": "text", "kind": "text", "width": 32, "depth": 1, "heads": 2, "seq_len": 16,
     "vocab_size": 256, "output_dim": 32, "causal": true, "pool": "last"},
    {"name": "audio", "kind": "audio", "width": 32, "depth": 2, "heads": 4, "mlp_dim": 48,
     "n_mels": 8, "frames": 24, "output_dim": 32, "pool": "mean", "activation": "gelu",
     "key_bias": false, "freeze_positions": true, "norm_before_pool": true},
    {"name": "loss", "kind": "loss", "loss": "contrastive"}],
  "edges": [["vision", "loss"], ["text", "loss"], ["audio", "loss"]]})";

TEST(HfInit, WhisperFolderFillsTheAudioModule) {
  auto spec = ParseModelSpec(Json::parse(kWhisperClap));
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  auto model = models::BuildMultimodalModel(*spec, torch::kCPU);
  ASSERT_TRUE(model.ok());
  const TensorMap before = MosaicParameters(**model);
  auto report = InitFromHf(Ref("whisper"), **model);
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->Summary(),
            "loaded audio (Whisper encoder); randomly initialised: vision, text, loss, "
            "audio.proj.weight; 28 tensors of the folder not used (decoder / classification "
            "head)");
  auto alone = ImportWhisperEncoder(Ref("whisper"), torch::kCPU);
  ASSERT_TRUE(alone.ok());
  const TensorMap after = MosaicParameters(**model);
  for (const auto& p : alone->encoder->named_parameters(/*recurse=*/true))
    EXPECT_TRUE(torch::equal(after.at("audio." + p.key()), p.value())) << p.key();
  for (const auto& [n, t] : before) {
    if (n.rfind("audio.", 0) != 0 || n == "audio.proj.weight") {
      EXPECT_TRUE(torch::equal(after.at(n), t)) << n;
    }
  }

  auto refuse = [&](const std::string& edit) {
    Json j = Json::parse(kWhisperClap);
    j["modules"][2].merge_patch(Json::parse(edit));
    auto s = ParseModelSpec(j);
    EXPECT_TRUE(s.ok()) << s.status().message();
    auto m = models::BuildMultimodalModel(*s, torch::kCPU);
    auto r = InitFromHf(Ref("whisper"), **m);
    return r.ok() ? std::string("accepted") : r.status().message();
  };
  EXPECT_EQ(refuse(R"({"heads": 2})"),
            Ref("whisper") +
                ": module \"audio\": heads (encoder_attention_heads) is 2, the "
                "Whisper config's is 4");
  EXPECT_EQ(
      refuse(R"({"activation": "gelu_tanh"})"),
      Ref("whisper") + ": module \"audio\": Whisper's encoder needs \"activation\": \"gelu\"");
  EXPECT_EQ(refuse(R"({"depth": 1})"),
            Ref("whisper") +
                ": module \"audio\": depth (encoder_layers) is 1, the Whisper "
                "config's is 2");
}

// --- mapping errors name the tensor ---------------------------------------------------------

class HfMappingErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    auto config = LoadJsonFile(Ref("clip-quickgelu") + "/config.json");
    ASSERT_TRUE(config.ok());
    auto spec = SpecFromHfConfig(*config, "config.json");
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    spec_ = *spec;
    auto w = ReadModelWeights(Ref("clip-quickgelu"));
    ASSERT_TRUE(w.ok());
    weights_ = *w;
  }
  std::string Error(const TensorMap& w) {
    auto r = HfToMosaic(spec_, w);
    EXPECT_FALSE(r.ok());
    return r.ok() ? "" : r.status().message();
  }
  ModelSpec spec_;
  TensorMap weights_;
};

TEST_F(HfMappingErrors, CompleteWeightsMap) {
  auto r = HfToMosaic(spec_, weights_);
  ASSERT_TRUE(r.ok()) << r.status().message();
}

TEST_F(HfMappingErrors, MissingTensorIsNamed) {
  weights_.erase("text_model.encoder.layers.1.self_attn.k_proj.bias");
  EXPECT_EQ(Error(weights_),
            "missing tensor \"text_model.encoder.layers.1.self_attn.k_proj.bias\" (shape [32])");
}

TEST_F(HfMappingErrors, ExtraTensorIsNamed) {
  weights_["vision_model.encoder.layers.2.mlp.fc1.weight"] = torch::zeros({96, 48});
  EXPECT_EQ(Error(weights_),
            "extra tensor \"vision_model.encoder.layers.2.mlp.fc1.weight\" (shape [96, 48]) has "
            "no place in the CLIPModel the config describes");
  // Old checkpoints' position_ids buffers are not weights: ignored.
  weights_.erase("vision_model.encoder.layers.2.mlp.fc1.weight");
  weights_["text_model.embeddings.position_ids"] = torch::arange(12).unsqueeze(0);
  EXPECT_TRUE(HfToMosaic(spec_, weights_).ok());
}

TEST_F(HfMappingErrors, MisShapedTensorIsNamed) {
  weights_["visual_projection.weight"] = torch::zeros({24, 47});
  EXPECT_EQ(Error(weights_),
            "tensor \"visual_projection.weight\" has shape [24, 47], the config implies [24, 48]");
}

TEST_F(HfMappingErrors, LoadIntoModelNamesTheFolder) {
  const std::string dir = TempDir();
  weights_.erase("logit_scale");
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", weights_).ok());
  auto model = models::BuildMultimodalModel(spec_, torch::kCPU);
  ASSERT_TRUE(model.ok());
  Status s = LoadHfWeights(dir, **model);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), dir + ": missing tensor \"logit_scale\" (shape [])");
}

TEST(HfConfig, UnsupportedConfigsAreClearErrors) {
  auto error = [](const std::string& text) {
    auto spec = SpecFromHfConfig(Json::parse(text), "config.json");
    EXPECT_FALSE(spec.ok());
    return spec.ok() ? "" : spec.status().message();
  };
  EXPECT_EQ(
      error(R"({"model_type": "bert"})"),
      "config.json: model_type: \"bert\" is not supported (clip, llama, llava; whisper into an "
      "audio module)");
  EXPECT_EQ(error(R"({"model_type": "clip", "text_config": {}})"),
            "config.json: vision_config: expected an object");
  EXPECT_EQ(error(R"({"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1,
                      "num_attention_heads": 4, "intermediate_size": 8,
                      "max_position_embeddings": 8, "vocab_size": 10, "attention_bias": true})"),
            "config.json: attention_bias: biases are not supported");
  EXPECT_EQ(error(R"({"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1,
                      "num_attention_heads": 4, "intermediate_size": 8,
                      "max_position_embeddings": 8, "vocab_size": 10,
                      "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000}})"),
            "config.json: rope_parameters.rope_type: \"yarn\" scaling is not supported (only "
            "\"default\")");
}

TEST(HfExport, MosaicNativeClipSaysWhatDoesNotFit) {
  auto spec = LoadModelSpec(std::string(MOSAIC_SOURCE_DIR) + "/configs/models/clip-tiny.json");
  ASSERT_TRUE(spec.ok());
  auto arch = HfArchitectureOf(*spec);
  ASSERT_FALSE(arch.ok());
  EXPECT_EQ(arch.status().message(),
            "model \"clip-tiny\": module \"vision\": CLIPModel's patch embedding has no bias "
            "(patch_bias false)");
}

}  // namespace
}  // namespace mosaic::interop
