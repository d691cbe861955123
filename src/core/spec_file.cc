#include "core/spec_file.h"

#include <sys/stat.h>

#include "core/device_spec.h"
#include "core/file_io.h"
#include "core/model_spec.h"
#include "core/plan.h"
#include "core/profile.h"

namespace mosaic {

const char* ToString(SpecKind k) {
  switch (k) {
    case SpecKind::kModel:
      return "model";
    case SpecKind::kDevice:
      return "device";
    case SpecKind::kPlan:
      return "plan";
    case SpecKind::kProfile:
      return "profile";
    case SpecKind::kUnknown:
      break;
  }
  return "unknown";
}

SpecKind DetectSpecKind(const Json& doc) {
  if (!doc.is_object()) return SpecKind::kUnknown;
  if (doc.contains("phases")) return SpecKind::kPlan;
  if (doc.contains("entries")) return SpecKind::kProfile;
  if (doc.contains("modules")) return SpecKind::kModel;
  if (doc.contains("sm_count")) return SpecKind::kDevice;
  return SpecKind::kUnknown;
}

namespace {
bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
}  // namespace

StatusOr<SpecKind> ValidateSpecFile(const std::string& path, const ValidateOptions& options) {
  MOSAIC_ASSIGN_OR_RETURN(Json doc, LoadJsonFile(path));
  const SpecKind kind = DetectSpecKind(doc);
  Status status;
  switch (kind) {
    case SpecKind::kModel:
      status = ParseModelSpec(doc).status();
      break;
    case SpecKind::kDevice:
      status = ParseDeviceSpec(doc).status();
      break;
    case SpecKind::kProfile:
      status = ParseProfile(doc).status();
      break;
    case SpecKind::kPlan: {
      StatusOr<Plan> plan = ParsePlan(doc);
      if (!plan.ok()) {
        status = plan.status();
        break;
      }
      std::string model_path = options.model_path.empty()
                                   ? options.configs_dir + "/models/" + plan->model + ".json"
                                   : options.model_path;
      std::string device_path = options.device_path.empty()
                                    ? options.configs_dir + "/devices/" + plan->device + ".json"
                                    : options.device_path;
      if (!FileExists(model_path)) {
        return NotFound(path + ": model: no spec for \"" + plan->model + "\" at " + model_path +
                        " (pass --model)");
      }
      if (!FileExists(device_path)) {
        return NotFound(path + ": device: no spec for \"" + plan->device + "\" at " + device_path +
                        " (pass --device)");
      }
      MOSAIC_ASSIGN_OR_RETURN(ModelSpec model, LoadModelSpec(model_path));
      MOSAIC_ASSIGN_OR_RETURN(DeviceSpec device, LoadDeviceSpec(device_path));
      status = ValidatePlan(*plan, model, device);
      break;
    }
    case SpecKind::kUnknown:
      return InvalidArgument(path +
                             ": not a Mosaic spec (expected an object with \"modules\" (model), "
                             "\"sm_count\" (device), \"phases\" (plan) or \"entries\" (profile))");
  }
  if (!status.ok()) return status.WithPrefix(path);
  return kind;
}

}  // namespace mosaic
