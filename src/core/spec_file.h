// Recognizes which kind of spec a JSON file holds (model, device, plan, profile) and validates
// it; what `mosaic validate FILE...` runs on each file.
//
//   SpecKind kind = DetectSpecKind(doc);          // from its fields
//   Status s = ValidateSpecFile("plan.json", {.configs_dir = "configs"});
#pragma once

#include <string>

#include "core/json_reader.h"
#include "core/status.h"

namespace mosaic {

enum class SpecKind { kUnknown, kModel, kDevice, kPlan, kProfile };
const char* ToString(SpecKind k);

// model: has "modules"; device: has "sm_count"; plan: has "phases"; profile: has "entries".
SpecKind DetectSpecKind(const Json& doc);

struct ValidateOptions {
  // Where a plan's model and device are looked up by name when not given:
  // <configs_dir>/models/<model>.json and <configs_dir>/devices/<device>.json.
  std::string configs_dir = "configs";
  std::string model_path;   // overrides the lookup
  std::string device_path;  // overrides the lookup
};

// Loads, detects and fully validates one file; a plan is also checked against its model and
// device. Messages start with the file name.
StatusOr<SpecKind> ValidateSpecFile(const std::string& path, const ValidateOptions& options);

}  // namespace mosaic
