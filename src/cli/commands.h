// The `mosaic` subcommands. Each lives in its own cmd_<name>.cc and registers itself on the
// CLI11 app; main.cc calls every Add*Command below.
//
// Conventions for every command (docs/cli.md):
//  - every flag has a help line and a default; paths and common knobs also read MOSAIC_* env
//    variables;
//  - bad input prints one line "mosaic <cmd>: <what is wrong and where>" on stderr and the
//    command returns kExitUsage (2); nothing is half-written (outputs go through
//    WriteFileAtomic);
//  - progress for long work goes to stderr; results to stdout or the -o file.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/status.h"

namespace mosaic::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // the work itself failed (e.g. a test run diverged)
constexpr int kExitUsage = 2;    // bad input: flags, files, specs

// A command's body; the return value is the process exit code.
using CommandFn = std::function<int()>;

// Registers `fn` to run when `sub` is the chosen subcommand.
void SetCommand(CLI::App* sub, CommandFn fn);

// Prints "mosaic <cmd>: <status message>" (one line per violation) to stderr and returns the
// exit code for it: kExitUsage for bad input, kExitFailure otherwise.
int ReportError(const std::string& command, const Status& status);

void AddValidateCommand(CLI::App& app);
#ifdef MOSAIC_HAVE_PLANNER
void AddPlanCommand(CLI::App& app);
void AddSimulateCommand(CLI::App& app);
void AddShowCommand(CLI::App& app);
#endif
#ifdef MOSAIC_HAVE_TORCH
// The fused-kernel switches of `mosaic train` and `mosaic bench`, process-wide once applied
// (Note [add + norm fusion in the stack]; Note [weight and bias gradients in one GEMM]: off
// until LinearGpu.* has passed on a GPU).
struct FusedKernelFlags {
  bool norm = true;
  bool vectorized_norm = false;
  bool linear_grad = false;
  bool bias_grad = false;
  bool patch_gemm = false;  // models/vit.h Note [patch embedding as one GEMM]
};
void AddFusedKernelFlags(CLI::App* sub, FusedKernelFlags* f);
void ApplyFusedKernelFlags(const FusedKernelFlags& f);

void AddTrainCommand(CLI::App& app);
void AddExportCommand(CLI::App& app);
#endif
#ifdef MOSAIC_HAVE_ENGINE
void AddProfileCommand(CLI::App& app);
void AddBenchCommand(CLI::App& app);
#endif

}  // namespace mosaic::cli
