// `mosaic`: the command-line front end. Thin: parsing and reporting here, work in the libraries.
//
//   mosaic validate configs/models/*.json
//   mosaic plan --model clip-b16 --device h100-sxm -o plan.json
//   mosaic train --model clip-tiny
#include <iostream>
#include <list>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace mosaic::cli {

namespace {
std::list<CommandFn>& Commands() {  // stable addresses, destroyed at exit
  static std::list<CommandFn> commands;
  return commands;
}
const CommandFn* chosen = nullptr;
}  // namespace

void SetCommand(CLI::App* sub, CommandFn fn) {
  const CommandFn* holder = &Commands().emplace_back(std::move(fn));
  sub->callback([holder] { chosen = holder; });
}

int ReportError(const std::string& command, const Status& status) {
  const std::string& msg = status.message();
  size_t start = 0;
  while (start <= msg.size()) {
    size_t end = msg.find('\n', start);
    if (end == std::string::npos) end = msg.size();
    std::cerr << "mosaic " << command << ": " << msg.substr(start, end - start) << "\n";
    start = end + 1;
  }
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kFailedPrecondition:
      return kExitUsage;
    default:
      return kExitFailure;
  }
}

}  // namespace mosaic::cli

int main(int argc, char** argv) {
  using namespace mosaic::cli;
  CLI::App app{
      "Mosaic trains multimodal models faster by running their modules side by side on one GPU,\n"
      "each in its own share of the SMs, planned from a measured performance model."};
  app.name("mosaic");
  app.require_subcommand(1);
  app.set_version_flag("--version", "mosaic 0.1.0");
  app.footer("Run `mosaic <command> --help` for a command's flags. Docs: README.md, docs/.");
  AddValidateCommand(app);
#ifdef MOSAIC_HAVE_PLANNER
  AddPlanCommand(app);
  AddSimulateCommand(app);
  AddShowCommand(app);
#endif
#ifdef MOSAIC_HAVE_TORCH
  AddTrainCommand(app);
#endif
#ifdef MOSAIC_HAVE_ENGINE
  AddProfileCommand(app);
  AddBenchCommand(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line: what is wrong, then a pointer to help.
    std::cerr << "mosaic: " << e.what() << " (see mosaic --help)\n";
    return kExitUsage;
  }
  if (!chosen) return kExitUsage;
  try {
    return (*chosen)();
  } catch (const std::exception& e) {
    std::cerr << "mosaic: internal error: " << e.what() << "\n";
    return kExitFailure;
  }
}
