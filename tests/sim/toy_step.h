// Hand-made models, devices and profiles small enough to compute timelines by hand; shared by
// the perfmodel, sim and planner tests.
//
//   ModelSpec m = ToyModel({"a", "b"}, {{"a", "b"}});   // two modules, a feeds b
//   DeviceSpec d = ToyDevice();                          // 8 SMs in 4 granules of 2
//   Profile p = ToyProfile(m, {{"a.fwd", 100}, {"a.bwd", 200}, ...});  // times at 8 SMs
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/profile.h"
#include "core/task_graph.h"

namespace mosaic::testing {

// Modules are linear projectors (simple, valid costs); no loss module, so no batch-level task.
inline ModelSpec ToyModel(const std::vector<std::string>& names,
                          const std::vector<std::pair<std::string, std::string>>& edges,
                          int batch = 8) {
  ModelSpec m;
  m.name = "toy";
  m.batch_size = batch;
  for (const auto& n : names) {
    ModuleSpec s;
    s.name = n;
    s.kind = ModuleKind::kProjector;
    s.projector = ProjectorKind::kLinear;
    s.in_dim = 4;
    s.out_dim = 4;
    m.modules.push_back(s);
  }
  m.edges = edges;
  return m;
}

// 8 SMs in 4 granules of 2, no remainder; 1 TB/s so that bytes/us = 1e6 * bandwidth share.
inline DeviceSpec ToyDevice(int sms = 8, int granularity = 2) {
  DeviceSpec d;
  d.name = "toy-gpu";
  d.sm_count = SmCount(sms);
  d.sm_granularity = SmCount(granularity);
  d.sm_groups = sms / granularity;
  d.memory = Bytes(1e12);
  d.peak_flops_bf16 = FlopsPerSec(1e15);
  d.peak_flops_fp32 = FlopsPerSec(1e14);
  d.memory_bandwidth = BytesPerSec(1e12);
  d.launch_overhead = TimeUs(0);
  return d;
}

struct ToyTask {
  double time_us = 1;  // on all SMs; fewer SMs scale linearly (one measured point)
  double bytes = 0;    // DRAM traffic
  double activation = 0;
};

// Keys "a.fwd", "a.bwd", "a.opt"; every task kind of the model must be listed.
inline Profile ToyProfile(const ModelSpec& model, const DeviceSpec& device,
                          const std::map<std::string, ToyTask>& tasks, int micro_batch_size) {
  Profile p;
  p.model = model.name;
  p.device = device.name;
  p.micro_batch_size = micro_batch_size;
  p.source = "measured";
  for (const auto& [key, t] : tasks) {
    ProfileEntry e;
    auto dot = key.find('.');
    e.module = key.substr(0, dot);
    std::string ph = key.substr(dot + 1);
    e.phase = ph == "fwd"   ? TaskPhase::kForward
              : ph == "bwd" ? TaskPhase::kBackward
                            : TaskPhase::kOptimizer;
    e.bytes = Bytes(t.bytes);
    e.activation_bytes = Bytes(t.activation);
    e.points.push_back({device.sm_count, TimeUs(t.time_us)});
    p.entries.push_back(e);
  }
  return p;
}

}  // namespace mosaic::testing
