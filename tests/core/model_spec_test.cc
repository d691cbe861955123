// Model specs: a table of broken specs, each failing with the expected message and JSON path;
// derived quantities; exact round trip.
#include <gtest/gtest.h>

#include <functional>

#include "core/cost.h"
#include "core/model_spec.h"
#include "test_util.h"

namespace mosaic {
namespace {

using testing::BrokenCase;
using testing::LoadSource;

class BrokenModelSpec : public ::testing::TestWithParam<BrokenCase> {};

TEST_P(BrokenModelSpec, FailsWithPathAndReason) {
  Json doc = LoadSource("configs/models/clip-b16.json");
  GetParam().edit(doc);
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_FALSE(spec.ok()) << "accepted a broken spec";
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find(GetParam().expected), std::string::npos)
      << "message was: " << spec.status().message();
}

Json& Module(Json& doc, int i) {
  return doc["modules"][i];
}

INSTANTIATE_TEST_SUITE_P(
    Table, BrokenModelSpec,
    ::testing::Values(
        BrokenCase{"HeadsDoNotDivideWidth", [](Json& d) { Module(d, 1)["heads"] = 7; },
                   "modules[1].heads: 7 does not divide width 512"},
        BrokenCase{"MissingWidth", [](Json& d) { Module(d, 0).erase("width"); },
                   "modules[0].width: missing (required)"},
        BrokenCase{"WidthNotInteger", [](Json& d) { Module(d, 0)["width"] = "wide"; },
                   "modules[0].width: expected an integer, got \"wide\""},
        BrokenCase{"HugeWidth", [](Json& d) { Module(d, 1)["width"] = 409000000; },
                   "modules[1].width: 409000000 is too large (at most 1048576)"},
        BrokenCase{"TooManyPatches",
                   [](Json& d) {
                     Module(d, 0)["image_size"] = 4096;
                     Module(d, 0)["patch_size"] = 2;
                   },
                   "modules[0].patch_size: image_size / patch_size = 2048 gives 4194304 patches, "
                   "more than 1048576"},
        BrokenCase{"NegativeDepth", [](Json& d) { Module(d, 0)["depth"] = -2; },
                   "modules[0].depth: must be positive, got -2"},
        BrokenCase{"FractionalHeads", [](Json& d) { Module(d, 0)["heads"] = 1.5; },
                   "modules[0].heads: expected an integer, got 1.5"},
        BrokenCase{"PatchDoesNotDivideImage", [](Json& d) { Module(d, 0)["patch_size"] = 15; },
                   "modules[0].patch_size: 15 does not divide image_size 224"},
        BrokenCase{"UnknownKind", [](Json& d) { Module(d, 0)["kind"] = "cnn"; },
                   "modules[0].kind: \"cnn\" is not one of vit | text | llm | projector | "
                   "audio | loss"},
        BrokenCase{"TypoField", [](Json& d) { Module(d, 0)["widht"] = 768; },
                   "modules[0].widht: unknown field"},
        BrokenCase{"DuplicateName", [](Json& d) { Module(d, 1)["name"] = "vision"; },
                   "modules[1].name: duplicate module name \"vision\" (first at modules[0])"},
        BrokenCase{"DotInName", [](Json& d) { Module(d, 0)["name"] = "vis.ion"; },
                   "modules[0].name: \"vis.ion\" must not contain '.'"},
        BrokenCase{"MicroBatchesDoNotDivide", [](Json& d) { d["micro_batches"] = 3; },
                   "micro_batches: 3 does not divide batch_size 32"},
        BrokenCase{"ZeroBatch", [](Json& d) { d["batch_size"] = 0; },
                   "batch_size: must be positive, got 0"},
        BrokenCase{"BadPrecision", [](Json& d) { d["precision"] = "int8"; },
                   "precision: \"int8\" is not one of fp32 | bf16 | fp16"},
        BrokenCase{"EdgeToUnknownModule",
                   [](Json& d) {
                     d["edges"][1] = Json::array({"txt", "loss"});
                   },
                   "edges[1][0]: unknown module \"txt\""},
        BrokenCase{"EdgeNotPair", [](Json& d) { d["edges"][0] = "vision->loss"; },
                   "edges[0]: expected [\"producer\", \"consumer\"]"},
        BrokenCase{"ContrastiveWidthsDiffer", [](Json& d) { Module(d, 1)["output_dim"] = 256; },
                   "modules[2]: contrastive inputs differ in width: \"vision\" has 512, "
                   "\"text\" has 256"},
        BrokenCase{"ContrastiveNeedsPooling", [](Json& d) { Module(d, 0)["pool"] = "none"; },
                   "contrastive input \"vision\" must be pooled"},
        BrokenCase{"ContrastiveOneInput",
                   [](Json& d) {
                     d["edges"] = Json::array({Json::array({"vision", "loss"})});
                   },
                   "a contrastive loss needs at least two inputs, has 1"},
        BrokenCase{"OrphanModule",
                   [](Json& d) {
                     d["edges"] = Json::array(
                         {Json::array({"vision", "loss"}), Json::array({"vision", "loss"})});
                   },
                   "edges[1]: duplicate edge vision -> loss"},
        BrokenCase{"NoPathToLoss",
                   [](Json& d) {
                     Json extra = d["modules"][0];
                     extra["name"] = "extra";
                     d["modules"].push_back(extra);
                   },
                   "modules[3]: \"extra\" feeds nothing: no path to a loss"},
        BrokenCase{"EncoderFedByModule",
                   [](Json& d) {
                     d["edges"].push_back(Json::array({"text", "vision"}));
                   },
                   "an encoder (vit) takes raw data, but edges feed it from \"text\""},
        BrokenCase{"NoModules", [](Json& d) { d["modules"] = Json::array(); },
                   "modules: must list at least one module"},
        BrokenCase{"NotAnObject",
                   [](Json& d) {
                     d = Json::array({1, 2});
                   },
                   "expected an object, got an array"}));

TEST(ModelSpec, CycleIsReportedWithItsPath) {
  Json doc = LoadSource("configs/models/llava-small.json");
  // projector -> llm -> projector
  Json p2 = doc["modules"][1];
  p2["name"] = "proj2";
  p2["in_dim"] = 2048;
  doc["modules"].push_back(p2);
  doc["edges"].push_back(Json::array({"llm", "proj2"}));
  doc["edges"].push_back(Json::array({"proj2", "projector"}));
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("edges: dependency cycle"), std::string::npos)
      << spec.status().message();
  EXPECT_NE(spec.status().message().find("projector -> llm -> proj2 -> projector"),
            std::string::npos)
      << spec.status().message();
}

