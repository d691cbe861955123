// `mosaic train --init FOLDER` as a user meets it: fine-tuning a Hugging Face CLIP folder (its
// config.json is the model, its vocab.json + merges.txt the tokenizer), and a spec whose tensors
// do not fit the folder refused with one line naming the tensor and exit code 2.
#include <gtest/gtest.h>

#include <string>

#include "common/run_command.h"
#include "core/file_io.h"
#include "interop/hf_model.h"
#include "interop/safetensors.h"

namespace mosaic::interop {
namespace {

std::string Ref(const std::string& name) {
  return std::string(MOSAIC_INTEROP_REFERENCE_DIR) + "/" + name;
}

testing::CommandResult Train(const std::string& args) {
  return testing::RunCommand(std::string(MOSAIC_BIN) + " train --configs " + MOSAIC_SOURCE_DIR +
                             "/configs " + args);
}

TEST(TrainInit, FineTunesAnHfClipFolderWithItsTokenizer) {
  char tmpl[] = "/tmp/mosaic_init_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string metrics = std::string(tmpl) + "/metrics.json";
  auto r =
      Train("--init " + Ref("clip-finetune") +
            " --steps 3 --batch-size 4 --eval-samples 8 --log-every 1 --metrics-out " + metrics);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("weights from " + Ref("clip-finetune") + " (tokenizer " +
                       Ref("clip-finetune") + ")"),
            std::string::npos)
      << r.out;
  auto m = LoadJsonFile(metrics);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ((*m)["model"], "hf-clip");
}

TEST(TrainInit, FineTunedCheckpointExportsToAFolderTransformersLoads) {
  char tmpl[] = "/tmp/mosaic_init_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto r = Train("--init " + Ref("clip-finetune") +
                 " --steps 2 --batch-size 4 --eval-samples 8 --checkpoint-dir " + dir + "/ckpt");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string ckpt = dir + "/ckpt/step-00000002.ckpt";
  auto e = testing::RunCommand(std::string(MOSAIC_BIN) + " export --model " + Ref("clip-finetune") +
                               " --checkpoint " + ckpt + " -o " + dir + "/hf");
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_NE(e.out.find("step 2"), std::string::npos) << e.out;
  // Fine-tuning moved the weights: the export is not the folder it started from.
  auto before = ReadModelWeights(Ref("clip-finetune"));
  auto after = ReadModelWeights(dir + "/hf");
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_EQ(before->size(), after->size());
  EXPECT_FALSE(
      torch::equal(before->at("visual_projection.weight"), after->at("visual_projection.weight")));
  auto py = testing::RunCommand(std::string(MOSAIC_PYTHON) + " " + MOSAIC_SOURCE_DIR +
                                "/tests/interop/check_export.py " + dir + "/hf");
  EXPECT_EQ(py.code, 0) << py.out;
  EXPECT_NE(py.out.find("export ok: CLIPModel"), std::string::npos) << py.out;
  // The OpenCLIP format of the same checkpoint, and a bad one refused in one line.
  auto oc = testing::RunCommand(std::string(MOSAIC_BIN) + " export --model " +
                                Ref("clip-finetune") + " --checkpoint " + ckpt +
                                " --format open_clip -o " + dir + "/oc.safetensors");
  ASSERT_EQ(oc.code, 0) << oc.out;
  auto oc_tensors = ReadSafetensors(dir + "/oc.safetensors");
  ASSERT_TRUE(oc_tensors.ok());
  EXPECT_TRUE(oc_tensors->count("visual.transformer.resblocks.0.attn.in_proj_weight"));
  auto bad = testing::RunCommand(std::string(MOSAIC_BIN) + " export --model clip-tiny --configs " +
                                 MOSAIC_SOURCE_DIR + "/configs --checkpoint " + ckpt + " -o " +
                                 dir + "/bad");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.out.find("mosaic export: model \"clip-tiny\": module \"vision\": CLIPModel's "
                         "patch embedding has no bias"),
            std::string::npos)
      << bad.out;
}

