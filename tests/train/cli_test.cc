// `mosaic train` as a user meets it: help with env variables, bad input as one line and exit
// code 2, a short run writing its metrics, and a resumed run continuing from the checkpoint.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>

#include "common/run_command.h"
#include "core/file_io.h"
#include "test_util.h"

namespace mosaic::train {
namespace {

using testing::TempDir;

using CliRun = mosaic::testing::CommandResult;

CliRun Train(const std::string& args) {
  return mosaic::testing::RunCommand(std::string(MOSAIC_BIN) + " train --configs " +
                                     testing::SourceDir() + "/configs " + args);
}

int Lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

TEST(TrainCli, HelpNamesFlagsAndEnvironment) {
  CliRun r = Train("--help");
  EXPECT_EQ(r.code, 0);
  for (const char* word : {"--steps", "MOSAIC_STEPS", "--on-bad-data", "MOSAIC_DATA",
                           "--checkpoint-every", "--resume", "--log-every", "--device"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
  }
}

TEST(TrainCli, BadInputIsOneLineAndExitTwo) {
  for (const std::string& args :
       {std::string("--model no-such-model"), std::string("--model clip-tiny --device tpu"),
        std::string("--model clip-tiny --data /no/such/folder"),
        std::string("--model clip-tiny --resume")}) {
    CliRun r = Train(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_EQ(Lines(r.out), 1) << args << "\n" << r.out;
    EXPECT_EQ(r.out.rfind("mosaic train: ", 0), 0u) << r.out;
  }
  CliRun bad = Train("--model clip-tiny --on-bad-data maybe");
  EXPECT_EQ(bad.code, 2) << bad.out;
}

// Commands that measure or train for minutes check their output paths first: a missing folder
// fails at once, as one line naming the path, before any work (bench and profile would otherwise
// complain that this machine has no GPU; train would train).
TEST(TrainCli, UnwritableOutputFailsBeforeTheWork) {
  const std::string bin = std::string(MOSAIC_BIN);
  const std::string configs = " --configs " + testing::SourceDir() + "/configs";
  const std::string missing = "/no/such/folder/out.json";
  for (const std::string& cmd :
       {bin + " train" + configs + " --model clip-tiny --steps 50 --metrics-out " + missing,
        bin + " bench -m clip-b16 -o " + missing,
        bin + " bench -m clip-b16 --trace-out " + missing,
        bin + " profile -m clip-b16 -o " + missing}) {
    CliRun r = mosaic::testing::RunCommand(cmd);
    EXPECT_EQ(r.code, 2) << cmd << "\n" << r.out;
    EXPECT_EQ(Lines(r.out), 1) << cmd << "\n" << r.out;
    EXPECT_NE(r.out.find(missing + ": cannot create (/no/such/folder: No such file or directory"),
              std::string::npos)
        << cmd << "\n" << r.out;
  }
  // A folder where a file should go.
  CliRun dir = mosaic::testing::RunCommand(bin + " bench -m clip-b16 -o " + ::testing::TempDir());
  EXPECT_EQ(dir.code, 2) << dir.out;
  EXPECT_NE(dir.out.find("cannot create (it is a folder)"), std::string::npos) << dir.out;
}

TEST(TrainCli, ShortRunWritesMetricsAndResumes) {
  TempDir dir("train_cli");
  const std::string common =
      "--model clip-tiny --batch-size 8 --eval-samples 16 --log-every 2 "
      "--checkpoint-dir " +
      dir / "ckpt" + " --checkpoint-every 2 ";
  CliRun a = Train(common + "--steps 4 --metrics-out " + dir / "a.json");
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_NE(a.out.find("step 4/4"), std::string::npos) << a.out;  // plain lines, not a bar
  EXPECT_NE(a.out.find("image->text retrieval top-1"), std::string::npos) << a.out;
  auto m = LoadJsonFile(dir / "a.json");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ((*m)["losses"].size(), 4u);

  CliRun b = Train(common + "--steps 6 --resume --metrics-out " + dir / "b.json");
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_NE(b.out.find("resuming from"), std::string::npos) << b.out;
  auto mb = LoadJsonFile(dir / "b.json");
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ((*mb)["first_step"], 4);
  EXPECT_EQ((*mb)["losses"].size(), 2u);
}

}  // namespace
}  // namespace mosaic::train
