#include "planner/inputs.h"

#include <sys/stat.h>

#include <cstdio>

#include "core/cost.h"
#include "core/file_io.h"
#include "perfmodel/perf_model.h"
#include "perfmodel/synthetic_profile.h"

namespace mosaic {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ProfileKernelsWarning(const PlanningInputs& inputs, const std::string& run_kernels) {
  const Profile& p = inputs.profile;
  if (p.source != "measured" || p.fused_kernels == run_kernels) return "";
  return "warning: " + inputs.profile_from + " was measured with fused kernels \"" +
         p.fused_kernels + "\" and this run uses \"" + run_kernels +
         "\": its task times are not this run's (re-measure it with `mosaic profile`)";
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

namespace {

// The performance model a plan is simulated with (its micro-batch size, the inputs'
// calibration).
StatusOr<PerfModel> PlanPerfModel(const Plan& plan, const PlanningInputs& inputs, int world_size) {
  PerfModelOptions options;
  options.world_size = world_size;
  return PerfModel::Build(inputs.model, inputs.device, inputs.profile,
                          inputs.model.batch_size / plan.micro_batches, options,
                          inputs.calibration ? &*inputs.calibration : nullptr);
}

}  // namespace

StatusOr<PlanSimulation> SimulatePlan(const Plan& plan, const PlanningInputs& inputs,
                                      int world_size) {
  PlanSimulation s;
  s.plan = plan;
  s.inputs = inputs;
  MOSAIC_RETURN_IF_ERROR(ValidatePlan(s.plan, s.inputs.model, s.inputs.device));
  MOSAIC_ASSIGN_OR_RETURN(s.graph, BuildTaskGraph(s.inputs.model, s.plan));
  MOSAIC_ASSIGN_OR_RETURN(s.program, CompilePlan(s.plan, s.graph, s.inputs.device));
  MOSAIC_ASSIGN_OR_RETURN(PerfModel pm, PlanPerfModel(s.plan, s.inputs, world_size));
  Simulator sim(s.graph, pm);
  MOSAIC_ASSIGN_OR_RETURN(s.result, sim.Run(s.program));
  return s;
}

StatusOr<Plan> WithPrioritizedStream(const Plan& plan, const PlanningInputs& inputs,
                                     std::vector<std::string>* raised) {
  raised->clear();
  MOSAIC_RETURN_IF_ERROR(ValidatePlan(plan, inputs.model, inputs.device));
  MOSAIC_ASSIGN_OR_RETURN(PerfModel pm, PlanPerfModel(plan, inputs, 1));
  const double all_sms = inputs.device.sm_count.value();
  Plan out = plan;
  for (PhaseSpec& ph : out.phases) {
    int shared = 0;
    for (const PartitionSpec& part : ph.partitions)
      shared += part.kind == PartitionKind::kShared;
    if (shared < 2) continue;
    int best = -1;
    double best_us = -1;
    for (size_t j = 0; j < ph.partitions.size(); ++j) {
      const PartitionSpec& part = ph.partitions[j];
      if (part.kind != PartitionKind::kShared) continue;
      double alone_us = 0;  // its tasks back to back on the whole GPU
      for (const TaskId& id : part.tasks) {
        const int kind = PerfModel::Kind(inputs.model.IndexOf(id.module), id.phase);
        if (!pm.instant(kind)) alone_us += pm.Isolated(kind, all_sms).value();
      }
      if (alone_us > best_us) {
        best = static_cast<int>(j);
        best_us = alone_us;
      }
    }
    for (PartitionSpec& part : ph.partitions)
      part.priority = 0;
    ph.partitions[best].priority = 1;
    raised->push_back(ph.partitions[best].id);
  }
  if (raised->empty())
    return NotFound("plan " + plan.name + " has no phase with two shared partitions to prioritize");
  out.name = plan.name + "-priority";
  return out;
}

std::string GibText(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
  return buf;
}

double StaticStateBytes(const ModelSpec& model) {
  double bytes = 0;
  for (size_t m = 0; m < model.modules.size(); ++m)
    bytes += EstimateModuleCost(model, static_cast<int>(m), 1).parameter_bytes.value();
  return bytes;
}

PlanMemory EstimatePlanMemory(const PlanSimulation& s, double fraction) {
  PlanMemory m;
  m.static_bytes = StaticStateBytes(s.inputs.model);
  m.activation_bytes = s.result.peak_activation.value();
  m.budget_bytes = fraction * s.inputs.device.memory.value();
  m.fits = m.budget_bytes <= 0 || m.static_bytes + m.activation_bytes <= m.budget_bytes;
  return m;
}

Status CheckPlanMemory(const PlanSimulation& s, double fraction) {
  const PlanMemory m = EstimatePlanMemory(s, fraction);
  if (m.fits) return Status::Ok();
  return FailedPrecondition(
      "plan " + s.plan.name + " does not fit on " + s.inputs.device.name + ": it needs about " +
      GibText(m.static_bytes + m.activation_bytes) + " (" + GibText(m.static_bytes) +
      " of weights, gradients and AdamW state + " + GibText(m.activation_bytes) +
      " of activations at its peak), over " + GibText(m.budget_bytes) + " (" +
      std::to_string(static_cast<int>(fraction * 100 + 0.5)) + "% of the device's " +
      GibText(s.inputs.device.memory.value()) +
      "); use more micro-batches, fewer activation buffers or a smaller batch");
}

}  // namespace mosaic
