// A plan the device cannot hold is refused with the numbers before anything runs
// (planner/inputs.h CheckPlanMemory; `mosaic train --plan` calls it on the GPU, `mosaic
// simulate` prints it).
#include <gtest/gtest.h>

#include "planner/inputs.h"
#include "planner/planner.h"
#include "zoo_inputs.h"

namespace mosaic {
namespace {

using testing::LoadZooInputs;

StatusOr<PlanSimulation> Simulate(const PlanningInputs& in) {
  PlannerOptions po;
  po.top_k = 1;
  po.memory_budget_bytes = 1e15;  // plan as if memory were unlimited; the check comes after
  MOSAIC_ASSIGN_OR_RETURN(PlanReport r, PlanStep(in.model, in.device, in.profile, po));
  return SimulatePlan(r.plans[0].plan, in);
}

TEST(PlanMemory, AFittingPlanPasses) {
  StatusOr<PlanSimulation> s = Simulate(LoadZooInputs("clip-b16"));
  ASSERT_TRUE(s.ok()) << s.status();
  const PlanMemory m = EstimatePlanMemory(*s);
  EXPECT_TRUE(m.fits);
  // clip-b16: ~150M parameters at 16 bytes each (fp32 weights, gradients, AdamW moments).
  EXPECT_NEAR(m.static_bytes / 16, 149.6e6, 1e6);
  EXPECT_TRUE(CheckPlanMemory(*s).ok());
}

TEST(PlanMemory, APlanOverTheDeviceIsRefusedWithTheNumbers) {
  PlanningInputs in = LoadZooInputs("llava-small");
  in.model.batch_size = 512;  // activations far beyond 80 GB in one micro-batch
  in.model.micro_batches = 1;
  StatusOr<PlanSimulation> s = Simulate(in);
  ASSERT_TRUE(s.ok()) << s.status();
  const PlanMemory m = EstimatePlanMemory(*s);
  EXPECT_FALSE(m.fits);
  EXPECT_GT(m.static_bytes + m.activation_bytes, m.budget_bytes);
  const Status st = CheckPlanMemory(*s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("does not fit on h100-sxm"), std::string::npos) << st;
  EXPECT_NE(st.message().find("GiB of weights, gradients and AdamW state"), std::string::npos);
  EXPECT_NE(st.message().find("90% of the device's"), std::string::npos);
}

}  // namespace
}  // namespace mosaic
