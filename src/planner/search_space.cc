// The planner's search space and phase evaluator; see search_space.h.
#include "planner/search_space.h"

#include <algorithm>
#include <queue>
#include <tuple>

namespace mosaic {

const char* ToString(Structure s) {
  switch (s) {
    case Structure::kSingle:
      return "one phase";
    case Structure::kTwoPhases:
      return "fwd | bwd+opt";
    case Structure::kThreePhases:
      return "fwd | bwd | opt";
  }
  return "?";
}

const char* PhaseName(PhaseKind k) {
  switch (k) {
    case PhaseKind::kAll:
      return "step";
    case PhaseKind::kForward:
      return "forward";
    case PhaseKind::kBackward:
    case PhaseKind::kBackwardOptimizer:
      return "backward";
    case PhaseKind::kOptimizer:
      return "optimizer";
  }
  return "?";
}

std::vector<PhaseKind> PhasesOf(Structure s) {
  switch (s) {
    case Structure::kSingle:
      return {PhaseKind::kAll};
    case Structure::kTwoPhases:
      return {PhaseKind::kForward, PhaseKind::kBackwardOptimizer};
    case Structure::kThreePhases:
      return {PhaseKind::kForward, PhaseKind::kBackward, PhaseKind::kOptimizer};
  }
  return {};
}

bool InPhase(PhaseKind k, TaskPhase p) {
  switch (k) {
    case PhaseKind::kAll:
      return true;
    case PhaseKind::kForward:
      return p == TaskPhase::kForward;
    case PhaseKind::kBackward:
      return p == TaskPhase::kBackward;
    case PhaseKind::kOptimizer:
      return p == TaskPhase::kOptimizer;
    case PhaseKind::kBackwardOptimizer:
      return p != TaskPhase::kForward;
  }
  return false;
}

const char* ToString(OrderPolicy p) {
  switch (p) {
    case OrderPolicy::kForwardFirst:
      return "forward-first";
    case OrderPolicy::kMicroBatchFirst:
      return "micro-batch-first";
    case OrderPolicy::kCriticalPath:
      return "critical-path";
  }
  return "?";
}

namespace {

// Priority-driven topological order (Kahn's algorithm, smallest key first).
std::vector<int> GlobalOrder(const SearchContext& ctx) {
  const TaskGraph& g = ctx.graph;
  const int n = static_cast<int>(g.size());
  std::vector<int> topo_pos(ctx.model->modules.size(), 0);
  {
    auto order = ctx.model->TopologicalOrder();
    for (size_t i = 0; i < order.size(); ++i)
      topo_pos[ctx.model->IndexOf(order[i])] = static_cast<int>(i);
  }
  // Bottom level: longest path to the end, in full-GPU isolated time.
  std::vector<double> bottom(n, 0);
  if (ctx.policy == OrderPolicy::kCriticalPath) {
    // Reverse topological order via Kahn on the reversed graph.
    std::vector<int> outdeg(n, 0);
    for (int t = 0; t < n; ++t)
      outdeg[t] = static_cast<int>(g.out_edges(t).size());
    std::vector<int> stack;
    for (int t = 0; t < n; ++t)
      if (outdeg[t] == 0) stack.push_back(t);
    const double S = ctx.device->sm_count.value();
    while (!stack.empty()) {
      int t = stack.back();
      stack.pop_back();
      double best = 0;
      for (int e : g.out_edges(t))
        best = std::max(best, bottom[g.edges()[e].to]);
      const Task& task = g.tasks()[t];
      bottom[t] =
          best + ctx.perf->Isolated(PerfModel::Kind(task.module_index, task.id.phase), S).value();
      for (int e : g.in_edges(t))
        if (--outdeg[g.edges()[e].from] == 0) stack.push_back(g.edges()[e].from);
    }
  }
  using Key = std::tuple<double, double, double, int>;
  auto key = [&](int t) -> Key {
    const Task& task = g.tasks()[t];
    const double phase = static_cast<int>(task.id.phase);
    const double topo = task.id.phase == TaskPhase::kBackward ? -topo_pos[task.module_index]
                                                              : topo_pos[task.module_index];
    switch (ctx.policy) {
      case OrderPolicy::kForwardFirst:
        return {phase, double(task.id.micro_batch), topo, t};
      case OrderPolicy::kMicroBatchFirst:
        return {double(task.id.micro_batch), phase, topo, t};
      case OrderPolicy::kCriticalPath:
        return {-bottom[t], phase, topo, t};
    }
    return {0, 0, 0, t};
  };
  std::vector<int> indeg(n, 0);
  for (int t = 0; t < n; ++t)
    indeg[t] = static_cast<int>(g.in_edges(t).size());
  std::priority_queue<std::pair<Key, int>, std::vector<std::pair<Key, int>>, std::greater<>> q;
  for (int t = 0; t < n; ++t)
    if (indeg[t] == 0) q.push({key(t), t});
  std::vector<int> rank(n, 0);
  int pos = 0;
  while (!q.empty()) {
    int t = q.top().second;
    q.pop();
    rank[t] = pos++;
    for (int e : g.out_edges(t)) {
      int v = g.edges()[e].to;
      if (--indeg[v] == 0) q.push({key(v), v});
    }
  }
  return rank;
}

}  // namespace

StatusOr<std::unique_ptr<SearchContext>> SearchContext::Make(
    const ModelSpec& model, const DeviceSpec& device, std::shared_ptr<const PerfModel> perf,
    int micro_batches, const std::map<std::string, int>& buffers, OrderPolicy policy,
    double memory_budget) {
  auto ctx = std::make_unique<SearchContext>();
  ctx->model = &model;
  ctx->device = &device;
  ctx->micro_batches = micro_batches;
  ctx->buffers = buffers;
  ctx->policy = policy;
  ctx->memory_budget = memory_budget;
  ctx->perf = std::move(perf);
  MOSAIC_ASSIGN_OR_RETURN(ctx->graph, BuildTaskGraph(model, micro_batches, buffers));
  ctx->rank = GlobalOrder(*ctx);
  ctx->sim = std::make_unique<Simulator>(ctx->graph, *ctx->perf);
  return ctx;
}

int SearchContext::sms_of(const PartitionGroup& g) const {
  if (!g.dedicated) return 0;
  return g.granules * device->sm_granularity.value() +
         (g.remainder ? device->remainder().value() : 0);
}

std::vector<int> ModulesInPhase(const SearchContext& ctx, PhaseKind kind) {
  std::vector<char> has(ctx.model->modules.size(), 0);
  for (const Task& t : ctx.graph.tasks())
    if (InPhase(kind, t.id.phase)) has[t.module_index] = 1;
  std::vector<int> out;
  for (size_t m = 0; m < has.size(); ++m)
    if (has[m]) out.push_back(static_cast<int>(m));
  return out;
}

bool IsFeasible(const SearchContext& ctx, const PhaseLayout& layout) {
  int granules = 0, remainders = 0, dedicated_sms = 0;
  bool shared = false;
  for (const PartitionGroup& g : layout.groups) {
    if (g.modules.empty()) return false;
    if (!g.dedicated) {
      shared = true;
      continue;
    }
    if (g.granules < 0) return false;
    const int sms = ctx.sms_of(g);
    if (sms <= 0 || !ctx.device->IsValidQuota(SmCount(sms))) return false;
    granules += g.granules;
    remainders += g.remainder ? 1 : 0;
    dedicated_sms += sms;
  }
  if (granules > ctx.device->sm_groups || remainders > 1) return false;
  if (remainders > 0 && ctx.device->remainder().value() <= 0) return false;
  if (shared && dedicated_sms >= ctx.device->sm_count.value()) return false;
  return true;
}

void Normalize(PhaseLayout* layout) {
  for (auto& g : layout->groups) {
    std::sort(g.modules.begin(), g.modules.end());
    if (!g.dedicated) {
      g.granules = 0;
      g.remainder = false;
    }
  }
  layout->groups.erase(std::remove_if(layout->groups.begin(), layout->groups.end(),
                                      [](const PartitionGroup& g) { return g.modules.empty(); }),
                       layout->groups.end());
  std::sort(layout->groups.begin(), layout->groups.end(),
            [](const PartitionGroup& a, const PartitionGroup& b) {
              return a.modules.front() < b.modules.front();
            });
}

std::string Key(const PhaseLayout& layout) {
  std::string k;
  for (const auto& g : layout.groups) {
    k += g.dedicated ? "d" + std::to_string(g.granules) + (g.remainder ? "r" : "") : "s";
    k += ":";
    for (int m : g.modules)
      k += std::to_string(m) + ",";
    k += "|";
  }
  return k;
}

std::vector<int> PhaseTasks(const SearchContext& ctx, PhaseKind kind) {
  std::vector<int> tasks;
  for (const Task& t : ctx.graph.tasks())
    if (InPhase(kind, t.id.phase)) tasks.push_back(t.index);
  std::sort(tasks.begin(), tasks.end(), [&](int a, int b) { return ctx.rank[a] < ctx.rank[b]; });
  return tasks;
}

SimPhase ToSimPhase(const SearchContext& ctx, PhaseKind kind, const PhaseLayout& layout,
                    const std::vector<int>* phase_tasks, bool with_ids) {
  SimPhase sp;
  sp.name = PhaseName(kind);
  thread_local std::vector<int> group_of;
  group_of.assign(ctx.model->modules.size(), -1);
  sp.partitions.resize(layout.groups.size());
  for (size_t i = 0; i < layout.groups.size(); ++i) {
    const PartitionGroup& g = layout.groups[i];
    SimPartition& p = sp.partitions[i];
    for (int m : g.modules) {
      group_of[m] = static_cast<int>(i);
      if (with_ids) p.id += (p.id.empty() ? "" : "+") + ctx.model->modules[m].name;
    }
    if (with_ids && layout.groups.size() == 1 && g.modules.size() > 1) p.id = "all";
    p.kind = g.dedicated ? PartitionKind::kDedicated : PartitionKind::kShared;
    p.sms = ctx.sms_of(g);
  }
  std::vector<int> own;
  if (!phase_tasks) {
    own = PhaseTasks(ctx, kind);
    phase_tasks = &own;
  }
  for (int t : *phase_tasks) {
    int g = group_of[ctx.graph.tasks()[t].module_index];
    if (g >= 0) sp.partitions[g].tasks.push_back(t);
  }
  return sp;
}

double PhaseEvaluator::ModuleWork(int module, int sms) {
  const int S = ctx_->device->sm_count.value();
  if (work_.empty()) work_.resize(ctx_->model->modules.size());
  std::vector<double>& w = work_[module];
  if (w.empty()) {
    w.assign(S + 1, 0.0);
    for (int t : tasks_) {
      const Task& task = ctx_->graph.tasks()[t];
      if (task.module_index != module) continue;
      const int kind = PerfModel::Kind(module, task.id.phase);
      for (int s = 0; s <= S; ++s)
        w[s] += ctx_->perf->Isolated(kind, std::max(s, 1)).value();
    }
  }
  return w[std::clamp(sms, 0, S)];
}

double PhaseEvaluator::Evaluate(const PhaseLayout& layout, double bound) {
  const std::string key = Key(layout);
  auto it = memo_.find(key);
  if (it != memo_.end()) {
    if (it->second.exact) return it->second.value;
    if (it->second.value >= bound) return kInfeasible;  // known to exceed an even lower bound
  }
  double result = kInfeasible;
  bool exact = true;
  last_peak_ = 0;
  if (IsFeasible(*ctx_, layout)) {
    SimProgram program;
    program.phases.push_back(ToSimPhase(*ctx_, kind_, layout, &tasks_, /*with_ids=*/false));
    SimOptions options;
    options.record_tasks = false;
    options.step_overhead = false;  // phases compare without the executor's per-step work
    // Stop once past the bound (a little slack so ties with the bound stay exact).
    if (bound < kInfeasible) options.stop_after_us = bound * (1 + 1e-6);
    ++ctx_->simulations;
    StatusOr<SimResult> r = ctx_->sim->Run(program, options);
    if (r.ok() && !(r->step.value() < kInfeasible)) {
      memo_[key] = {options.stop_after_us, false};
      return kInfeasible;
    }
    if (r.ok()) {
      last_peak_ = r->peak_activation.value();
      if (ctx_->memory_budget <= 0 || r->peak_activation.value() <= ctx_->memory_budget) {
        result = r->step.value();
      } else {
        ctx_->smallest_rejected_peak =
            std::min(ctx_->smallest_rejected_peak, r->peak_activation.value());
      }
    }
  }
  memo_[key] = {result, exact};
  return result;
}

PhaseSpec ToPhaseSpec(const SearchContext& ctx, const SimPhase& sp) {
  PhaseSpec ph;
  ph.name = sp.name;
  for (const SimPartition& p : sp.partitions) {
    PartitionSpec ps;
    ps.id = p.id;
    ps.kind = p.kind;
    ps.sms = SmCount(p.sms);
    ps.priority = p.priority;
    for (int t : p.tasks)
      ps.tasks.push_back(ctx.graph.tasks()[t].id);
    ph.partitions.push_back(std::move(ps));
  }
  return ph;
}

Plan ToPlan(const SearchContext& ctx, const Candidate& c, const std::string& name) {
  Plan plan;
  plan.name = name;
  plan.model = ctx.model->name;
  plan.device = ctx.device->name;
  plan.micro_batches = ctx.micro_batches;
  plan.activation_buffers = ctx.buffers;
  const auto kinds = PhasesOf(c.structure);
  for (size_t i = 0; i < kinds.size() && i < c.layouts.size(); ++i) {
    SimPhase sp = ToSimPhase(ctx, kinds[i], c.layouts[i]);
    plan.phases.push_back(ToPhaseSpec(ctx, sp));
  }
  if (c.step_us < kInfeasible) plan.predicted_step = TimeUs(c.step_us);
  return plan;
}

}  // namespace mosaic
