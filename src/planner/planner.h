// Planner: turns a model, a device and a profile into a ranked short list of plans for one
// training step (Note [planner search] in planner.cc; docs/planning.md).
//
//   PlannerOptions options;                       // defaults search everything below
//   MOSAIC_ASSIGN_OR_RETURN(PlanReport report, PlanStep(model, device, profile, options));
//   const Plan& best = report.plans[0].plan;      // predicted never worse than temporal
//   report.temporal_us;  report.all_shared_us;    // the two baselines, always candidates
//
// PlanStepExhaustive searches the same space exhaustively (small instances only): the oracle
// the heuristic is measured against (bench/planner_benchmark.cc, tests/planner).
#pragma once

#include <string>
#include <vector>

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/plan.h"
#include "core/profile.h"
#include "core/status.h"
#include "perfmodel/calibration.h"
#include "perfmodel/perf_model.h"
#include "planner/search_space.h"

namespace mosaic {

struct PlannerOptions {
  // Micro-batch counts to try (each must divide the batch). Empty: the model's own count and
  // every divisor of the batch in {1, 2, 4, 8, 16} up to max_micro_batches.
  std::vector<int> micro_batches;
  int max_micro_batches = 8;
  // Device memory the step may use, weights and optimizer state included; 0: 90% of the
  // device's memory. Activations get what the static state leaves.
  double memory_budget_bytes = 0;
  int top_k = 5;  // plans in the short list
  // Phase structures and task orders searched (defaults: all).
  std::vector<Structure> structures = {Structure::kSingle, Structure::kTwoPhases,
                                       Structure::kThreePhases};
  std::vector<OrderPolicy> policies = {OrderPolicy::kForwardFirst, OrderPolicy::kMicroBatchFirst,
                                       OrderPolicy::kCriticalPath};
  bool try_activation_buffers = true;  // also try fewer activation buffers than micro-batches
  int max_refine_rounds = 64;          // hill-climbing rounds per phase
  int refine_from_seeds = 3;           // best seeds refined per phase
  int reorder_passes = 3;  // adjacent-swap passes over each short-listed plan's task orders
  // Try one high-priority shared partition per phase (Note [priority refinement]).
  bool prioritize_streams = true;
  PerfModelOptions perf;
  const Calibration* calibration = nullptr;
};

struct RankedPlan {
  Plan plan;  // plan.predicted_step set
  double step_us = 0;
  double utilization = 0;
  double peak_activation_bytes = 0;
  std::string strategy;  // "fwd | bwd+opt, 2 micro-batches, critical-path"
};

struct PlanReport {
  std::vector<RankedPlan> plans;  // best first
  double temporal_us = 0;         // one stream, forward-first, the model's micro-batches
  double all_shared_us = 0;       // one plain stream per module, all at once
  int64_t simulations = 0;
  std::string profile_source;         // "measured", "synthetic", ...
  double contention = 0;              // kappa used
  double shared_weight_exponent = 0;  // gamma used (Note [shared streams])
  int colocation_pairs = 0;           // measured pairs they were fitted to
  double colocation_rms_log_error = 0;
  double static_bytes = 0;  // weights + gradients + optimizer state
  double activation_budget_bytes = 0;
};

StatusOr<PlanReport> PlanStep(const ModelSpec& model, const DeviceSpec& device,
                              const Profile& profile, const PlannerOptions& options = {});
StatusOr<PlanReport> PlanStepExhaustive(const ModelSpec& model, const DeviceSpec& device,
                                        const Profile& profile, const PlannerOptions& options = {});

// Per-phase searches (exposed for tests): the best layout of one phase's modules.
struct PhaseChoice {
  PhaseLayout layout;
  double time_us = kInfeasible;
};
PhaseChoice HeuristicPhaseSearch(PhaseEvaluator& eval, const std::vector<int>& modules,
                                 const PlannerOptions& options);
PhaseChoice ExhaustivePhaseSearch(PhaseEvaluator& eval, const std::vector<int>& modules);

// Adjacent-swap refinement of a program's partition orders (Note [reorder refinement]);
// `best` holds the program's current result and is updated. Returns whether anything changed.
bool ReorderTasks(const SearchContext& ctx, int passes, SimProgram* program, SimResult* best);
// Raises at most one shared partition per phase to priority 1 where that simulates strictly
// faster (Note [priority refinement]); `best` is updated. Returns the ids raised, phase order.
std::vector<std::string> PrioritizeStreams(const SearchContext& ctx, SimProgram* program,
                                           SimResult* best);

}  // namespace mosaic
