// `mosaic plan --gpus N` as a user meets it: a ranked table of layouts whose every line says
// its figures are simulated, the chosen layout's plan(s) written, bad GPU counts one line and
// exit code 2.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <sstream>
#include <string>

#include "common/run_command.h"
#include "core/file_io.h"
#include "core/plan.h"

namespace mosaic {
namespace {

using CliRun = testing::CommandResult;

CliRun Mosaic(const std::string& args) {
  return testing::RunCommand(std::string(MOSAIC_BINARY_DIR) + "/src/cli/mosaic " + args +
                             " --configs " + std::string(MOSAIC_SOURCE_DIR) + "/configs");
}

std::string Tmp(const std::string& name) {
  return ::testing::TempDir() + name;
}

TEST(CliMultiGpu, TableOfSimulatedLayoutsAndThePlan) {
  const std::string plan = Tmp("mgpu.plan.json");
  const std::string layouts = Tmp("mgpu.layouts.json");
  CliRun r =
      Mosaic("plan -m clip-b16 -p synthetic --gpus 64 -o " + plan + " --shortlist " + layouts);
  ASSERT_EQ(r.code, 0) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  int rows = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line.rfind("rank ", 0) == 0) continue;  // blank, column header
    EXPECT_NE(line.find("simulated"), std::string::npos) << line;
    if (isdigit(static_cast<unsigned char>(line[0])) &&
        line.compare(line.size() - 11, 11, "  simulated") == 0)
      ++rows;
  }
  EXPECT_GE(rows, 3) << r.out;  // colocated and at least two disaggregated splits
  EXPECT_NE(r.out.find("colocated data-parallel"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("disaggregated enc|text"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("64 all"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("scaling efficiency vs 1 GPU"), std::string::npos) << r.out;
  StatusOr<mosaic::Plan> p = LoadPlan(plan);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->model, "clip-b16");  // colocated: the full model's single-GPU plan
  StatusOr<Json> doc = LoadJsonFile(layouts);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ((*doc)["gpus"], 64);
  EXPECT_EQ((*doc)["figures"], "simulated");
  ASSERT_EQ(static_cast<int>((*doc)["layouts"].size()), rows);
  EXPECT_EQ((*doc)["layouts"][0]["kind"], "colocated");
  EXPECT_EQ((*doc)["layouts"][0]["groups"][0]["gpus"], 64);
}

TEST(CliMultiGpu, BadGpuCountsAreOneLineAndExitTwo) {
  for (const char* n : {"0", "-4"}) {
    CliRun r =
        Mosaic(std::string("plan -m clip-b16 -p synthetic --gpus ") + n + " -o " + Tmp("x.json"));
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_EQ(r.out, std::string("mosaic plan: --gpus must be at least 1 (got ") + n + ")\n");
  }
  CliRun r = Mosaic("plan -m clip-b16 -p synthetic --gpus 8 --world-size 8 -o " + Tmp("x.json"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--gpus and --world-size"), std::string::npos) << r.out;
  r = Mosaic("plan -m clip-b16 -p synthetic --gpus 8 --link-bandwidth-scale 9 -o " + Tmp("x.json"));
  EXPECT_EQ(r.code, 2) << r.out;
  r = Mosaic("plan -m clip-b16 -p synthetic --gpus 8 --exhaustive -o " + Tmp("x.json"));
  EXPECT_EQ(r.code, 2) << r.out;
  r = Mosaic("plan -m clip-b16 -p synthetic --gpus lots -o " + Tmp("x.json"));
  EXPECT_EQ(r.code, 2) << r.out;
}

}  // namespace
}  // namespace mosaic