TEST(ModelSpec, ReportsEveryViolationNotJustTheFirst) {
  Json doc = LoadSource("configs/models/clip-b16.json");
  doc["modules"][0]["heads"] = 7;
  doc["modules"][1]["depth"] = 0;
  doc["batch_size"] = -1;
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_FALSE(spec.ok());
  const std::string m = spec.status().message();
  EXPECT_NE(m.find("modules[0].heads: 7 does not divide width 768"), std::string::npos) << m;
  EXPECT_NE(m.find("modules[1].depth: must be positive, got 0"), std::string::npos) << m;
  EXPECT_NE(m.find("batch_size: must be positive, got -1"), std::string::npos) << m;
}

TEST(ModelSpec, LlmProjectorDimensionsChecked) {
  Json doc = LoadSource("configs/models/llava-small.json");
  doc["modules"][1]["out_dim"] = 1024;
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find(
                "modules[2].width: 2048 does not match the 1024-wide tokens from \"projector\""),
            std::string::npos)
      << spec.status().message();
  doc = LoadSource("configs/models/llava-small.json");
  doc["modules"][1]["in_dim"] = 768;
  spec = ParseModelSpec(doc);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find(
                "modules[1].in_dim: 768 does not match the 1024-wide features of \"vision\""),
            std::string::npos)
      << spec.status().message();
  doc = LoadSource("configs/models/llava-small.json");
  doc["modules"][2]["kv_heads"] = 5;
  spec = ParseModelSpec(doc);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("modules[2].kv_heads: 5 does not divide heads 32"),
            std::string::npos);
}

