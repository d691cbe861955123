// The planner's search space: how a step is cut into phases, how each phase's modules are
// grouped into partitions with quotas, and how tasks are ordered; plus the evaluator that
// simulates one phase of a candidate. Shared by the heuristic (planner.cc) and the exhaustive
// oracle (oracle.cc) so both search exactly the same space.
//
//   PhaseLayout l;                                          // forward phase of clip-b16
//   l.groups = {{/*dedicated=*/true, /*granules=*/13, /*remainder=*/false, {0}},
//               {true, 1, true, {1, 2}}};                   // vision 104 SMs, text+loss 20
//   PhaseEvaluator eval(ctx, PhaseKind::kForward);
//   double us = eval.Evaluate(l);                           // +inf when infeasible
#pragma once

#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/plan.h"
#include "core/task_graph.h"
#include "perfmodel/perf_model.h"
#include "sim/simulator.h"

namespace mosaic {

constexpr double kInfeasible = std::numeric_limits<double>::infinity();

// How the step is cut into phases (each with its own partition set).
enum class Structure {
  kSingle,      // one phase: forward, backward and optimizer may overlap (pipelining)
  kTwoPhases,   // forward | backward + optimizer
  kThreePhases  // forward | backward | optimizer
};
const char* ToString(Structure s);

enum class PhaseKind { kAll, kForward, kBackward, kOptimizer, kBackwardOptimizer };
const char* PhaseName(PhaseKind k);  // "step", "forward", "backward", "optimizer"
std::vector<PhaseKind> PhasesOf(Structure s);
bool InPhase(PhaseKind k, TaskPhase p);

// Order in which a partition runs its tasks: each partition's list is the subsequence of one
// priority-driven topological order of the whole step, which can never deadlock.
enum class OrderPolicy {
  kForwardFirst,     // all forwards (by micro-batch, then model order) before backwards
  kMicroBatchFirst,  // micro-batch by micro-batch: 1F1B-like where buffers allow
  kCriticalPath      // longest remaining path first (HLFET list scheduling)
};
const char* ToString(OrderPolicy p);

struct PartitionGroup {
  bool dedicated = false;
  int granules = 0;          // dedicated: granules of device.sm_granularity SMs
  bool remainder = false;    // dedicated: also holds the device's remainder group
  std::vector<int> modules;  // module indices, ascending
};

struct PhaseLayout {
  std::vector<PartitionGroup> groups;  // sorted by first module
};

// Everything one search works on: a model at one micro-batch count with its graph, perf model,
// global task order and simulator.
struct SearchContext {
  const ModelSpec* model = nullptr;
  const DeviceSpec* device = nullptr;
  int micro_batches = 1;
  std::map<std::string, int> buffers;
  OrderPolicy policy = OrderPolicy::kForwardFirst;
  double memory_budget = 0;  // activation bytes allowed; <= 0: unlimited
  std::shared_ptr<const PerfModel> perf;
  TaskGraph graph;
  std::vector<int> rank;  // position of each task in the global order
  std::unique_ptr<Simulator> sim;
  int64_t simulations = 0;
  double smallest_rejected_peak = kInfeasible;  // least activation peak over the budget seen

  static StatusOr<std::unique_ptr<SearchContext>> Make(const ModelSpec& model,
                                                       const DeviceSpec& device,
                                                       std::shared_ptr<const PerfModel> perf,
                                                       int micro_batches,
                                                       const std::map<std::string, int>& buffers,
                                                       OrderPolicy policy, double memory_budget);
  int sms_of(const PartitionGroup& g) const;
};

// Modules with at least one task in the phase, ascending.
std::vector<int> ModulesInPhase(const SearchContext& ctx, PhaseKind kind);

// Whether the layout can exist on the device: quotas valid, granules within sm_groups, the
// remainder used once, shared partitions left some SMs, every group non-empty.
bool IsFeasible(const SearchContext& ctx, const PhaseLayout& layout);
void Normalize(PhaseLayout* layout);
std::string Key(const PhaseLayout& layout);

// `phase_tasks`: the phase's tasks in global order (PhaseTasks), when the caller has them.
// Partition ids ("vision+text") are only built when `with_ids`.
SimPhase ToSimPhase(const SearchContext& ctx, PhaseKind kind, const PhaseLayout& layout,
                    const std::vector<int>* phase_tasks = nullptr, bool with_ids = true);
std::vector<int> PhaseTasks(const SearchContext& ctx, PhaseKind kind);

// Simulates one phase under a layout (memoized). Returns the phase's time in microseconds, or
// kInfeasible (invalid layout, deadlock, or activations over the memory budget).
class PhaseEvaluator {
 public:
  PhaseEvaluator(SearchContext* ctx, PhaseKind kind)
      : ctx_(ctx), kind_(kind), tasks_(PhaseTasks(*ctx, kind)) {}
  // With a `bound`, a simulation that passes it stops early and returns kInfeasible: the
  // layout cannot beat the bound (pruning). Results stay exact for layouts within the bound.
  double Evaluate(const PhaseLayout& layout, double bound = kInfeasible);
  PhaseKind kind() const { return kind_; }
  SearchContext* context() const { return ctx_; }
  const std::vector<int>& tasks() const { return tasks_; }  // in the order partitions run them
  // Busy time of `module`'s tasks in this phase back to back on `sms` dedicated SMs (cached).
  double ModuleWork(int module, int sms);
  double last_peak_activation() const { return last_peak_; }

 private:
  SearchContext* ctx_;
  PhaseKind kind_;
  std::vector<int> tasks_;                 // the phase's tasks in global order
  std::vector<std::vector<double>> work_;  // [module][sms], filled on first use
  struct Memo {
    double value;  // exact time, or (when !exact) a lower bound that was exceeded
    bool exact;
  };
  std::map<std::string, Memo> memo_;
  double last_peak_ = 0;
};

// A whole candidate plan: one layout per phase of its structure.
struct Candidate {
  Structure structure = Structure::kTwoPhases;
  std::vector<PhaseLayout> layouts;
  double step_us = kInfeasible;
  std::string strategy;  // how it was found, for the table
};

Plan ToPlan(const SearchContext& ctx, const Candidate& c, const std::string& name);
// A simulated phase as the plan's phase (task indices become task ids).
PhaseSpec ToPhaseSpec(const SearchContext& ctx, const SimPhase& sp);

}  // namespace mosaic
