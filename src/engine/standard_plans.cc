// Baseline plans (standard_plans.h).
#include "engine/standard_plans.h"

#include <map>
#include <queue>

namespace mosaic::engine {

std::vector<TaskId> TopologicalTasks(const TaskGraph& graph) {
  std::vector<int> indegree(graph.size(), 0);
  for (const TaskEdge& e : graph.edges())
    ++indegree[e.to];
  std::priority_queue<int, std::vector<int>, std::greater<int>> ready;
  for (size_t t = 0; t < graph.size(); ++t)
    if (indegree[t] == 0) ready.push(static_cast<int>(t));
  std::vector<TaskId> out;
  while (!ready.empty()) {
    const int t = ready.top();
    ready.pop();
    out.push_back(graph.tasks()[t].id);
    for (int e : graph.out_edges(t))
      if (--indegree[graph.edges()[e].to] == 0) ready.push(graph.edges()[e].to);
  }
  return out;
}

namespace {

StatusOr<Plan> Grouped(const ModelSpec& spec, int micro_batches, const std::string& name,
                       const std::vector<ModuleGroup>& groups, bool dedicated, bool backward_shared,
                       const std::string& device) {
  MOSAIC_ASSIGN_OR_RETURN(TaskGraph g, BuildTaskGraph(spec, micro_batches, {}));
  std::map<std::string, int> group_of;
  for (size_t k = 0; k < groups.size(); ++k)
    for (const std::string& m : groups[k].modules) {
      if (spec.IndexOf(m) < 0) return InvalidArgument("no module \"" + m + "\" in " + spec.name);
      group_of[m] = static_cast<int>(k);
    }
  for (const std::string& m : spec.TopologicalOrder()) {
    if (group_of.count(m)) continue;
    const std::vector<std::string> in = spec.InputsOf(m);
    if (in.empty() || !group_of.count(in[0]))
      return InvalidArgument("module \"" + m + "\" is in no group");
    group_of[m] = group_of[in[0]];
  }
  Plan p;
  p.name = spec.name + "-" + name;
  p.model = spec.name;
  p.device = device;
  p.micro_batches = micro_batches;
  auto make_phase = [&](const std::string& phase_name, bool dedicated_parts) {
    PhaseSpec ph;
    ph.name = phase_name;
    for (size_t k = 0; k < groups.size(); ++k) {
      PartitionSpec part;
      part.id = groups.size() == 1 ? std::string("gpu") : groups[k].modules.front();
      part.kind = dedicated_parts ? PartitionKind::kDedicated : PartitionKind::kShared;
      part.sms = SmCount(dedicated_parts ? groups[k].sms : 0);
      ph.partitions.push_back(part);
    }
    return ph;
  };
  p.phases.push_back(make_phase(backward_shared ? "forward" : "step", dedicated));
  if (backward_shared) p.phases.push_back(make_phase("backward", false));
  for (const TaskId& id : TopologicalTasks(g)) {
    const int phase = backward_shared && id.phase != TaskPhase::kForward ? 1 : 0;
    p.phases[phase].partitions[group_of[id.module]].tasks.push_back(id);
  }
  return p;
}

}  // namespace

StatusOr<Plan> TemporalPlan(const ModelSpec& spec, int micro_batches, const std::string& device) {
  std::vector<std::string> all;
  for (const ModuleSpec& m : spec.modules)
    all.push_back(m.name);
  return Grouped(spec, micro_batches, "temporal", {{all, 0}}, false, false, device);
}

StatusOr<Plan> SharedStreamsPlan(const ModelSpec& spec, int micro_batches,
                                 const std::string& device) {
  std::vector<ModuleGroup> groups;
  for (const ModuleSpec& m : spec.modules)
    if (!m.is_loss()) groups.push_back({{m.name}, 0});
  return Grouped(spec, micro_batches, "shared-streams", groups, false, false, device);
}

StatusOr<Plan> PartitionedPlan(const ModelSpec& spec, int micro_batches,
                               const std::vector<ModuleGroup>& groups, bool backward_shared,
                               const std::string& device) {
  return Grouped(spec, micro_batches, backward_shared ? "split-fwd" : "split", groups, true,
                 backward_shared, device);
}

}  // namespace mosaic::engine
