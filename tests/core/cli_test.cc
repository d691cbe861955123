// The `mosaic` binary as a user meets it: help, validate, and bad input giving one clear line
// on stderr and exit code 2.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "common/run_command.h"
#include "test_util.h"

namespace mosaic {
namespace {

using CliRun = testing::CommandResult;

CliRun Mosaic(const std::string& args) {
  return testing::RunCommand(std::string(MOSAIC_BINARY_DIR) + "/src/cli/mosaic " + args);
}

std::string TempFile(const std::string& name, const std::string& contents) {
  std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << contents;
  return path;
}

TEST(Cli, HelpListsCommands) {
  CliRun r = Mosaic("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("validate"), std::string::npos) << r.out;
  CliRun v = Mosaic("validate --help");
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.out.find("MOSAIC_CONFIGS"), std::string::npos) << v.out;
}

TEST(Cli, ValidateZoo) {
  CliRun r = Mosaic("validate " + testing::SourcePath("configs/models/clip-b16.json") + " " +
                    testing::SourcePath("configs/devices/h100-sxm.json") + " --configs " +
                    testing::SourcePath("configs") + " " +
                    testing::SourcePath("configs/plans/clip-b16-split.json"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("clip-b16.json: ok (model)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("clip-b16-split.json: ok (plan)"), std::string::npos) << r.out;
}

TEST(Cli, BrokenSpecIsOneLinePerViolationAndExitTwo) {
  std::string path = TempFile("broken_model.json", R"({"name": "x", "batch_size": 4,
    "modules": [{"name": "v", "kind": "vit", "width": 512, "depth": 2, "heads": 7,
                 "image_size": 32, "patch_size": 8}], "edges": []})");
  CliRun r = Mosaic("validate " + path);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(
      r.out.find("mosaic validate: " + path + ": modules[0].heads: 7 does not divide width 512\n"),
      std::string::npos)
      << r.out;
}

TEST(Cli, SyntaxErrorNamesLineAndColumn) {
  std::string path = TempFile("syntax.json", "{\n  \"name\": \"x\",\n  oops\n}\n");
  CliRun r = Mosaic("validate " + path);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(path + ": line 3, column 3: invalid JSON"), std::string::npos) << r.out;
}

TEST(Cli, UnknownFlagAndMissingFileExitTwo) {
  CliRun a = Mosaic("validate --no-such-flag x.json");
  EXPECT_EQ(a.code, 2) << a.out;
  CliRun b = Mosaic("validate /no/such/file.json");
  EXPECT_EQ(b.code, 2) << b.out;
  CliRun c = Mosaic("frobnicate");
  EXPECT_EQ(c.code, 2) << c.out;
  for (const CliRun* r : {&a, &b, &c}) {
    // one line each
    EXPECT_EQ(std::count(r->out.begin(), r->out.end(), '\n'), 1) << r->out;
  }
}

TEST(Cli, UnknownSpecKind) {
  std::string path = TempFile("unknown.json", R"({"hello": 1})");
  CliRun r = Mosaic("validate " + path);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("not a Mosaic spec"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace mosaic
