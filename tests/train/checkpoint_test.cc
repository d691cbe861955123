// Checkpoint files: round trip (model, AdamW moments, step, RNG, data position), damaged
// files refused with the reason and the file name, a failed write leaving the previous file
// intact, and the newest-first listing and pruning.
#include <gtest/gtest.h>
#include <unistd.h>

#include <sys/stat.h>
#include <sys/wait.h>

#include "test_util.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace mosaic::train {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

struct Tiny {
  torch::nn::Sequential net{torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 2)};
  std::unique_ptr<torch::optim::AdamW> opt;
  explicit Tiny(uint64_t seed) {
    torch::manual_seed(seed);
    net =
        torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 2));
    opt = std::move(*MakeAdamW(net->named_parameters(), {}));
  }
  double Step(int i) {
    torch::manual_seed(100 + i);
    auto x = torch::randn({5, 4});
    opt->zero_grad();
    auto loss = net->forward(x).pow(2).mean();
    loss.backward();
    opt->step();
    return loss.item<double>();
  }
};

TrainState StateAt(int64_t step) {
  TrainState s;
  s.step = step;
  s.data = {2, 17};
  s.rng = at::detail::getDefaultCPUGenerator().get_state();
  s.model_name = "tiny";
  s.seed = 5;
  return s;
}

TEST(Checkpoint, RoundTripContinuesBitIdentically) {
  TempDir dir("ckpt");
  Tiny a(1);
  for (int i = 0; i < 3; ++i)
    a.Step(i);
  const std::string path = dir / CheckpointFileName(3);
  ASSERT_TRUE(SaveCheckpoint(path, *a.net, *a.opt, StateAt(3)).ok());
  ASSERT_TRUE(VerifyCheckpointFile(path).ok());

  Tiny b(2);  // other initial weights
  TrainState loaded;
  loaded.model_name = "tiny";
  loaded.seed = 5;
  Status s = LoadCheckpoint(path, *b.net, *b.opt, &loaded);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(loaded.step, 3);
  EXPECT_EQ(loaded.data, (DataPosition{2, 17}));
  EXPECT_TRUE(loaded.rng.defined());
  for (int i = 3; i < 6; ++i)
    EXPECT_EQ(a.Step(i), b.Step(i)) << "step " << i;  // bitwise
  auto pa = a.net->parameters(), pb = b.net->parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_TRUE(torch::equal(pa[i], pb[i]));
}