TEST(ModelSpec, DerivedQuantities) {
  StatusOr<ModelSpec> spec = LoadModelSpec(testing::SourcePath("configs/models/llava-small.json"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->micro_batch_size(), 4);
  const ModuleSpec& vision = *spec->Find("vision");
  EXPECT_EQ(vision.sequence_tokens(), 24 * 24);  // 336/14 = 24 patches a side, no class token
  EXPECT_EQ(vision.output_tokens(), 576);
  EXPECT_EQ(InputTokensOut(*spec, "projector"), 576);
  EXPECT_EQ(spec->Find("llm")->mlp_dim, 8192);
  EXPECT_EQ(spec->InputsOf("llm"), std::vector<std::string>{"projector"});
  EXPECT_EQ(spec->TopologicalOrder(),
            (std::vector<std::string>{"vision", "projector", "llm", "loss"}));
}

TEST(ModelSpec, DefaultsAreFilledAndSaved) {
  Json doc = LoadSource("configs/models/clip-tiny.json");
  doc["modules"][0].erase("pool");
  doc.erase("micro_batches");
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->micro_batches, 1);
  EXPECT_EQ(spec->modules[0].pool, Pooling::kCls);
  EXPECT_EQ(spec->modules[0].mlp_dim, 4 * 64);
  EXPECT_EQ(spec->modules[0].channels, 3);
  Json saved = ToJson(*spec);
  EXPECT_EQ(saved["modules"][0]["mlp_dim"], 256);
  EXPECT_EQ(saved["modules"][0]["pool"], "cls");
}

// Whisper's encoder options on an audio module (src/interop): parsed, written only when not the
// default, and read back the same; unknown values refused with their path.
TEST(ModelSpec, WhisperAudioOptionsParseAndRoundTrip) {
  Json doc = LoadSource("configs/models/omni-small.json");
  Json& a = doc["modules"][1];
  ASSERT_EQ(a["kind"], "audio");
  a["activation"] = "gelu";
  a["key_bias"] = false;
  a["freeze_positions"] = true;
  a["norm_before_pool"] = true;
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const ModuleSpec& m = spec->modules[1];
  EXPECT_EQ(m.activation, Activation::kGelu);
  EXPECT_FALSE(m.key_bias);
  EXPECT_TRUE(m.freeze_positions);
  EXPECT_TRUE(m.norm_before_pool);
  Json saved = ToJson(*spec);
  EXPECT_EQ(saved["modules"][1]["key_bias"], false);
  EXPECT_EQ(saved["modules"][1]["activation"], "gelu");
  EXPECT_EQ(ToJson(*ParseModelSpec(saved)), saved);
  Json plain = ToJson(*ParseModelSpec(LoadSource("configs/models/omni-small.json")));
  for (const char* key : {"activation", "key_bias", "freeze_positions", "norm_before_pool"})
    EXPECT_FALSE(plain["modules"][1].contains(key)) << key;
  a["key_bias"] = "no";
  a["activation"] = "relu";
  StatusOr<ModelSpec> bad = ParseModelSpec(doc);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("modules[1].key_bias"), std::string::npos)
      << bad.status().message();
  EXPECT_NE(bad.status().message().find("modules[1].activation"), std::string::npos)
      << bad.status().message();
}

TEST(ModelSpec, PretrainedCheckpointOptionsParseAndRoundTrip) {
  Json doc = LoadSource("configs/models/clip-tiny.json");
  doc["modules"][0]["activation"] = "quick_gelu";
  doc["modules"][0]["patch_bias"] = false;
  doc["modules"][0]["norm_eps"] = 1e-6;
  doc["modules"][1]["activation"] = "gelu";
  doc["modules"][1]["pool"] = "eos";
  doc["modules"][1]["eos_token_id"] = 511;
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const ModuleSpec& v = spec->modules[0];
  const ModuleSpec& t = spec->modules[1];
  EXPECT_EQ(v.activation, Activation::kQuickGelu);
  EXPECT_FALSE(v.patch_bias);
  EXPECT_DOUBLE_EQ(v.norm_eps, 1e-6);
  EXPECT_EQ(t.activation, Activation::kGelu);
  EXPECT_EQ(t.pool, Pooling::kCls);
  EXPECT_EQ(t.pool_at, TextPoolAt::kFirstEos);
  EXPECT_EQ(t.eos_token_id, 511);
  EXPECT_DOUBLE_EQ(t.norm_eps, 1e-5);
  Json saved = ToJson(*spec);
  EXPECT_EQ(saved["modules"][0]["activation"], "quick_gelu");
  EXPECT_EQ(saved["modules"][0]["patch_bias"], false);
  EXPECT_EQ(saved["modules"][1]["pool"], "eos");
  EXPECT_EQ(saved["modules"][1]["eos_token_id"], 511);
  EXPECT_FALSE(saved["modules"][1].contains("norm_eps"));  // the default is not written
  StatusOr<ModelSpec> again = ParseModelSpec(saved);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ToJson(*again), saved);
  // The patch-conv bias is counted only when there is one.
  EXPECT_DOUBLE_EQ(EstimateModuleCost(*spec, 0, 1).parameters + 64,
                   EstimateModuleCost(*ParseModelSpec(LoadSource("configs/models/clip-tiny.json")),
                                      0, 1)
                       .parameters);
}

