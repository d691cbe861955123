// Zoo inputs for planner tests: a zoo model and device from configs/ with a synthetic profile.
//
//   Zoo z = LoadZoo("clip-b16");  // h100-sxm by default
#pragma once

#include <string>

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/profile.h"
#include "perfmodel/synthetic_profile.h"
#include "planner/inputs.h"

namespace mosaic::testing {

struct Zoo {
  ModelSpec model;
  DeviceSpec device;
  Profile profile;
};

inline Zoo LoadZoo(const std::string& model, const std::string& device = "h100-sxm") {
  Zoo z;
  const std::string root = MOSAIC_SOURCE_DIR;
  z.model = *LoadModelSpec(root + "/configs/models/" + model + ".json");
  z.device = *LoadDeviceSpec(root + "/configs/devices/" + device + ".json");
  z.profile = MakeSyntheticProfile(z.model, z.device, z.model.micro_batch_size());
  return z;
}

// The planning inputs `mosaic plan` would load for a zoo model: its committed measured profile
// when configs/profiles has one, else the synthetic law.
inline PlanningInputs LoadZooInputs(const std::string& model) {
  PlanningRequest req;
  req.model = model;
  req.configs = std::string(MOSAIC_SOURCE_DIR) + "/configs";
  return *LoadPlanningInputs(req);
}

}  // namespace mosaic::testing