TEST(Checkpoint, DamagedFilesAreRefusedWithTheReason) {
  TempDir dir("ckpt_bad");
  Tiny a(1);
  a.Step(0);
  const std::string good = dir / "good.ckpt";
  ASSERT_TRUE(SaveCheckpoint(good, *a.net, *a.opt, StateAt(1)).ok());
  const std::string bytes = ReadFile(good);

  auto refused = [&](const std::string& name, const std::string& content,
                     const std::string& reason) {
    const std::string path = dir / name;
    WriteFile(path, content);
    Tiny b(2);
    auto before = b.net->parameters()[0].clone();
    TrainState st;
    st.model_name = "tiny";
    st.seed = 5;
    Status s = LoadCheckpoint(path, *b.net, *b.opt, &st);
    ASSERT_FALSE(s.ok()) << name;
    EXPECT_NE(s.message().find(path), std::string::npos) << s;
    EXPECT_NE(s.message().find(reason), std::string::npos) << s;
    EXPECT_TRUE(torch::equal(before, b.net->parameters()[0])) << "model touched by " << name;
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x40;
  refused("flipped.ckpt", flipped, "checksum mismatch");
  refused("truncated.ckpt", bytes.substr(0, bytes.size() - 100), "truncated");
  refused("header_only.ckpt", bytes.substr(0, 20), "truncated");
  refused("empty.ckpt", "", "truncated");
  std::string magic = bytes;
  magic[0] = 'X';
  refused("magic.ckpt", magic, "not a Mosaic checkpoint");
  std::string version = bytes;
  version[8] = 9;
  refused("version.ckpt", version, "format version 9");
  refused("longer.ckpt", bytes + "junk", "corrupt");

  // Intact but of another model or seed.
  Tiny b(2);
  TrainState other;
  other.model_name = "clip-b16";
  other.seed = 5;
  Status s = LoadCheckpoint(good, *b.net, *b.opt, &other);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model 'tiny'"), std::string::npos) << s;
  other.model_name = "tiny";
  other.seed = 6;
  EXPECT_FALSE(LoadCheckpoint(good, *b.net, *b.opt, &other).ok());
}

TEST(Checkpoint, AFailedWriteKeepsThePreviousFile) {
  TempDir dir("ckpt_fail");
  Tiny a(1);
  a.Step(0);
  const std::string path = dir / CheckpointFileName(1);
  ASSERT_TRUE(SaveCheckpoint(path, *a.net, *a.opt, StateAt(1)).ok());
  const std::string before = ReadFile(path);
  // Block the temporary file's name with a folder: the write fails before the rename.
  ASSERT_EQ(::mkdir((path + ".tmp." + std::to_string(::getpid())).c_str(), 0755), 0);
  a.Step(1);
  Status s = SaveCheckpoint(path, *a.net, *a.opt, StateAt(2));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  EXPECT_EQ(ReadFile(path), before);
  EXPECT_TRUE(VerifyCheckpointFile(path).ok());
}

TEST(Checkpoint, ListedNewestFirstAndPruned) {
  TempDir dir("ckpt_list");
  Tiny a(1);
  for (int64_t step : {5, 100, 20}) {
    ASSERT_TRUE(SaveCheckpoint(dir / CheckpointFileName(step), *a.net, *a.opt, StateAt(step)).ok());
  }
  WriteFile(dir / "notes.txt", "not a checkpoint");
  WriteFile(dir / "step-7.ckpt", "wrong name pattern");
  auto all = ListCheckpoints(dir.path());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0], dir / "step-00000100.ckpt");
  EXPECT_EQ(all[1], dir / "step-00000020.ckpt");
  EXPECT_EQ(all[2], dir / "step-00000005.ckpt");
  PruneCheckpoints(dir.path(), 2);
  all = ListCheckpoints(dir.path());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1], dir / "step-00000020.ckpt");
  EXPECT_TRUE(ListCheckpoints(dir / "missing").empty());
}

// The crash tests' hook: called once with the temporary half written; the final name does not
// exist yet and the temporary is not a checkpoint anyone lists.
TEST(Checkpoint, MidwayHookSeesAHalfWrittenTemporary) {
  TempDir dir("ckpt_midway");
  Tiny a(1);
  const std::string path = dir / CheckpointFileName(3);
  int calls = 0;
  std::string tmp;
  size_t tmp_size = 0;
  ASSERT_TRUE(SaveCheckpoint(path, *a.net, *a.opt, StateAt(3), [&](const std::string& t) {
                ++calls;
                tmp = t;
                tmp_size = ReadFile(t).size();
                EXPECT_TRUE(ReadFile(path).empty());
                EXPECT_TRUE(ListCheckpoints(dir.path()).empty());
              }).ok());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(tmp, path + ".tmp." + std::to_string(::getpid()));
  const size_t full = ReadFile(path).size();
  EXPECT_GT(tmp_size, 0u);
  EXPECT_LT(tmp_size, full);
  EXPECT_GE(tmp_size, full / 2);
  EXPECT_TRUE(VerifyCheckpointFile(path).ok());
}

// Temporaries of killed writers are removed; a live writer's (this process's) and other files
// stay.
TEST(Checkpoint, StaleTemporariesOfDeadWritersAreRemoved) {
  TempDir dir("ckpt_stale");
  // A pid that surely is not running: a child that has exited and been reaped.
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_GT(dead, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(dead, &status, 0), dead);
  const std::string stale = dir / (CheckpointFileName(4) + ".tmp." + std::to_string(dead));
  const std::string live = dir / (CheckpointFileName(4) + ".tmp." + std::to_string(::getpid()));
  WriteFile(stale, "half a checkpoint");
  WriteFile(live, "being written");
  WriteFile(dir / "notes.tmp.1", "not ours");
  EXPECT_EQ(RemoveStaleCheckpointTemporaries(dir.path()), 1);
  EXPECT_FALSE(PathExists(stale));
  EXPECT_TRUE(PathExists(live));
  EXPECT_TRUE(PathExists(dir / "notes.tmp.1"));
  EXPECT_EQ(RemoveStaleCheckpointTemporaries(dir / "missing"), 0);
}

}  // namespace
}  // namespace mosaic::train
