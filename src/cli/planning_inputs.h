// What `mosaic plan`, `simulate` and `show` share: resolving --model/--device (a path or a zoo
// name under configs/), picking the profile (--profile, else configs/profiles/<model>-<device>.json
// when it exists, else the synthetic law), and the flags for all of that.
//
//   PlanningFlags flags;
//   AddPlanningFlags(sub, &flags, /*model_required=*/true);
//   MOSAIC_ASSIGN_OR_RETURN(PlanningInputs in, LoadPlanningInputs(flags));
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/device_spec.h"
#include "core/file_io.h"
#include "core/model_spec.h"
#include "core/profile.h"
#include "core/status.h"
#include "perfmodel/calibration.h"
#include "perfmodel/synthetic_profile.h"

namespace mosaic::cli {

struct PlanningFlags {
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

inline bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A path when it names a file or ends in .json; else <configs>/<folder>/<name>.json.
inline StatusOr<std::string> ResolveSpecPath(const std::string& arg, const std::string& configs,
                                             const std::string& folder, const std::string& what) {
  if (arg.empty()) return InvalidArgument("no " + what + " given");
  if (FileExists(arg)) return arg;
  const bool looks_like_path = arg.find('/') != std::string::npos ||
                               (arg.size() > 5 && arg.compare(arg.size() - 5, 5, ".json") == 0);
  if (looks_like_path) return NotFound(what + " file " + arg + " does not exist");
  std::string zoo = configs + "/" + folder + "/" + arg + ".json";
  if (FileExists(zoo)) return zoo;
  return NotFound("no " + what + " \"" + arg + "\": neither a file nor " + zoo +
                  " (zoo names are the files in " + configs + "/" + folder + "/)");
}

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

inline StatusOr<PlanningInputs> LoadPlanningInputs(const PlanningFlags& f) {
  PlanningInputs in;
  MOSAIC_ASSIGN_OR_RETURN(std::string model_path,
                          ResolveSpecPath(f.model, f.configs, "models", "model"));
  MOSAIC_ASSIGN_OR_RETURN(std::string device_path,
                          ResolveSpecPath(f.device, f.configs, "devices", "device"));
  MOSAIC_ASSIGN_OR_RETURN(in.model, LoadModelSpec(model_path));
  MOSAIC_ASSIGN_OR_RETURN(in.device, LoadDeviceSpec(device_path));
  std::string profile_path = f.profile;
  if (profile_path.empty()) {
    std::string by_name = f.configs + "/profiles/" + in.model.name + "-" + in.device.name + ".json";
    if (FileExists(by_name)) profile_path = by_name;
  }
  if (profile_path.empty() || profile_path == "synthetic") {
    in.profile = MakeSyntheticProfile(in.model, in.device, in.model.micro_batch_size());
    in.profile_from = "synthetic scaling law";
  } else {
    if (!FileExists(profile_path))
      return NotFound("profile file " + profile_path + " does not exist");
    MOSAIC_ASSIGN_OR_RETURN(in.profile, LoadProfile(profile_path));
    in.profile_from = profile_path;
  }
  if (!f.calibration.empty()) {
    MOSAIC_ASSIGN_OR_RETURN(Json doc, LoadJsonFile(f.calibration));
    StatusOr<Calibration> cal = Calibration::FromJson(doc);
    if (!cal.ok()) return cal.status().WithPrefix(f.calibration);
    in.calibration = std::move(*cal);
  }
  return in;
}

}  // namespace mosaic::cli