TEST(ModelSpec, PretrainedCheckpointOptionsAreChecked) {
  auto error = [](const std::function<void(Json&)>& edit) {
    Json doc = LoadSource("configs/models/clip-tiny.json");
    edit(doc);
    StatusOr<ModelSpec> spec = ParseModelSpec(doc);
    return spec.ok() ? std::string("accepted") : spec.status().message();
  };
  EXPECT_NE(error([](Json& d) { d["modules"][1]["pool"] = "eos"; })
                .find("modules[1].eos_token_id: missing (required)"),
            std::string::npos);
  EXPECT_NE(error([](Json& d) { d["modules"][1]["eos_token_id"] = 3; })
                .find("modules[1].eos_token_id: only with pool \"eos\""),
            std::string::npos);
  EXPECT_NE(error([](Json& d) {
              d["modules"][1]["pool"] = "eos";
              d["modules"][1]["eos_token_id"] = 512;
            }).find("modules[1].eos_token_id: 512 is not below vocab_size 512"),
            std::string::npos);
  EXPECT_NE(error([](Json& d) { d["modules"][0]["activation"] = "relu"; })
                .find("modules[0].activation"),
            std::string::npos);
  EXPECT_NE(error([](Json& d) { d["modules"][0]["norm_eps"] = 0; })
                .find("modules[0].norm_eps: must be in (0, 1)"),
            std::string::npos);
}

// LLaVA's tower options (interop): an inner hidden state without ln_post, the class token
// prepended and dropped, and the projector's exact GELU.
TEST(ModelSpec, LlavaTowerOptionsParseAndRoundTrip) {
  Json doc = LoadSource("configs/models/llava-small.json");
  const ModuleSpec before = ParseModelSpec(doc)->modules[0];
  EXPECT_EQ(before.feature_layer, 0);
  EXPECT_FALSE(before.drop_cls);
  doc["modules"][0]["feature_layer"] = -2;
  doc["modules"][0]["drop_cls"] = true;
  doc["modules"][1]["activation"] = "gelu";
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const ModuleSpec& v = spec->modules[0];
  EXPECT_EQ(v.feature_layer, -2);
  EXPECT_TRUE(v.drop_cls);
  EXPECT_EQ(v.sequence_tokens(), before.sequence_tokens() + 1);  // the class token inside
  EXPECT_EQ(v.output_tokens(), before.output_tokens());          // dropped at the output
  EXPECT_EQ(spec->modules[1].activation, Activation::kGelu);
  Json saved = ToJson(*spec);
  EXPECT_EQ(saved["modules"][0]["feature_layer"], -2);
  EXPECT_EQ(saved["modules"][0]["drop_cls"], true);
  EXPECT_EQ(saved["modules"][1]["activation"], "gelu");
  EXPECT_EQ(ToJson(*ParseModelSpec(saved)), saved);
  // Defaults are not written.
  Json plain = ToJson(*ParseModelSpec(LoadSource("configs/models/llava-small.json")));
  EXPECT_FALSE(plain["modules"][0].contains("feature_layer"));
  EXPECT_FALSE(plain["modules"][0].contains("drop_cls"));
  EXPECT_FALSE(plain["modules"][1].contains("activation"));
}

