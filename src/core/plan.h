// Plan: how one training step runs on one device. A plan is data: made by the planner, checked
// by ValidatePlan, run by the engine, drawn by `mosaic show`.
//
// A step is a sequence of phases; each phase has its own set of partitions (so the SM split may
// differ between, say, forward and backward), and the phases run one after another (a phase
// starts when every task of the previous one has finished). A partition is either `dedicated`
// (its own SMs: a green context on CUDA) or `shared` (a plain stream on the SMs no dedicated
// partition of the phase holds, divided by the hardware scheduler among the shared streams).
// A partition runs its tasks in the listed order, one at a time. A shared partition may carry a
// stream `priority` (0, the default, to kMaxStreamPriority): when several shared streams have
// thread blocks waiting, the hardware scheduler places the higher priority's first (CUDA stream
// priorities; a graph launched into a stream runs at the stream's priority), so the others get
// only the SMs it leaves idle (Note [stream priorities] in perf_model.cc).
//
//   {"name": "clip-b16-split", "model": "clip-b16", "device": "h100-sxm",
//    "micro_batches": 1, "activation_buffers": {"vision": 1},
//    "phases": [
//      {"name": "forward", "partitions": [
//        {"id": "v", "kind": "dedicated", "sms": 104, "tasks": ["vision.fwd.0"]},
//        {"id": "t", "kind": "dedicated", "sms": 28, "tasks": ["text.fwd.0", "loss.fwd.0"]}]},
//      {"name": "backward", "partitions": [
//        {"id": "all", "kind": "shared",
//         "tasks": ["loss.bwd.0", "vision.bwd.0", "text.bwd.0", "vision.opt", "text.opt",
//                   "loss.opt"]}]}]}
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/device_spec.h"
#include "core/json_reader.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "core/task_graph.h"
#include "core/units.h"

namespace mosaic {

enum class PartitionKind { kDedicated, kShared };
const char* ToString(PartitionKind k);
// Where a partition runs, for timelines: "dedicated 104 SMs", "shared stream", "shared stream,
// priority 1".
std::string PlaceText(PartitionKind kind, int sms, int priority);

// CUDA offers six levels on Hopper (0 down to -5); the engine maps priority p to -p.
constexpr int kMaxStreamPriority = 5;

struct PartitionSpec {
  std::string id;  // unique within its phase
  PartitionKind kind = PartitionKind::kShared;
  SmCount sms{0};             // dedicated only
  std::vector<TaskId> tasks;  // run in this order
  int priority = 0;           // shared only: higher runs first; 0 is CUDA's default
};

struct PhaseSpec {
  std::string name;
  std::vector<PartitionSpec> partitions;
};

struct Plan {
  std::string name;
  std::string model;   // ModelSpec::name it was made for
  std::string device;  // DeviceSpec::name it was made for
  int micro_batches = 1;
  std::map<std::string, int> activation_buffers;  // absent module: one per micro-batch
  std::vector<PhaseSpec> phases;
  std::optional<TimeUs> predicted_step;  // filled by the planner, informational

  size_t task_count() const;
};

// Reads the structure (types, names, task id syntax); needs no model or device.
StatusOr<Plan> ParsePlan(const Json& doc);
StatusOr<Plan> LoadPlan(const std::string& path);
Json ToJson(const Plan& plan);

// Rejects what could never run on `device` for `model`, each violation with its JSON path:
// unknown modules or tasks, tasks missing or assigned twice, stream priorities out of range or
// on dedicated partitions, quotas over the device's SMs or
// off its granularity, activation buffer counts out of range, and orders that contradict the
// step's dependencies (including more micro-batches in flight than activation buffers).
Status ValidatePlan(const Plan& plan, const ModelSpec& model, const DeviceSpec& device);

// The step DAG the plan runs (micro-batches and buffers from the plan).
StatusOr<TaskGraph> BuildTaskGraph(const ModelSpec& model, const Plan& plan);

}  // namespace mosaic
