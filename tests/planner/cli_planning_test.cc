// `mosaic plan`, `simulate` and `show` as a user meets them: a plan written and re-simulated to
// the same prediction, SVG and Perfetto outputs, and bad input giving one clear line and exit
// code 2.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/file_io.h"
#include "core/plan.h"

namespace mosaic {
namespace {

struct CliRun {
  int code = -1;
  std::string out;  // stdout and stderr together
};

CliRun Mosaic(const std::string& args) {
  std::string cmd = std::string(MOSAIC_BINARY_DIR) + "/src/cli/mosaic " + args + " --configs " +
                    MOSAIC_SOURCE_DIR + "/configs 2>&1";
  CliRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0)
    r.out.append(buf.data(), n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Tmp(const std::string& name) {
  return ::testing::TempDir() + name;
}

TEST(CliPlanning, PlanSimulateShowRoundTrip) {
  const std::string plan = Tmp("clip-b16.plan.json");
  CliRun p = Mosaic("plan -m clip-b16 -d h100-sxm --profile synthetic -o " + plan);
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_NE(p.out.find("rank"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("baselines: temporal"), std::string::npos) << p.out;
  Plan written = *LoadPlan(plan);
  ASSERT_TRUE(written.predicted_step.has_value());

  const std::string trace = Tmp("clip-b16.trace.json"), svg = Tmp("clip-b16.svg");
  CliRun s = Mosaic("simulate " + plan + " --profile synthetic --trace " + trace + " --svg " + svg);
  ASSERT_EQ(s.code, 0) << s.out;
  std::ostringstream expect;
  expect.precision(3);
  expect << std::fixed << "predicted step " << written.predicted_step->value() / 1000 << " ms";
  EXPECT_NE(s.out.find(expect.str()), std::string::npos) << s.out;
  Json doc = *LoadJsonFile(trace);
  EXPECT_TRUE(doc["traceEvents"].is_array());

  const std::string svg2 = Tmp("from-trace.svg");
  CliRun sh = Mosaic("show " + trace + " -o " + svg2);
  ASSERT_EQ(sh.code, 0) << sh.out;
  std::string text = *ReadTextFile(svg2);
  EXPECT_NE(text.find("<svg"), std::string::npos);
  EXPECT_NE(text.find("vision"), std::string::npos);
}

TEST(CliPlanning, BadInputIsOneLineAndExitTwo) {
  CliRun r = Mosaic("plan -m no-such-model -o " + Tmp("x.json"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("mosaic plan: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no-such-model"), std::string::npos) << r.out;

  r = Mosaic("plan -m llava-small --memory-budget-gib 4 -o " + Tmp("x.json"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("weights, gradients and AdamW state need"), std::string::npos) << r.out;

  r = Mosaic("plan -m clip-b16 --micro-batches 3 -o " + Tmp("x.json"));
  EXPECT_EQ(r.code, 2) << r.out;

  const std::string junk = Tmp("junk.json");
  std::ofstream(junk) << "{\"hello\": 1}\n";
  r = Mosaic("show " + junk);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("neither a plan"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace mosaic