TEST(ModelSpec, LlavaTowerOptionsAreChecked) {
  auto error = [](const char* file, const std::function<void(Json&)>& edit) {
    Json doc = LoadSource(file);
    edit(doc);
    StatusOr<ModelSpec> spec = ParseModelSpec(doc);
    return spec.ok() ? std::string("accepted") : spec.status().message();
  };
  const char* llava = "configs/models/llava-small.json";
  EXPECT_NE(error(llava, [](Json& d) { d["modules"][0]["feature_layer"] = -25; })
                .find("modules[0].feature_layer: -25 is not in [-24, 24]"),
            std::string::npos);
  EXPECT_NE(error(llava, [](Json& d) { d["modules"][0]["feature_layer"] = 25; })
                .find("modules[0].feature_layer: 25 is not in [-24, 24]"),
            std::string::npos);
  EXPECT_EQ(error(llava, [](Json& d) { d["modules"][0]["feature_layer"] = 24; }), "accepted");
  EXPECT_NE(
      error("configs/models/clip-tiny.json", [](Json& d) { d["modules"][0]["feature_layer"] = -1; })
          .find("modules[0].output_dim: not applied with feature_layer"),
      std::string::npos);
  EXPECT_NE(
      error("configs/models/clip-tiny.json", [](Json& d) { d["modules"][0]["drop_cls"] = true; })
          .find("modules[0].drop_cls: only with pool \"none\""),
      std::string::npos);
  EXPECT_NE(error(llava,
                  [](Json& d) {
                    d["modules"][1]["projector"] = "linear";
                    d["modules"][1].erase("hidden_dim");
                    d["modules"][1]["activation"] = "gelu";
                  })
                .find("modules[1].activation: a linear projector has no activation"),
            std::string::npos);
}

TEST(ModuleCost, MatchesHandCountForOneBlock) {
  // One ViT block of width 8 on a 4x4 image with 2x2 patches: 4 patches + class token = 5.
  Json doc = Json::parse(R"({
    "name": "toy", "batch_size": 2, "precision": "fp32",
    "modules": [
      {"name": "v", "kind": "vit", "width": 8, "depth": 1, "heads": 2, "image_size": 4,
       "patch_size": 2, "channels": 1, "output_dim": 4},
      {"name": "w", "kind": "vit", "width": 8, "depth": 1, "heads": 2, "image_size": 4,
       "patch_size": 2, "channels": 1, "output_dim": 4},
      {"name": "loss", "kind": "loss", "loss": "contrastive"}],
    "edges": [["v", "loss"], ["w", "loss"]]})");
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ModuleCost c = EstimateModuleCost(*spec, 0, /*samples=*/1);
  const double d = 8, mlp = 32, T = 5;
  // matmuls per token: qkv 3*d*d, out d*d, mlp 2*d*mlp; attention 4*T^2*d;
  // patch embedding 2 * 4 patches * (2*2*1) * d; output projection 2 * d * 4.
  const double flops =
      2 * T * (4 * d * d + 2 * d * mlp) + 4 * T * T * d + 2 * 4 * 4 * d + 2 * d * 4;
  EXPECT_DOUBLE_EQ(c.forward_flops.value(), flops);
  // params: block (4d^2 + 2 d mlp) + biases/norms (7d + 2d + mlp) + final norm 2d
  //         + patch embed 4d + its bias d + positions T*d + class token d + ln_pre 2d
  //         + projection 4d.
  const double params =
      4 * d * d + 2 * d * mlp + 9 * d + mlp + 2 * d + 4 * d + d + T * d + d + 2 * d + d * 4;
  EXPECT_DOUBLE_EQ(c.parameters, params);
  EXPECT_DOUBLE_EQ(c.parameter_bytes.value(), 16 * params);
  ModuleCost two = EstimateModuleCost(*spec, 0, /*samples=*/2);
  EXPECT_DOUBLE_EQ(two.forward_flops.value(), 2 * flops);
}

TEST(ModelSpec, RoundTripIsExact) {
  for (const char* name :
       {"clip-tiny", "clip-b16", "clip-l14", "llava-small", "omni-small", "imagebind-like"}) {
    Json original = LoadSource(std::string("configs/models/") + name + ".json");
    StatusOr<ModelSpec> a = ParseModelSpec(original);
    ASSERT_TRUE(a.ok()) << name << ": " << a.status();
    Json saved = ToJson(*a);
    StatusOr<ModelSpec> b = ParseModelSpec(saved);
    ASSERT_TRUE(b.ok()) << name << ": " << b.status();
    EXPECT_EQ(ToJson(*b), saved) << name;
    // Every field the file states survives with the same value.
    for (auto it = original.begin(); it != original.end(); ++it) {
      if (it.key() == "modules") continue;
      EXPECT_EQ(saved[it.key()], it.value()) << name << " " << it.key();
    }
    for (size_t i = 0; i < original["modules"].size(); ++i) {
      const Json& m = original["modules"][i];
      for (auto it = m.begin(); it != m.end(); ++it)
        EXPECT_EQ(saved["modules"][i][it.key()], it.value()) << name << " " << it.key();
    }
  }
}

}  // namespace
}  // namespace mosaic
