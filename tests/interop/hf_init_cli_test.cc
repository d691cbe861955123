// `mosaic train --init FOLDER` as a user meets it: fine-tuning a Hugging Face CLIP folder (its
// config.json is the model, its vocab.json + merges.txt the tokenizer), and a spec whose tensors
// do not fit the folder refused with one line naming the tensor and exit code 2.
#include <gtest/gtest.h>

#include <string>

#include "common/run_command.h"
#include "core/file_io.h"
#include "interop/hf_model.h"

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
  auto r = Train("--init " + Ref("clip-finetune") +
                 " --steps 3 --batch-size 4 --eval-samples 8 --log-every 1 --metrics-out " +
                 metrics);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("weights from " + Ref("clip-finetune") + " (tokenizer " +
                       Ref("clip-finetune") + ")"),
            std::string::npos)
      << r.out;
  auto m = LoadJsonFile(metrics);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ((*m)["model"], "hf-clip");
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
