// Simulator: a deterministic discrete-event simulation of one training step under a plan, with
// task speeds from the performance model re-evaluated whenever the set of running tasks
// changes (Note [simulation and tie-breaking] in simulator.cc).
//
//   MOSAIC_ASSIGN_OR_RETURN(TaskGraph graph, BuildTaskGraph(model, plan));
//   MOSAIC_ASSIGN_OR_RETURN(SimProgram program, CompilePlan(plan, graph));
//   Simulator sim(graph, perf_model);
//   MOSAIC_ASSIGN_OR_RETURN(SimResult r, sim.Run(program));
//   r.step;  r.tasks[graph.Find("vision.fwd.0")].end;  r.utilization;
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/plan.h"
#include "core/status.h"
#include "core/task_graph.h"
#include "core/units.h"
#include "perfmodel/perf_model.h"

namespace mosaic {

// A plan compiled to task indices of a TaskGraph.
struct SimPartition {
  std::string id;
  PartitionKind kind = PartitionKind::kShared;
  int sms = 0;             // dedicated only
  std::vector<int> tasks;  // task indices, run in order
  int priority = 0;        // shared only (Note [stream priorities])
};
struct SimPhase {
  std::string name;
  std::vector<SimPartition> partitions;
};
// A program may hold a subset of the graph's tasks (the planner simulates one phase at a time):
// tasks it does not hold count as finished before it starts.
struct SimProgram {
  std::vector<SimPhase> phases;
};

// Maps task ids to indices; fails on unknown or repeated tasks and on phases whose shared
// partitions would get no SMs. ValidatePlan checks the rest.
StatusOr<SimProgram> CompilePlan(const Plan& plan, const TaskGraph& graph,
                                 const DeviceSpec& device);

struct TaskTiming {
  int phase = -1;  // -1: not in the program
  int partition = -1;
  TimeUs start{0};
  TimeUs end{0};
  double sms = 0;  // SMs it ran on (time-weighted average for a shared task)
};

struct SimResult {
  std::vector<TaskTiming> tasks;  // indexed by task index
  // [phase][partition]: time running a task (a shared task waiting at 0 SMs behind a
  // higher-priority stream, Note [stream priorities], is not running).
  std::vector<std::vector<TimeUs>> busy;
  std::vector<TimeUs> phase_end;  // when each phase's last task ended
  // A whole-step program (every task of the graph) also pays the executor's per-step work
  // (PerfModel::step_overhead, Note [executor overhead]): the phases start after `before` and
  // the step ends `after` past the last phase. Zero without the device's executor constants.
  TimeUs overhead_before{0};
  TimeUs overhead_after{0};
  TimeUs step{0};            // end of the last phase, plus overhead_after
  double utilization = 0;    // SM-time kept busy / (SMs * phases' span), Note [simulation ...]
  Bytes peak_activation{0};  // activations held between forward and backward, at most
  int64_t events = 0;        // task starts + task ends
};

struct SimOptions {
  bool record_tasks = true;  // false: only step, utilization, memory (faster for search)
  // Stop early (result.step = +inf) once simulated time exceeds this; the planner's pruning.
  double stop_after_us = 0;  // 0: never
  // Add the executor's per-step work to a whole-step program (Note [executor overhead]); the
  // planner's phase search leaves it out so one-phase and multi-phase candidates compare alike.
  bool step_overhead = true;
};

class Simulator {
 public:
  Simulator(const TaskGraph& graph, const PerfModel& model);
  // Fails (FailedPrecondition) on a deadlock: an order that contradicts a dependency.
  StatusOr<SimResult> Run(const SimProgram& program, const SimOptions& options = {});

 private:
  const TaskGraph& graph_;
  const PerfModel& model_;
  // Scratch reused between runs.
  std::vector<int> preds_, kind_, fwd_of_, program_tasks_;
  std::vector<char> in_program_;
  std::string missing_;  // a task the performance model has no entry for
  std::vector<RunningTask> run_;
  std::vector<TaskRate> rate_;
};

}  // namespace mosaic
