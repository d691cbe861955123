// The flags of `mosaic plan`, `simulate`, `show` and `bench` for planner/inputs.h: --model,
// --device, --profile, --configs, --calibration, --world-size.
//
//   PlanningFlags flags;
//   AddPlanningFlags(sub, &flags, /*model_required=*/true);
//   MOSAIC_ASSIGN_OR_RETURN(PlanningInputs in, LoadPlanningInputs(flags));
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "planner/inputs.h"

namespace mosaic::cli {

using PlanningFlags = PlanningRequest;

inline void AddPlanningFlags(CLI::App* sub, PlanningFlags* f, bool model_required) {
  auto* model = sub->add_option("--model,-m", f->model,
                                "Model: a spec file or a zoo name (configs/models/<name>.json)")
                    ->envname("MOSAIC_MODEL");
  if (model_required) model->required();
  sub->add_option("--device,-d", f->device,
                  "Device: a spec file or a zoo name (configs/devices/<name>.json)")
      ->envname("MOSAIC_DEVICE")
      ->capture_default_str();
  sub->add_option("--profile,-p", f->profile,
                  "Profile file, or \"synthetic\"; default configs/profiles/<model>-<device>.json "
                  "when it exists, else the synthetic scaling law")
      ->envname("MOSAIC_PROFILE");
  sub->add_option("--configs", f->configs, "Folder holding models/, devices/ and profiles/")
      ->envname("MOSAIC_CONFIGS")
      ->capture_default_str();
  sub->add_option("--calibration", f->calibration,
                  "Calibration factors measured on the GPU (JSON), folded into the model")
      ->envname("MOSAIC_CALIBRATION");
  sub->add_option("--world-size", f->world_size,
                  "Data-parallel GPUs: each optimizer task also waits for its gradient all-reduce")
      ->envname("MOSAIC_WORLD_SIZE")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
}

}  // namespace mosaic::cli
