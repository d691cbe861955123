#include "planner/inputs.h"

#include <sys/stat.h>

#include "core/file_io.h"
#include "perfmodel/perf_model.h"
#include "perfmodel/synthetic_profile.h"

namespace mosaic {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

StatusOr<std::string> ResolveSpecPath(const std::string& arg, const std::string& configs,
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

StatusOr<Profile> PickProfile(const ModelSpec& model, const DeviceSpec& device,
                              const std::string& profile, const std::string& configs,
                              std::string* from) {
  std::string path = profile;
  if (path.empty()) {
    std::string by_name = configs + "/profiles/" + model.name + "-" + device.name + ".json";
    if (FileExists(by_name)) path = by_name;
  }
  if (path.empty() || path == "synthetic") {
    *from = "synthetic scaling law";
    return MakeSyntheticProfile(model, device, model.micro_batch_size());
  }
  if (!FileExists(path)) return NotFound("profile file " + path + " does not exist");
  *from = path;
  return LoadProfile(path);
}

StatusOr<PlanningInputs> LoadPlanningInputs(const PlanningRequest& f) {
  PlanningInputs in;
  MOSAIC_ASSIGN_OR_RETURN(std::string model_path,
                          ResolveSpecPath(f.model, f.configs, "models", "model"));
  MOSAIC_ASSIGN_OR_RETURN(std::string device_path,
                          ResolveSpecPath(f.device, f.configs, "devices", "device"));
  MOSAIC_ASSIGN_OR_RETURN(in.model, LoadModelSpec(model_path));
  MOSAIC_ASSIGN_OR_RETURN(in.device, LoadDeviceSpec(device_path));
  MOSAIC_ASSIGN_OR_RETURN(in.profile,
                          PickProfile(in.model, in.device, f.profile, f.configs, &in.profile_from));
  if (!f.calibration.empty()) {
    MOSAIC_ASSIGN_OR_RETURN(Json doc, LoadJsonFile(f.calibration));
    StatusOr<Calibration> cal = Calibration::FromJson(doc);
    if (!cal.ok()) return cal.status().WithPrefix(f.calibration);
    in.calibration = std::move(*cal);
  }
  return in;
}

StatusOr<PlanSimulation> SimulatePlan(const Plan& plan, const PlanningInputs& inputs,
                                      int world_size) {
  PlanSimulation s;
  s.plan = plan;
  s.inputs = inputs;
  MOSAIC_RETURN_IF_ERROR(ValidatePlan(s.plan, s.inputs.model, s.inputs.device));
  MOSAIC_ASSIGN_OR_RETURN(s.graph, BuildTaskGraph(s.inputs.model, s.plan));
  MOSAIC_ASSIGN_OR_RETURN(s.program, CompilePlan(s.plan, s.graph, s.inputs.device));
  PerfModelOptions options;
  options.world_size = world_size;
  MOSAIC_ASSIGN_OR_RETURN(
      PerfModel pm, PerfModel::Build(s.inputs.model, s.inputs.device, s.inputs.profile,
                                     s.inputs.model.batch_size / s.plan.micro_batches, options,
                                     s.inputs.calibration ? &*s.inputs.calibration : nullptr));
  Simulator sim(s.graph, pm);
  MOSAIC_ASSIGN_OR_RETURN(s.result, sim.Run(s.program));
  return s;
}

}  // namespace mosaic