// A LLaVA folder (no tokenizer files: generated data and its tokenizer) fine-tunes and exports
// back to a folder LlavaForConditionalGeneration loads.
TEST(TrainInit, FineTunesAnHfLlavaFolderAndExportsIt) {
  char tmpl[] = "/tmp/mosaic_init_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto r = Train("--init " + Ref("llava") + " --steps 2 --batch-size 2 --eval-samples 4 " +
                 "--checkpoint-dir " + dir + "/ckpt");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("model hf-llava"), std::string::npos) << r.out;
  auto e =
      testing::RunCommand(std::string(MOSAIC_BIN) + " export --model " + Ref("llava") +
                          " --checkpoint " + dir + "/ckpt/step-00000002.ckpt -o " + dir + "/hf");
  ASSERT_EQ(e.code, 0) << e.out;
  auto before = ReadModelWeights(Ref("llava"));
  auto after = ReadModelWeights(dir + "/hf");
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_EQ(before->size(), after->size());
  EXPECT_FALSE(torch::equal(before->at("multi_modal_projector.linear_1.weight"),
                            after->at("multi_modal_projector.linear_1.weight")));
  // The tower's last block is outside the computation: fine-tuning leaves it as it was.
  EXPECT_TRUE(torch::equal(before->at("vision_tower.encoder.layers.2.mlp.fc1.weight"),
                           after->at("vision_tower.encoder.layers.2.mlp.fc1.weight")));
  auto py = testing::RunCommand(std::string(MOSAIC_PYTHON) + " " + MOSAIC_SOURCE_DIR +
                                "/tests/interop/check_export.py " + dir + "/hf");
  EXPECT_EQ(py.code, 0) << py.out;
  EXPECT_NE(py.out.find("export ok: LlavaForConditionalGeneration"), std::string::npos) << py.out;
}

// A Whisper folder fills the audio module of a spec (vision + text + Whisper-sized audio,
// contrastive): the log says what stays random; fine-tuning moves the encoder but not its
// frozen positions; `mosaic export --format whisper` writes a WhisperEncoder folder that
// transformers loads, strictly, into the original WhisperForConditionalGeneration's encoder.
TEST(TrainInit, FineTunesAWhisperEncoderInsideASpecAndExportsIt) {
  char tmpl[] = "/tmp/mosaic_init_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string spec = dir + "/spec.json";
  ASSERT_TRUE(WriteJsonFile(spec, Json::parse(R"({
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
    "edges": [["vision", "loss"], ["text", "loss"], ["audio", "loss"]]})"))
                  .ok());
  auto r = Train("--model " + spec + " --init " + Ref("whisper") +
                 " --steps 2 --eval-samples 8 --checkpoint-dir " + dir + "/ckpt");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("loaded audio (Whisper encoder); randomly initialised: vision, text, "
                       "loss, audio.proj.weight; 28 tensors of the folder not used"),
            std::string::npos)
      << r.out;
  auto e =
      testing::RunCommand(std::string(MOSAIC_BIN) + " export --model " + spec + " --checkpoint " +
                          dir + "/ckpt/step-00000002.ckpt" + " --format whisper -o " + dir + "/hf");
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_NE(e.out.find("WhisperEncoder folder of module audio"), std::string::npos) << e.out;
  auto before = ReadModelWeights(Ref("whisper"));
  auto after = ReadModelWeights(dir + "/hf");
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_EQ(after->size(), 37u);
  EXPECT_FALSE(torch::equal(before->at("model.encoder.conv1.weight"), after->at("conv1.weight")));
  EXPECT_TRUE(torch::equal(before->at("model.encoder.embed_positions.weight"),
                           after->at("embed_positions.weight")));
  auto py = testing::RunCommand(std::string(MOSAIC_PYTHON) + " " + MOSAIC_SOURCE_DIR +
                                "/tests/interop/check_export.py " + dir + "/hf");
  EXPECT_EQ(py.code, 0) << py.out;
  EXPECT_NE(py.out.find("export ok: WhisperEncoder"), std::string::npos) << py.out;

  // Without a spec there is no model to fill; a spec whose audio module does not fit is named.
  auto alone = Train("--init " + Ref("whisper") + " --steps 1");
  EXPECT_EQ(alone.code, 2) << alone.out;
  EXPECT_NE(alone.out.find("a Whisper folder holds an audio encoder, not a whole model"),
            std::string::npos)
      << alone.out;
  auto clip = Train("--model clip-tiny --init " + Ref("whisper") + " --steps 1");
  EXPECT_EQ(clip.code, 2) << clip.out;
  EXPECT_NE(clip.out.find("model \"clip-tiny\": has no audio module for Whisper's encoder"),
            std::string::npos)
      << clip.out;
}

TEST(TrainInit, MismatchedSpecNamesTheTensorAndExitsTwo) {
  auto spec = LoadHfSpec(Ref("clip-finetune"));
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  spec->modules[0].depth = 1;  // the folder has 2 vision layers
  char tmpl[] = "/tmp/mosaic_init_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/spec.json";
  ASSERT_TRUE(WriteJsonFile(path, ToJson(*spec)).ok());
  auto r = Train("--model " + path + " --init " + Ref("clip-finetune") + " --steps 1");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("extra tensor \"vision_model.encoder.layers.1."), std::string::npos)
      << r.out;
  auto none = Train("--steps 1");
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.out.find("--model or --init is required"), std::string::npos) << none.out;
}

}  // namespace
}  // namespace mosaic::interop
