#include "core/plan.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "core/file_io.h"

namespace mosaic {

const char* ToString(PartitionKind k) {
  return k == PartitionKind::kDedicated ? "dedicated" : "shared";
}

std::string PlaceText(PartitionKind kind, int sms, int priority) {
  if (kind == PartitionKind::kDedicated) return "dedicated " + std::to_string(sms) + " SMs";
  return priority != 0 ? "shared stream, priority " + std::to_string(priority) : "shared stream";
}

size_t Plan::task_count() const {
  size_t n = 0;
  for (const auto& ph : phases)
    for (const auto& p : ph.partitions)
      n += p.tasks.size();
  return n;
}

StatusOr<Plan> ParsePlan(const Json& doc) {
  ErrorList errors;
  JsonReader r(doc, &errors);
  Plan plan;
  if (!r.ExpectObject()) return errors.ToStatus();
  r.Optional("name", &plan.name, "");
  if (r.Required("model", &plan.model) && plan.model.empty()) r.Error("model", "must not be empty");
  if (r.Required("device", &plan.device) && plan.device.empty())
    r.Error("device", "must not be empty");
  if (r.Optional("micro_batches", &plan.micro_batches, 1))
    r.ExpectPositive("micro_batches", plan.micro_batches);
  r.ForEachMember(
      "activation_buffers",
      [&](const std::string& module, JsonReader b) {
        int count = 0;
        const Json& v = b.node();
        if (!v.is_number_integer() && !v.is_number_unsigned()) {
          b.Error("expected an integer, got " + Describe(v));
          return;
        }
        count = v.get<int>();
        if (count <= 0) b.Error("must be positive, got " + std::to_string(count));
        plan.activation_buffers[module] = count;
      },
      /*required=*/false);
  double predicted = 0;
  if (r.Has("predicted_step_us") && r.Required("predicted_step_us", &predicted) &&
      r.ExpectNonNegative("predicted_step_us", predicted)) {
    plan.predicted_step = TimeUs(predicted);
  }
  std::set<std::string> phase_names;
  size_t phases = r.ForEach("phases", [&](JsonReader ph) {
    PhaseSpec phase;
    if (!ph.ExpectObject()) return;
    if (ph.Required("name", &phase.name) && !phase_names.insert(phase.name).second)
      ph.Error("name", "duplicate phase name \"" + phase.name + "\"");
    std::set<std::string> ids;
    size_t parts = ph.ForEach("partitions", [&](JsonReader pr) {
      PartitionSpec part;
      if (!pr.ExpectObject()) return;
      if (pr.Required("id", &part.id)) {
        if (part.id.empty()) pr.Error("id", "must not be empty");
        if (!ids.insert(part.id).second)
          pr.Error("id", "duplicate partition id \"" + part.id + "\" in phase " + phase.name);
      }
      std::string kind;
      if (pr.Required("kind", &kind) && pr.ExpectOneOf("kind", kind, {"dedicated", "shared"}))
        part.kind = kind == "dedicated" ? PartitionKind::kDedicated : PartitionKind::kShared;
      if (part.kind == PartitionKind::kDedicated) {
        int sms = 0;
        if (pr.Required("sms", &sms) && pr.ExpectPositive("sms", sms)) part.sms = SmCount(sms);
      } else if (pr.Has("sms")) {
        pr.Error("sms", "a shared partition has no SM quota (it shares the GPU)");
      }
      if (pr.Has("priority")) {
        if (part.kind == PartitionKind::kDedicated) {
          pr.Error("priority",
                   "a dedicated partition has its SMs to itself; priority is for shared ones");
        } else if (pr.Required("priority", &part.priority) &&
                   (part.priority < 0 || part.priority > kMaxStreamPriority)) {
          pr.Error("priority", "must be 0 to " + std::to_string(kMaxStreamPriority) + ", got " +
                                   std::to_string(part.priority));
        }
      }
      pr.ForEach("tasks", [&](JsonReader t) {
        if (!t.node().is_string()) {
          t.Error("expected a task id string, got " + Describe(t.node()));
          return;
        }
        StatusOr<TaskId> id = ParseTaskId(t.node().get<std::string>());
        if (!id.ok()) {
          t.Error(id.status().message());
          return;
        }
        part.tasks.push_back(*id);
      });
      pr.RejectUnknownKeys({"id", "kind", "sms", "priority", "tasks"});
      phase.partitions.push_back(std::move(part));
    });
    if (ph.Has("partitions") && ph.node()["partitions"].is_array() && parts == 0)
      ph.Error("partitions", "a phase needs at least one partition");
    ph.RejectUnknownKeys({"name", "partitions"});
    plan.phases.push_back(std::move(phase));
  });
  if (r.Has("phases") && r.node()["phases"].is_array() && phases == 0)
    r.Error("phases", "a plan needs at least one phase");
  r.RejectUnknownKeys({"name", "model", "device", "micro_batches", "activation_buffers",
                       "predicted_step_us", "phases"});
  if (!errors.empty()) return errors.ToStatus();
  return plan;
}

StatusOr<Plan> LoadPlan(const std::string& path) {
  MOSAIC_ASSIGN_OR_RETURN(Json doc, LoadJsonFile(path));
  StatusOr<Plan> plan = ParsePlan(doc);
  if (!plan.ok()) return plan.status().WithPrefix(path);
  return plan;
}

Json ToJson(const Plan& plan) {
  Json j;
  if (!plan.name.empty()) j["name"] = plan.name;
  j["model"] = plan.model;
  j["device"] = plan.device;
  j["micro_batches"] = plan.micro_batches;
  if (!plan.activation_buffers.empty()) {
    Json b = Json::object();
    for (const auto& [m, c] : plan.activation_buffers)
      b[m] = c;
    j["activation_buffers"] = b;
  }
  if (plan.predicted_step) j["predicted_step_us"] = plan.predicted_step->value();
  Json phases = Json::array();
  for (const auto& ph : plan.phases) {
    Json parts = Json::array();
    for (const auto& p : ph.partitions) {
      Json o;
      o["id"] = p.id;
      o["kind"] = ToString(p.kind);
      if (p.kind == PartitionKind::kDedicated) o["sms"] = p.sms.value();
      Json tasks = Json::array();
      for (const auto& t : p.tasks)
        tasks.push_back(t.ToString());
      o["tasks"] = tasks;
      if (p.priority != 0) o["priority"] = p.priority;
      parts.push_back(o);
    }
    phases.push_back({{"name", ph.name}, {"partitions", parts}});
  }
  j["phases"] = phases;
  return j;
}

StatusOr<TaskGraph> BuildTaskGraph(const ModelSpec& model, const Plan& plan) {
  return BuildTaskGraph(model, plan.micro_batches, plan.activation_buffers);
}

namespace {

std::string PartitionPath(size_t phase, size_t part) {
  return "phases[" + std::to_string(phase) + "].partitions[" + std::to_string(part) + "]";
}

void CheckQuotas(const Plan& plan, const DeviceSpec& device, ErrorList& errors) {
  const int g = device.sm_granularity.value();
  const int rem = device.remainder().value();
  for (size_t i = 0; i < plan.phases.size(); ++i) {
    const PhaseSpec& ph = plan.phases[i];
    int total = 0, granules = 0, remainder_users = 0;
    bool has_shared = false;
    for (size_t j = 0; j < ph.partitions.size(); ++j) {
      const PartitionSpec& p = ph.partitions[j];
      if (p.priority != 0 && (p.kind == PartitionKind::kDedicated || p.priority < 0 ||
                              p.priority > kMaxStreamPriority))
        errors.Add(PartitionPath(i, j) + ".priority: " + std::to_string(p.priority) +
                   (p.kind == PartitionKind::kDedicated
                        ? " on a dedicated partition (priority is for shared ones)"
                        : " is not 0 to " + std::to_string(kMaxStreamPriority)));
      if (p.kind == PartitionKind::kShared) {
        has_shared = true;
        continue;
      }
      const int sms = p.sms.value();
      total += sms;
      if (!device.IsValidQuota(p.sms)) {
        std::string rule = "a multiple of " + std::to_string(g);
        if (rem > 0)
          rule += " or a multiple of " + std::to_string(g) + " plus the " + std::to_string(rem) +
                  "-SM remainder";
        errors.Add(PartitionPath(i, j) + ".sms: " + std::to_string(sms) + " is not " + rule +
                   " on " + device.name + " (" + std::to_string(device.sm_count.value()) + " SMs)");
        continue;
      }
      if (sms % g == 0 && sms / g <= device.sm_groups) {
        granules += sms / g;
      } else {
        granules += (sms - rem) / g;
        ++remainder_users;
      }
    }
    const std::string where = "phases[" + std::to_string(i) + "].partitions";
    if (total > device.sm_count.value()) {
      errors.Add(where + ": dedicated quotas sum to " + std::to_string(total) + " SMs, over " +
                 device.name + "'s " + std::to_string(device.sm_count.value()));
    } else if (granules > device.sm_groups || remainder_users > 1) {
      errors.Add(where + ": dedicated quotas need " + std::to_string(granules) + " groups of " +
                 std::to_string(g) + " SMs" +
                 (remainder_users > 1 ? " and the remainder group twice" : "") + "; " +
                 device.name + " splits into " + std::to_string(device.sm_groups) +
                 " groups and one remainder of " + std::to_string(rem));
    } else if (has_shared && total >= device.sm_count.value()) {
      errors.Add(where + ": shared partitions get no SMs: dedicated partitions hold all " +
                 std::to_string(device.sm_count.value()));
    }
  }
}

// Node kinds for the ordering check: tasks first, then one barrier per phase boundary.
enum class LinkKind { kData, kBuffer, kOrder, kPhase };

struct OrderGraph {
  int nodes = 0;
  std::vector<std::vector<std::pair<int, LinkKind>>> out;
  void Add(int a, int b, LinkKind k) { out[a].push_back({b, k}); }
};

const char* LinkName(LinkKind k) {
  switch (k) {
    case LinkKind::kData:
      return "-data->";
    case LinkKind::kBuffer:
      return "-buffer->";
    case LinkKind::kOrder:
      return "-order->";
    case LinkKind::kPhase:
      return "-phase->";
  }
  return "?";
}

}  // namespace

Status ValidatePlan(const Plan& plan, const ModelSpec& model, const DeviceSpec& device) {
  ErrorList errors;
  if (plan.model != model.name) {
    errors.Add("model: the plan is for \"" + plan.model + "\" but the model spec is \"" +
               model.name + "\"");
  }
  if (plan.device != device.name) {
    errors.Add("device: the plan is for \"" + plan.device + "\" but the device spec is \"" +
               device.name + "\"");
  }
  if (model.batch_size % plan.micro_batches != 0) {
    errors.Add("micro_batches: " + std::to_string(plan.micro_batches) +
               " does not divide the model's batch_size " + std::to_string(model.batch_size));
  }
  CheckQuotas(plan, device, errors);
  StatusOr<TaskGraph> graph_or = BuildTaskGraph(model, plan);
  if (!graph_or.ok()) {
    errors.Add(graph_or.status().message());
    return errors.ToStatus();
  }
  const TaskGraph& graph = *graph_or;

  // Assignment: every task of the step exactly once.
  struct Place {
    size_t phase, part, pos;
  };
  std::vector<std::optional<Place>> place(graph.size());
  std::string module_list;
  for (const auto& m : model.modules)
    module_list += (module_list.empty() ? "" : ", ") + m.name;
  for (size_t i = 0; i < plan.phases.size(); ++i) {
    for (size_t j = 0; j < plan.phases[i].partitions.size(); ++j) {
      const PartitionSpec& p = plan.phases[i].partitions[j];
      for (size_t k = 0; k < p.tasks.size(); ++k) {
        const TaskId& id = p.tasks[k];
        std::string where = PartitionPath(i, j) + ".tasks[" + std::to_string(k) + "]";
        int m = model.IndexOf(id.module);
        if (m < 0) {
          errors.Add(where + ": unknown module \"" + id.module + "\" (model " + model.name +
                     " has: " + module_list + ")");
          continue;
        }
        int t = graph.Find(id);
        if (t < 0) {
          std::string why;
          if (id.phase == TaskPhase::kOptimizer) {
            why = id.module + " has no parameters, so no optimizer task";
          } else if (graph.is_batch_level(m)) {
            why = id.module + " sees the whole batch: its only tasks are micro-batch 0";
          } else {
            why = "micro-batch " + std::to_string(id.micro_batch) + " is outside 0.." +
                  std::to_string(graph.micro_batches() - 1);
          }
          errors.Add(where + ": no task \"" + id.ToString() + "\" (" + why + ")");
          continue;
        }
        if (place[t]) {
          errors.Add(where + ": task " + id.ToString() + " is assigned twice (first at " +
                     PartitionPath(place[t]->phase, place[t]->part) + ".tasks[" +
                     std::to_string(place[t]->pos) + "])");
          continue;
        }
        place[t] = Place{i, j, k};
      }
    }
  }
  for (const Task& t : graph.tasks()) {
    if (!place[t.index])
      errors.Add("phases: task " + t.id.ToString() + " is not assigned to any partition");
  }
  if (!errors.empty()) return errors.ToStatus();

  // Ordering: dependencies + partition order + phase barriers must form a DAG.
  const int n = static_cast<int>(graph.size());
  const int phases = static_cast<int>(plan.phases.size());
  OrderGraph og;
  og.nodes = n + std::max(0, phases - 1);
  og.out.assign(og.nodes, {});
  for (const TaskEdge& e : graph.edges())
    og.Add(e.from, e.to, e.kind == EdgeKind::kBuffer ? LinkKind::kBuffer : LinkKind::kData);
  for (const auto& ph : plan.phases) {
    for (const auto& p : ph.partitions) {
      for (size_t k = 1; k < p.tasks.size(); ++k)
        og.Add(graph.Find(p.tasks[k - 1]), graph.Find(p.tasks[k]), LinkKind::kOrder);
    }
  }
  for (int t = 0; t < n; ++t) {
    int ph = static_cast<int>(place[t]->phase);
    if (ph < phases - 1) og.Add(t, n + ph, LinkKind::kPhase);
    if (ph > 0) og.Add(n + ph - 1, t, LinkKind::kPhase);
  }
  std::vector<int> indegree(og.nodes, 0);
  for (int u = 0; u < og.nodes; ++u)
    for (auto [v, k] : og.out[u])
      ++indegree[v];
  std::vector<int> ready;
  for (int u = 0; u < og.nodes; ++u)
    if (indegree[u] == 0) ready.push_back(u);
  int seen = 0;
  while (!ready.empty()) {
    int u = ready.back();
    ready.pop_back();
    ++seen;
    for (auto [v, k] : og.out[u])
      if (--indegree[v] == 0) ready.push_back(v);
  }
  if (seen == og.nodes) return Status::Ok();

  // Find one cycle among the nodes left (all have indegree > 0 from other left nodes).
  auto name = [&](int u) {
    return u < n ? graph.tasks()[u].id.ToString() : "end of phase " + plan.phases[u - n].name;
  };
  std::vector<int> state(og.nodes, 0), parent(og.nodes, -1);
  std::vector<LinkKind> via(og.nodes, LinkKind::kData);
  std::vector<std::pair<int, LinkKind>> cycle;
  std::function<bool(int)> dfs = [&](int u) {
    state[u] = 1;
    for (auto [v, k] : og.out[u]) {
      if (indegree[v] == 0) continue;  // not part of the stuck subgraph
      if (state[v] == 1) {
        cycle.push_back({v, k});
        for (int w = u; w != v; w = parent[w])
          cycle.push_back({w, via[w]});
        cycle.push_back({v, LinkKind::kData});
        std::reverse(cycle.begin(), cycle.end());
        return true;
      }
      if (state[v] == 0) {
        parent[v] = u;
        via[v] = k;
        if (dfs(v)) return true;
      }
    }
    state[u] = 2;
    return false;
  };
  for (int u = 0; u < og.nodes && cycle.empty(); ++u)
    if (indegree[u] > 0 && state[u] == 0) dfs(u);
  // cycle[i] = (node, link from cycle[i-1] to node); cycle[0] is the start.
  std::string text = name(cycle.front().first);
  std::string buffer_module;
  for (size_t i = 1; i < cycle.size(); ++i) {
    text += " " + std::string(LinkName(cycle[i].second)) + " " + name(cycle[i].first);
    if (cycle[i].second == LinkKind::kBuffer && cycle[i].first < n)
      buffer_module = graph.tasks()[cycle[i].first].id.module;
  }
  // "A -kind-> B" reads "A must finish before B starts", for a data dependency, a freed
  // activation buffer, the partition's order or a phase barrier.
  if (!buffer_module.empty()) {
    int m = model.IndexOf(buffer_module);
    return InvalidArgument("activation_buffers." + buffer_module + ": the plan keeps more " +
                           "micro-batches of " + buffer_module + " in flight than its " +
                           std::to_string(graph.buffers(m)) +
                           " activation buffer(s) allow: " + text);
  }
  return InvalidArgument("phases: the order contradicts a dependency: " + text);
}

}  // namespace mosaic
