// `mosaic plan`, `simulate` and `show` as a user meets them: a plan written and re-simulated to
// the same prediction, SVG and Perfetto outputs, and bad input giving one clear line and exit
// code 2.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/run_command.h"
#include "core/device_spec.h"
#include "core/file_io.h"
#include "core/model_spec.h"
#include "core/plan.h"
#include "core/profile.h"
#include "perfmodel/perf_model.h"
#include "perfmodel/synthetic_profile.h"

namespace mosaic {
namespace {

using CliRun = testing::CommandResult;

CliRun Mosaic(const std::string& args, const std::string& configs = "") {
  return testing::RunCommand(
      std::string(MOSAIC_BINARY_DIR) + "/src/cli/mosaic " + args + " --configs " +
      (configs.empty() ? std::string(MOSAIC_SOURCE_DIR) + "/configs" : configs));
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

TEST(CliPlanning, ARealProfileInTheConfigsIsUsedByDefault) {
  const std::string configs = Tmp("configs-with-profile");
  const std::string src = std::string(MOSAIC_SOURCE_DIR) + "/configs";
  ASSERT_EQ(std::system(("rm -rf " + configs + " && mkdir -p " + configs + "/models " + configs +
                         "/devices " + configs + "/profiles && cp " + src +
                         "/models/clip-b16.json " + configs + "/models/ && cp " + src +
                         "/devices/h100-sxm.json " + configs + "/devices/")
                            .c_str()),
            0);
  ModelSpec model = *LoadModelSpec(configs + "/models/clip-b16.json");
  DeviceSpec device = *LoadDeviceSpec(configs + "/devices/h100-sxm.json");
  Profile p = MakeSyntheticProfile(model, device, model.micro_batch_size());
  p.source = "measured";
  for (auto& e : p.entries)
    for (auto& pt : e.points)
      pt.time = pt.time * 2.0;  // a slower "GPU"
  const std::string path = configs + "/profiles/clip-b16-h100-sxm.json";
  ASSERT_TRUE(WriteJsonFile(path, ToJson(p)).ok());
  CliRun r = Mosaic("plan -m clip-b16 -o " + Tmp("p.json"), configs);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("profile: " + path), std::string::npos) << r.out;
  CliRun s = Mosaic("plan -m clip-b16 --profile synthetic -o " + Tmp("p2.json"), configs);
  ASSERT_EQ(s.code, 0) << s.out;
  EXPECT_NE(s.out.find("profile: synthetic"), std::string::npos) << s.out;
  // Twice the task times: about twice the predicted tasks (contention depends on rates); the
  // executor's per-step work (Note [executor overhead]) depends on the parameters, not the
  // profile, and stays.
  const StepOverheadModel o =
      PerfModel::Build(model, device, p, model.micro_batch_size())->step_overhead();
  const double overhead = o.before_us + o.after_us;
  ASSERT_GT(overhead, 1000);  // h100-sxm carries executor constants: ~2.4 + 2.4 ms on clip-b16
  const double measured = LoadPlan(Tmp("p.json"))->predicted_step->value() - overhead;
  const double synthetic = LoadPlan(Tmp("p2.json"))->predicted_step->value() - overhead;
  EXPECT_NEAR(measured, 2 * synthetic, 0.05 * measured);
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
