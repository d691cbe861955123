// `mosaic validate FILE...`: checks model, device, plan and profile specs; a plan is also
// checked against its model and device (looked up by name under --configs, or given).
//
//   mosaic validate configs/models/*.json configs/devices/*.json plan.json
#include <iostream>

#include "cli/commands.h"
#include "core/spec_file.h"

namespace mosaic::cli {

void AddValidateCommand(CLI::App& app) {
  auto* sub = app.add_subcommand("validate", "Check spec files (model, device, plan, profile)");
  auto files = std::make_shared<std::vector<std::string>>();
  auto options = std::make_shared<ValidateOptions>();
  sub->add_option("files", *files, "JSON files to check; the kind is recognized from the fields")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--configs", options->configs_dir,
                  "Folder with models/ and devices/ where a plan's model and device are found")
      ->envname("MOSAIC_CONFIGS")
      ->capture_default_str();
  sub->add_option("--model", options->model_path, "Model spec for plans (overrides --configs)");
  sub->add_option("--device", options->device_path, "Device spec for plans (overrides --configs)");
  SetCommand(sub, [files, options] {
    int failures = 0;
    int code = kExitOk;
    for (const auto& f : *files) {
      StatusOr<SpecKind> kind = ValidateSpecFile(f, *options);
      if (kind.ok()) {
        std::cout << f << ": ok (" << ToString(*kind) << ")\n";
      } else {
        ++failures;
        code = ReportError("validate", kind.status());
      }
    }
    if (failures > 0) {
      std::cerr << "mosaic validate: " << failures << " of " << files->size()
                << " file(s) failed\n";
    }
    return code;
  });
}

}  // namespace mosaic::cli
