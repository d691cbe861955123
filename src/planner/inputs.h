// What planning needs, loaded from names or files: the model and device specs (a path, or a zoo
// name under configs/), the profile (a path, configs/profiles/<model>-<device>.json when it
// exists, or the synthetic scaling law) and optional calibration factors; and the simulation of
// one plan against them. Shared by `mosaic plan/simulate/show/bench` and `mosaic train --plan`.
//
//   PlanningRequest req;  req.model = "clip-b16";  req.device = "h100-sxm";
//   MOSAIC_ASSIGN_OR_RETURN(PlanningInputs in, LoadPlanningInputs(req));
//   MOSAIC_ASSIGN_OR_RETURN(PlanSimulation s, SimulatePlan(plan, in));
//   s.result.step;   // predicted step time
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/plan.h"
#include "core/profile.h"
#include "core/status.h"
#include "core/task_graph.h"
#include "perfmodel/calibration.h"
#include "sim/simulator.h"

namespace mosaic {

struct PlanningRequest {
  std::string model;
  std::string device = "h100-sxm";
  std::string profile;  // "", a path, or "synthetic"
  std::string configs = "configs";
  std::string calibration;  // JSON written by the engine (perfmodel/calibration.h), optional
  int world_size = 1;
};

struct PlanningInputs {
  ModelSpec model;
  DeviceSpec device;
  Profile profile;
  std::string profile_from;  // the file, or "synthetic scaling law"
  std::optional<Calibration> calibration;
};

bool FileExists(const std::string& path);

// One warning line when `inputs` plans from a measured profile taken with other fused kernels
// than `run_kernels` (Profile::fused_kernels' names; models::FusedKernelsInUse()), so its task
// times are not this run's; "" when they agree or the profile is synthetic.
std::string ProfileKernelsWarning(const PlanningInputs& inputs, const std::string& run_kernels);

// A path when it names a file or ends in .json; else <configs>/<folder>/<name>.json.
StatusOr<std::string> ResolveSpecPath(const std::string& arg, const std::string& configs,
                                      const std::string& folder, const std::string& what);

StatusOr<PlanningInputs> LoadPlanningInputs(const PlanningRequest& request);

// The profile for `model` on `device` as LoadPlanningInputs picks it (`profile` as in
// PlanningRequest); `from` says which.
StatusOr<Profile> PickProfile(const ModelSpec& model, const DeviceSpec& device,
                              const std::string& profile, const std::string& configs,
                              std::string* from);

struct PlanSimulation {
  PlanningInputs inputs;
  Plan plan;
  TaskGraph graph;
  SimProgram program;
  SimResult result;
};

// Validates `plan` against the inputs and simulates one step of it.
StatusOr<PlanSimulation> SimulatePlan(const Plan& plan, const PlanningInputs& inputs,
                                      int world_size = 1);

// `plan` with, in every phase that has two or more shared partitions, the critical one at
// stream priority 1 and the others at 0 (Note [stream priorities]): the partition whose tasks
// take the longest back to back on the whole GPU. A structural choice, not the simulated
// step's: the fluid model rates most raised streams about alike (the Note), so the benchmark
// measures this one on the hardware whatever the model predicts. `raised` gets the ids, phase
// order. NotFound when no phase has two shared partitions.
StatusOr<Plan> WithPrioritizedStream(const Plan& plan, const PlanningInputs& inputs,
                                     std::vector<std::string>* raised);

// "1.25 GiB".
std::string GibText(double bytes);
// Weights, gradients and AdamW state of every module (core/cost.h: 16 bytes per parameter).
double StaticStateBytes(const ModelSpec& model);

// Whether a simulated plan fits its device: static state plus the simulated activation peak
// against `fraction` of the device's memory. FailedPrecondition with the numbers when not (what
// `mosaic train --plan` says before anything runs on the GPU); Ok on devices without a memory
// size.
struct PlanMemory {
  double static_bytes = 0, activation_bytes = 0, budget_bytes = 0;
  bool fits = true;
};
PlanMemory EstimatePlanMemory(const PlanSimulation& s, double fraction = 0.9);
Status CheckPlanMemory(const PlanSimulation& s, double fraction = 0.9);

}  // namespace mosaic
