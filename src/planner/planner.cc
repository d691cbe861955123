// The planner: greedy seeds, hill-climbing refinement and the outer search over phase
// structures, micro-batches, activation buffers and task orders; see planner.h.
#include "planner/planner.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "core/cost.h"
#include "planner/inputs.h"

namespace mosaic {

// Note [planner search]
// The space: a plan cuts the step into phases (one phase; forward | backward+optimizer;
// forward | backward | optimizer), and in each phase groups the modules into partitions, each
// dedicated (whole SM granules, plus at most one partition holding the remainder group) or a
// shared plain stream; tasks run in each partition in the order of one global priority list
// (forward-first, micro-batch-first or critical-path), which never deadlocks. Outer choices:
// micro-batch count and, in one-phase plans, fewer activation buffers than micro-batches
// (which lets later micro-batches reuse memory, 1F1B-style) when memory is short.
// Phases are separated by barriers, so the step time is the sum of phase times and each phase
// is searched on its own: a phase is simulated alone (tasks of earlier phases count as done).
// Per phase the heuristic
//  1. seeds: temporal (one stream), all-shared (a stream per module), and for 2..4 groups
//     (longest-processing-time grouping by work) all-dedicated and all-shared versions, plus
//     every module dedicated, with quotas from greedy balancing: every dedicated group starts
//     at one granule (the shared pool, if any, too) and each further granule goes to the group
//     whose estimated finish (sum of its tasks' isolated times at its quota) is latest;
//  2. refines seeds by steepest descent (every seed on phases of up to 4 modules, the best
//     three on wider ones) over: one granule between two partitions
//     or the pool, the remainder group to another partition, a partition's kind flipped,
//     one module moved to another or a new partition, two partitions merged; every neighbor is
//     simulated (memoized) and the best strict improvement taken, until none is left.
// The temporal and all-shared plans are always evaluated, so the result is never predicted
// worse than either. The oracle enumerates every grouping x kind x quota of each phase.

namespace {

constexpr double kImprove = 1e-9;  // relative: an improvement smaller than this is none
constexpr int kWideLayout = 6;     // partitions beyond which the costliest moves are thinned

// Estimated busy time of group `g` in this phase at `sms` SMs: its tasks back to back.
double GroupWork(PhaseEvaluator& eval, const std::vector<int>& modules, double sms) {
  double sum = 0;
  for (int m : modules)
    sum += eval.ModuleWork(m, static_cast<int>(sms));
  return sum;
}

// Greedy quota balancing (Note [planner search], step 1). Groups marked dedicated get
// granules; shared groups together form the pool, which keeps at least one granule.
// Returns false when the dedicated groups cannot all get a valid quota.
bool BalanceQuotas(PhaseEvaluator& eval, PhaseLayout* layout) {
  const SearchContext& ctx = *eval.context();
  const DeviceSpec& d = *ctx.device;
  const int g = d.sm_granularity.value();
  const int rem = d.remainder().value();
  std::vector<int> dedicated;
  std::vector<int> pool_modules;
  for (size_t i = 0; i < layout->groups.size(); ++i) {
    auto& grp = layout->groups[i];
    grp.granules = 0;
    grp.remainder = false;
    if (grp.dedicated) {
      dedicated.push_back(static_cast<int>(i));
    } else {
      pool_modules.insert(pool_modules.end(), grp.modules.begin(), grp.modules.end());
    }
  }
  std::sort(pool_modules.begin(), pool_modules.end());
  const bool has_pool = !pool_modules.empty();
  int free = d.sm_groups - (has_pool ? 1 : 0);
  int pool_granules = has_pool ? 1 : 0;
  // Every dedicated group needs one granule, or the remainder (one group only).
  bool remainder_free = rem > 0;
  for (int i : dedicated) {
    if (free > 0) {
      layout->groups[i].granules = 1;
      --free;
    } else if (remainder_free) {
      layout->groups[i].remainder = true;
      remainder_free = false;
    } else {
      return false;
    }
  }
  auto time_of = [&](int i) {  // -1: the pool
    if (i < 0) return GroupWork(eval, pool_modules, pool_granules * g + (remainder_free ? rem : 0));
    return GroupWork(eval, layout->groups[i].modules, ctx.sms_of(layout->groups[i]));
  };
  std::vector<int> all = dedicated;
  if (has_pool) all.push_back(-1);
  if (all.empty()) return true;
  while (free > 0) {
    int worst = all[0];
    double worst_t = -1;
    for (int i : all) {
      double t = time_of(i);
      if (t > worst_t) worst_t = t, worst = i;
    }
    if (worst < 0) {
      ++pool_granules;
    } else {
      ++layout->groups[worst].granules;
    }
    --free;
  }
  if (remainder_free && !dedicated.empty()) {
    int worst = dedicated[0];
    double worst_t = -1;
    for (int i : dedicated) {
      double t = time_of(i);
      if (t > worst_t) worst_t = t, worst = i;
    }
    // Leave the remainder to the pool when the pool is the latest to finish.
    if (!has_pool || time_of(-1) < worst_t) layout->groups[worst].remainder = true;
  }
  return true;
}

// Longest-processing-time grouping of modules into `k` groups by full-GPU work.
std::vector<std::vector<int>> LptGroups(PhaseEvaluator& eval, const std::vector<int>& modules,
                                        int k) {
  const double S = eval.context()->device->sm_count.value();
  std::vector<std::pair<double, int>> work;
  for (int m : modules)
    work.push_back({GroupWork(eval, {m}, S), m});
  std::stable_sort(work.begin(), work.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::vector<int>> groups(k);
  std::vector<double> load(k, 0);
  for (const auto& [w, m] : work) {
    int best = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    groups[best].push_back(m);
    load[best] += w;
  }
  groups.erase(std::remove_if(groups.begin(), groups.end(),
                              [](const std::vector<int>& g) { return g.empty(); }),
               groups.end());
  for (auto& g : groups)
    std::sort(g.begin(), g.end());
  return groups;
}

PhaseLayout MakeLayout(const std::vector<std::vector<int>>& groups, bool dedicated) {
  PhaseLayout l;
  for (const auto& g : groups)
    l.groups.push_back({dedicated, 0, false, g});
  Normalize(&l);
  return l;
}

// `eval` (optional) enables the re-balanced variants of structural moves.
std::vector<PhaseLayout> Neighbors(const SearchContext& ctx, const PhaseLayout& base,
                                   PhaseEvaluator* eval) {
  std::vector<PhaseLayout> out;
  const int G = static_cast<int>(base.groups.size());
  int used = 0;
  int remainder_holder = -1;
  for (int i = 0; i < G; ++i) {
    const auto& g = base.groups[i];
    if (g.dedicated) {
      used += g.granules;
      if (g.remainder) remainder_holder = i;
    }
  }
  const int free = ctx.device->sm_groups - used;
  const bool remainder_exists = ctx.device->remainder().value() > 0;
  auto push = [&](PhaseLayout l) {
    Normalize(&l);
    if (IsFeasible(ctx, l)) out.push_back(std::move(l));
  };
  for (int step : {1, 2, 4}) {
    for (int i = 0; i < G; ++i) {
      if (!base.groups[i].dedicated) continue;
      // Granules from i to j, or to the pool.
      if (base.groups[i].granules >= step) {
        for (int j = 0; j < G; ++j) {
          if (j == i || !base.groups[j].dedicated) continue;
          PhaseLayout l = base;
          l.groups[i].granules -= step;
          l.groups[j].granules += step;
          push(std::move(l));
        }
        PhaseLayout l = base;
        l.groups[i].granules -= step;
        push(std::move(l));
      }
      // Granules from the pool to i.
      if (free >= step) {
        PhaseLayout l = base;
        l.groups[i].granules += step;
        push(std::move(l));
      }
    }
  }
  // The remainder group moves.
  if (remainder_exists) {
    for (int j = 0; j < G; ++j) {
      if (!base.groups[j].dedicated || j == remainder_holder) continue;
      PhaseLayout l = base;
      if (remainder_holder >= 0) l.groups[remainder_holder].remainder = false;
      l.groups[j].remainder = true;
      push(std::move(l));
    }
    if (remainder_holder >= 0) {
      PhaseLayout l = base;
      l.groups[remainder_holder].remainder = false;
      push(std::move(l));
    }
  }
  // Flip a partition's kind.
  int shared_groups = 0;
  for (const auto& g : base.groups)
    shared_groups += g.dedicated ? 0 : 1;
  for (int i = 0; i < G; ++i) {
    PhaseLayout l = base;
    auto& g = l.groups[i];
    if (g.dedicated) {
      g.dedicated = false;
      push(std::move(l));
    } else {
      g.dedicated = true;
      int pool_left_needed = shared_groups > 1 ? 1 : 0;
      int avail = free - pool_left_needed;
      // Every size on small layouts; on wide ones (where this would dominate the search) one
      // granule, half and all of what is free.
      std::vector<int> takes;
      if (G <= kWideLayout) {
        for (int take = 1; take <= avail; ++take)
          takes.push_back(take);
      } else {
        takes = {1, avail / 2, avail};
      }
      for (int take : takes) {
        if (take < 1 || take > avail) continue;
        PhaseLayout t = l;
        t.groups[i].granules = take;
        push(t);
        if (remainder_exists && remainder_holder < 0) {
          t.groups[i].remainder = true;
          push(std::move(t));
        }
      }
    }
  }
  // Swap kinds: a dedicated partition's SMs go to a shared one, which becomes dedicated.
  for (int i = 0; i < G; ++i) {
    if (!base.groups[i].dedicated) continue;
    for (int j = 0; j < G; ++j) {
      if (base.groups[j].dedicated) continue;
      PhaseLayout l = base;
      std::swap(l.groups[i].dedicated, l.groups[j].dedicated);
      std::swap(l.groups[i].granules, l.groups[j].granules);
      std::swap(l.groups[i].remainder, l.groups[j].remainder);
      push(std::move(l));
    }
  }
  // Re-split two dedicated partitions' granules every possible way (small layouts only).
  for (int i = 0; i < G && G <= kWideLayout; ++i) {
    for (int j = i + 1; j < G; ++j) {
      if (!base.groups[i].dedicated || !base.groups[j].dedicated) continue;
      const int total = base.groups[i].granules + base.groups[j].granules;
      const bool had_rem = base.groups[i].remainder || base.groups[j].remainder;
      for (int q = 0; q <= total; ++q) {
        // The remainder stays with the pair, on either side (or goes to the pool).
        for (int rem = 0; rem < (had_rem ? 3 : 1); ++rem) {
          PhaseLayout l = base;
          l.groups[i].granules = q;
          l.groups[j].granules = total - q;
          if (had_rem) {
            l.groups[i].remainder = rem == 1;
            l.groups[j].remainder = rem == 2;
          }
          push(std::move(l));
        }
      }
    }
  }
  // Trade one granule for the remainder group, or the remainder for one granule.
  if (remainder_exists) {
    for (int i = 0; i < G; ++i) {
      if (!base.groups[i].dedicated) continue;
      PhaseLayout l = base;
      if (!base.groups[i].remainder && base.groups[i].granules >= 1) {
        if (remainder_holder >= 0) l.groups[remainder_holder].remainder = false;
        l.groups[i].remainder = true;
        l.groups[i].granules -= 1;
        push(std::move(l));
      } else if (base.groups[i].remainder && free >= 1) {
        l.groups[i].remainder = false;
        l.groups[i].granules += 1;
        push(std::move(l));
      }
    }
  }
  // Keep one partition dedicated and put every other on the shared pool, re-balanced.
  if (eval && G <= kWideLayout) {
    for (int i = 0; i < G; ++i) {
      PhaseLayout l = base;
      for (int j = 0; j < G; ++j)
        l.groups[j].dedicated = j == i;
      if (BalanceQuotas(*eval, &l)) push(std::move(l));
    }
  }
  // Structural moves again, with quotas re-balanced greedily (small layouts only).
  if (eval && G <= kWideLayout) {
    const size_t structural = out.size();
    for (size_t k = 0; k < structural; ++k) {
      if (out[k].groups.size() == base.groups.size()) {
        bool same_kinds = true;
        for (size_t g = 0; g < out[k].groups.size(); ++g)
          same_kinds = same_kinds && out[k].groups[g].dedicated == base.groups[g].dedicated &&
                       out[k].groups[g].modules == base.groups[g].modules;
        if (same_kinds) continue;  // a quota move already
      }
      PhaseLayout l = out[k];
      if (BalanceQuotas(*eval, &l)) push(std::move(l));
    }
  }
  // Move one module to another group or a new one; merge two groups.
  for (int i = 0; i < G; ++i) {
    const auto& gi = base.groups[i];
    for (size_t k = 0; k < gi.modules.size(); ++k) {
      const int m = gi.modules[k];
      if (gi.modules.size() > 1) {
        for (int j = 0; j < G; ++j) {
          if (j == i) continue;
          PhaseLayout l = base;
          l.groups[i].modules.erase(l.groups[i].modules.begin() + k);
          l.groups[j].modules.push_back(m);
          push(std::move(l));
        }
        // A new partition: a shared stream, or dedicated with one granule from the pool or i.
        PhaseLayout l = base;
        l.groups[i].modules.erase(l.groups[i].modules.begin() + k);
        PhaseLayout s = l;
        s.groups.push_back({false, 0, false, {m}});
        push(std::move(s));
        PhaseLayout d = l;
        d.groups.push_back({true, 1, false, {m}});
        if (free >= 1) {
          push(d);
        } else if (gi.dedicated && gi.granules >= 2) {
          d.groups[i].granules -= 1;
          push(std::move(d));
        }
      } else {
        for (int j = 0; j < G; ++j) {
          if (j == i) continue;
          PhaseLayout l = base;  // i disappears: its SMs go back to the pool
          l.groups[j].modules.push_back(m);
          l.groups[i].modules.clear();
          push(std::move(l));
          if (base.groups[j].dedicated && gi.dedicated) {  // and its granules follow it
            PhaseLayout t = base;
            t.groups[j].modules.push_back(m);
            t.groups[j].granules += gi.granules;
            t.groups[j].remainder = t.groups[j].remainder || gi.remainder;
            t.groups[i].modules.clear();
            push(std::move(t));
          }
        }
      }
    }
  }
  return out;
}

PhaseChoice Refine(PhaseEvaluator& eval, PhaseChoice start, int max_rounds) {
  for (int round = 0; round < max_rounds; ++round) {
    PhaseChoice best = start;
    for (PhaseLayout& n : Neighbors(*eval.context(), start.layout, &eval)) {
      double t = eval.Evaluate(n, best.time_us);
      if (t < best.time_us * (1 - kImprove)) best = {std::move(n), t};
    }
    if (!(best.time_us < start.time_us)) break;
    start = std::move(best);
  }
  return start;
}

}  // namespace

PhaseChoice HeuristicPhaseSearch(PhaseEvaluator& eval, const std::vector<int>& modules,
                                 const PlannerOptions& options) {
  std::vector<PhaseLayout> seeds;
  seeds.push_back(MakeLayout({modules}, false));  // temporal: one stream
  if (modules.size() > 1) {
    std::vector<std::vector<int>> singles;
    for (int m : modules)
      singles.push_back({m});
    seeds.push_back(MakeLayout(singles, false));  // all shared
    PhaseLayout all_dedicated = MakeLayout(singles, true);
    if (BalanceQuotas(eval, &all_dedicated)) seeds.push_back(all_dedicated);
    const int max_groups = std::min<int>(4, static_cast<int>(modules.size()));
    for (int k = 2; k <= max_groups; ++k) {
      auto groups = LptGroups(eval, modules, k);
      seeds.push_back(MakeLayout(groups, false));
      PhaseLayout dedicated = MakeLayout(groups, true);
      if (BalanceQuotas(eval, &dedicated)) seeds.push_back(dedicated);
      // Mixed: the heaviest group on a shared stream (the pool), the others dedicated.
      PhaseLayout mixed = MakeLayout(groups, true);
      int heaviest = 0;
      double most = -1;
      for (size_t i = 0; i < mixed.groups.size(); ++i) {
        double w =
            GroupWork(eval, mixed.groups[i].modules, eval.context()->device->sm_count.value());
        if (w > most) most = w, heaviest = static_cast<int>(i);
      }
      mixed.groups[heaviest].dedicated = false;
      if (BalanceQuotas(eval, &mixed)) seeds.push_back(mixed);
      // The opposite: the heaviest group dedicated, every other module on its own stream.
      PhaseLayout protect;
      protect.groups.push_back({true, 0, false, groups[heaviest]});
      for (size_t i = 0; i < groups.size(); ++i)
        if (static_cast<int>(i) != heaviest)
          for (int m : groups[i])
            protect.groups.push_back({false, 0, false, {m}});
      Normalize(&protect);
      if (BalanceQuotas(eval, &protect)) seeds.push_back(protect);
    }
    // One module protected on dedicated SMs, the others on their own streams.
    for (int m : modules) {
      PhaseLayout one;
      for (int k : modules)
        one.groups.push_back({k == m, 0, false, {k}});
      Normalize(&one);
      if (BalanceQuotas(eval, &one)) seeds.push_back(one);
    }
  }
  std::vector<PhaseChoice> scored;
  std::set<std::string> seen;
  for (PhaseLayout& s : seeds) {
    Normalize(&s);
    if (!seen.insert(Key(s)).second) continue;
    double t = eval.Evaluate(s);
    if (t < kInfeasible) scored.push_back({s, t});
  }
  std::stable_sort(scored.begin(), scored.end(), [](const PhaseChoice& a, const PhaseChoice& b) {
    return a.time_us < b.time_us;
  });
  PhaseChoice best;
  // Small phases are cheap to simulate: refine every seed there (more restarts, fewer local
  // optima); wide ones refine only the best few.
  const int refine = modules.size() <= 4 ? static_cast<int>(scored.size())
                                         : std::min<int>(options.refine_from_seeds, scored.size());
  for (int i = 0; i < refine; ++i) {
    PhaseChoice r = Refine(eval, scored[i], options.max_refine_rounds);
    if (r.time_us < best.time_us) best = std::move(r);
  }
  return best;
}

PhaseChoice ExhaustivePhaseSearch(PhaseEvaluator& eval, const std::vector<int>& modules) {
  const SearchContext& ctx = *eval.context();
  const int n = static_cast<int>(modules.size());
  const int groups_total = ctx.device->sm_groups;
  const bool has_remainder = ctx.device->remainder().value() > 0;
  PhaseChoice best;
  std::vector<int> label(n, 0);
  // Every set partition of the modules (restricted growth strings).
  std::function<void(int, int)> partition = [&](int i, int k) {
    if (i == n) {
      PhaseLayout base;
      base.groups.resize(k);
      for (int j = 0; j < n; ++j)
        base.groups[label[j]].modules.push_back(modules[j]);
      // Every kind and quota per group.
      std::function<void(int, int, bool)> assign = [&](int g, int left, bool rem_free) {
        if (g == k) {
          PhaseLayout l = base;
          Normalize(&l);
          if (!IsFeasible(ctx, l)) return;
          double t = eval.Evaluate(l, best.time_us);
          if (t < best.time_us) best = {l, t};
          return;
        }
        base.groups[g].dedicated = false;
        base.groups[g].granules = 0;
        base.groups[g].remainder = false;
        assign(g + 1, left, rem_free);
        base.groups[g].dedicated = true;
        for (int q = 0; q <= left; ++q) {
          base.groups[g].granules = q;
          base.groups[g].remainder = false;
          if (q > 0) assign(g + 1, left - q, rem_free);
          if (rem_free && has_remainder) {
            base.groups[g].remainder = true;
            assign(g + 1, left - q, false);
            base.groups[g].remainder = false;
          }
        }
        base.groups[g].dedicated = false;
        base.groups[g].granules = 0;
      };
      assign(0, groups_total, true);
      return;
    }
    for (int j = 0; j <= k; ++j) {
      label[i] = j;
      partition(i + 1, std::max(k, j + 1));
    }
  };
  if (n > 0) partition(0, 0);
  return best;
}

// Note [reorder refinement]
// After the layout search, each short-listed plan's partition orders are improved by swapping
// adjacent tasks of one partition (not directly dependent), keeping a swap when the whole step
// simulates strictly faster within the memory budget, for a few passes. Swaps that would
// deadlock are rejected by the simulator. This reaches orders no global priority list gives
// (e.g. one module's backward ahead of another's in a shared stream).
bool ReorderTasks(const SearchContext& ctx, int passes, SimProgram* program, SimResult* best) {
  bool changed = false;
  for (int pass = 0; pass < passes; ++pass) {
    bool improved = false;
    for (SimPhase& ph : program->phases) {
      for (SimPartition& part : ph.partitions) {
        for (size_t k = 0; k + 1 < part.tasks.size(); ++k) {
          const int a = part.tasks[k], b = part.tasks[k + 1];
          bool dependent = false;
          for (int e : ctx.graph.out_edges(a))
            dependent = dependent || ctx.graph.edges()[e].to == b;
          if (dependent) continue;
          std::swap(part.tasks[k], part.tasks[k + 1]);
          SimOptions o{false, best->step.value() * (1 + 1e-9)};
          StatusOr<SimResult> r = ctx.sim->Run(*program, o);
          const bool better =
              r.ok() && r->step.value() < best->step.value() * (1 - kImprove) &&
              (ctx.memory_budget <= 0 || r->peak_activation.value() <= ctx.memory_budget);
          if (better) {
            *best = *r;
            improved = changed = true;
          } else {
            std::swap(part.tasks[k], part.tasks[k + 1]);
          }
        }
      }
    }
    if (!improved) break;
  }
  return changed;
}

// Note [priority refinement]
// After the layout search, each short-listed plan may raise one shared partition per phase to
// stream priority 1 (Note [stream priorities]): for each phase with two or more shared
// partitions, every shared partition is tried high in turn, and the one whose priority makes
// the whole step simulate strictly faster (within the memory budget) by the most is kept.
// Phases are refined one after another, each on top of the previous one's choice; a phase that
// already has a raised partition is left as it is. One raised
// partition per phase is what the measured cause asks for (the critical module's stream first,
// the others in its gaps); more levels would multiply the candidates for little.
std::vector<std::string> PrioritizeStreams(const SearchContext& ctx, SimProgram* program,
                                           SimResult* best) {
  std::vector<std::string> raised;
  for (SimPhase& ph : program->phases) {
    int shared = 0, raised_already = 0;
    for (const SimPartition& part : ph.partitions) {
      shared += part.kind == PartitionKind::kShared;
      raised_already += part.priority != 0;
    }
    if (shared < 2 || raised_already > 0) continue;
    int chosen = -1;
    SimResult chosen_result;
    for (size_t j = 0; j < ph.partitions.size(); ++j) {
      SimPartition& part = ph.partitions[j];
      if (part.kind != PartitionKind::kShared) continue;
      part.priority = 1;
      SimOptions o{false, best->step.value() * (1 + 1e-9)};
      StatusOr<SimResult> r = ctx.sim->Run(*program, o);
      part.priority = 0;
      const double bar = chosen >= 0 ? chosen_result.step.value() : best->step.value();
      if (r.ok() && r->step.value() < bar * (1 - kImprove) &&
          (ctx.memory_budget <= 0 || r->peak_activation.value() <= ctx.memory_budget)) {
        chosen = static_cast<int>(j);
        chosen_result = *r;
      }
    }
    if (chosen < 0) continue;
    ph.partitions[chosen].priority = 1;
    *best = chosen_result;
    raised.push_back(ph.partitions[chosen].id);
  }
  return raised;
}

namespace {

using PhaseSearchFn = std::function<PhaseChoice(PhaseEvaluator&, const std::vector<int>&)>;

// Modules that must keep every micro-batch's activations: a batch-level module (contrastive
// loss) waits for all of them, so fewer buffers upstream of it would deadlock.
std::vector<bool> BufferEligible(const ModelSpec& model) {
  const int n = static_cast<int>(model.modules.size());
  std::vector<bool> upstream(n, false);
  for (int m = 0; m < n; ++m) {
    const ModuleSpec& s = model.modules[m];
    if (s.is_loss() && s.loss == LossKind::kContrastive) upstream[m] = true;
  }
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& [from, to] : model.edges) {
      int a = model.IndexOf(from), b = model.IndexOf(to);
      if (a >= 0 && b >= 0 && upstream[b] && !upstream[a]) upstream[a] = changed = true;
    }
  }
  std::vector<bool> eligible(n);
  for (int m = 0; m < n; ++m)
    eligible[m] = !upstream[m];
  return eligible;
}

Plan PlanFromProgram(const SearchContext& ctx, const SimProgram& program, const std::string& name) {
  Plan plan;
  plan.name = name;
  plan.model = ctx.model->name;
  plan.device = ctx.device->name;
  plan.micro_batches = ctx.micro_batches;
  plan.activation_buffers = ctx.buffers;
  for (const SimPhase& sp : program.phases) {
    plan.phases.push_back(ToPhaseSpec(ctx, sp));
  }
  return plan;
}

struct Found {
  int ctx = 0;
  Candidate candidate;
};

StatusOr<PlanReport> RunPlanner(const ModelSpec& model, const DeviceSpec& device,
                                const Profile& profile, const PlannerOptions& options,
                                const PhaseSearchFn& search) {
  if (model.batch_size <= 0) return InvalidArgument("model " + model.name + " has no batch size");
  if (model.modules.empty()) return InvalidArgument("model " + model.name + " has no modules");
  if (device.sm_count.value() <= 0) return InvalidArgument("device " + device.name + " has no SMs");
  PlanReport report;
  PerfModelOptions perf_options = options.perf;
  // Fit the colocation parameters once, not once per micro-batch count.
  MOSAIC_ASSIGN_OR_RETURN(PerfModel::ColocationFit fit,
                          PerfModel::FitColocation(model, device, profile, perf_options));
  perf_options.contention = fit.contention;
  perf_options.shared_weight_exponent = fit.shared_weight_exponent;
  report.contention = fit.contention;
  report.shared_weight_exponent = fit.shared_weight_exponent;
  report.colocation_pairs = fit.pairs;
  report.colocation_rms_log_error = fit.rms_log_error;
  report.static_bytes = StaticStateBytes(model);
  const double total_budget = options.memory_budget_bytes > 0 ? options.memory_budget_bytes
                              : device.memory.value() > 0     ? 0.9 * device.memory.value()
                                                              : 0;
  if (total_budget > 0 && report.static_bytes >= total_budget) {
    return FailedPrecondition(
        "model " + model.name + " does not fit on " + device.name + ": its weights, gradients " +
        "and AdamW state need " + GibText(report.static_bytes) + ", over the memory budget of " +
        GibText(total_budget) + " (--memory-budget-gib, default 90% of the device's " +
        GibText(device.memory.value()) + ")");
  }
  report.activation_budget_bytes = total_budget > 0 ? total_budget - report.static_bytes : 0;

  std::vector<int> counts = options.micro_batches;
  if (counts.empty()) {
    counts.push_back(std::max(1, model.micro_batches));
    for (int c : {1, 2, 4, 8, 16})
      if (c <= options.max_micro_batches && model.batch_size % c == 0) counts.push_back(c);
  }
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  for (int c : counts) {
    if (c <= 0 || model.batch_size % c != 0)
      return InvalidArgument("micro-batch count " + std::to_string(c) +
                             " does not divide the batch size " + std::to_string(model.batch_size));
  }
  // The baselines run at the model's own micro-batch count, searched or not.
  const int model_mb = std::max(1, model.micro_batches);
  const bool search_model_mb = std::count(counts.begin(), counts.end(), model_mb) > 0;
  if (!search_model_mb) {
    counts.push_back(model_mb);
    std::sort(counts.begin(), counts.end());
  }
  const std::vector<bool> eligible = BufferEligible(model);
  std::vector<std::unique_ptr<SearchContext>> contexts;
  std::vector<Found> found;
  auto add_context = [&](std::shared_ptr<const PerfModel> perf, int mb,
                         const std::map<std::string, int>& buffers,
                         OrderPolicy policy) -> StatusOr<int> {
    MOSAIC_ASSIGN_OR_RETURN(auto ctx, SearchContext::Make(model, device, perf, mb, buffers, policy,
                                                          report.activation_budget_bytes));
    contexts.push_back(std::move(ctx));
    return static_cast<int>(contexts.size()) - 1;
  };
  // Evaluates a fixed one-phase layout (the baselines).
  auto baseline = [&](int ci, const PhaseLayout& layout, const std::string& what) {
    PhaseEvaluator eval(contexts[ci].get(), PhaseKind::kAll);
    Candidate c;
    c.structure = Structure::kSingle;
    c.layouts = {layout};
    c.step_us = eval.Evaluate(layout);
    c.strategy = what;
    found.push_back({ci, c});
    // Reported like the ranked plans (whole steps): with the executor's per-step work.
    const StepOverheadModel& o = contexts[ci]->perf->step_overhead();
    return c.step_us + o.before_us + o.after_us;
  };

  std::map<std::tuple<int, int, std::vector<int>>, PhaseChoice> phase_cache;
  for (int mb : counts) {
    MOSAIC_ASSIGN_OR_RETURN(
        PerfModel pm, PerfModel::Build(model, device, profile, model.batch_size / mb, perf_options,
                                       options.calibration));
    auto perf = std::make_shared<const PerfModel>(std::move(pm));
    report.profile_source = perf->source();
    std::vector<std::map<std::string, int>> buffer_options = {{}};
    if (options.try_activation_buffers && mb > 1) {
      for (int b : {1, 2}) {
        if (b >= mb) continue;
        std::map<std::string, int> buf;
        for (size_t m = 0; m < model.modules.size(); ++m)
          if (eligible[m]) buf[model.modules[m].name] = b;
        if (!buf.empty()) buffer_options.push_back(buf);
      }
    }
    if (mb == model_mb) {
      MOSAIC_ASSIGN_OR_RETURN(int ci, add_context(perf, mb, {}, OrderPolicy::kForwardFirst));
      std::vector<int> all(model.modules.size());
      for (size_t m = 0; m < all.size(); ++m)
        all[m] = static_cast<int>(m);
      std::vector<std::vector<int>> singles;
      for (int m : all)
        singles.push_back({m});
      report.temporal_us = baseline(ci, MakeLayout({all}, false), "temporal");
      report.all_shared_us = baseline(ci, MakeLayout(singles, false), "all shared streams");
    }
    if (mb == model_mb && !search_model_mb) continue;  // baselines only
    for (const auto& buffers : buffer_options) {
      for (OrderPolicy policy : options.policies) {
        MOSAIC_ASSIGN_OR_RETURN(int ci, add_context(perf, mb, buffers, policy));
        SearchContext* ctx = contexts[ci].get();
        std::map<PhaseKind, std::unique_ptr<PhaseEvaluator>> evals;
        std::map<PhaseKind, PhaseChoice> chosen;
        for (Structure s : options.structures) {
          if (!buffers.empty() && s != Structure::kSingle) continue;  // would deadlock
          Candidate c;
          c.structure = s;
          c.step_us = 0;
          for (PhaseKind k : PhasesOf(s)) {
            if (!chosen.count(k)) {
              evals[k] = std::make_unique<PhaseEvaluator>(ctx, k);
              // Policies often order a phase's tasks identically (forward-first and
              // micro-batch-first agree inside a forward phase): search such a phase once.
              // One-phase searches also depend on the buffers, so they are not shared.
              auto key = std::make_tuple(mb, static_cast<int>(k), evals[k]->tasks());
              auto hit = k == PhaseKind::kAll ? phase_cache.end() : phase_cache.find(key);
              if (hit != phase_cache.end()) {
                chosen[k] = hit->second;
              } else {
                chosen[k] = search(*evals[k], ModulesInPhase(*ctx, k));
                if (k != PhaseKind::kAll) phase_cache.emplace(key, chosen[k]);
              }
            }
            c.layouts.push_back(chosen[k].layout);
            c.step_us += chosen[k].time_us;
          }
          c.strategy = std::string(ToString(s)) + ", " + std::to_string(mb) + " micro-batch" +
                       (mb > 1 ? "es" : "") + ", " + ToString(policy);
          if (!buffers.empty())
            c.strategy += ", " + std::to_string(buffers.begin()->second) + " buffer(s)";
          found.push_back({ci, std::move(c)});
        }
      }
    }
  }
  for (const auto& ctx : contexts)
    report.simulations += ctx->simulations;
  std::stable_sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return a.candidate.step_us < b.candidate.step_us;
  });
  std::set<std::string> seen;
  for (const Found& f : found) {
    if (static_cast<int>(report.plans.size()) >= options.top_k) break;
    if (!(f.candidate.step_us < kInfeasible)) break;
    const SearchContext& ctx = *contexts[f.ctx];
    Plan plan = ToPlan(ctx, f.candidate, model.name + "-" + device.name);
    Json key = ToJson(plan);
    key.erase("name");
    key.erase("predicted_step_us");
    if (!seen.insert(key.dump()).second) continue;
    // The whole plan once more, for utilization and memory over the full step.
    SimProgram program;
    const auto kinds = PhasesOf(f.candidate.structure);
    for (size_t i = 0; i < kinds.size(); ++i)
      program.phases.push_back(ToSimPhase(ctx, kinds[i], f.candidate.layouts[i]));
    MOSAIC_ASSIGN_OR_RETURN(SimResult r, ctx.sim->Run(program, {false, 0}));
    std::string strategy = f.candidate.strategy;
    bool changed = false;
    if (options.prioritize_streams) {
      const std::vector<std::string> raised = PrioritizeStreams(ctx, &program, &r);
      for (const std::string& id : raised)
        strategy += ", " + id + " prioritized";
      changed = !raised.empty();
    }
    if (options.reorder_passes > 0 && ReorderTasks(ctx, options.reorder_passes, &program, &r)) {
      changed = true;
      strategy += ", reordered";
    }
    if (changed) plan = PlanFromProgram(ctx, program, plan.name);
    RankedPlan rp;
    plan.predicted_step = r.step;
    rp.plan = std::move(plan);
    rp.step_us = r.step.value();
    rp.utilization = r.utilization;
    rp.peak_activation_bytes = r.peak_activation.value();
    rp.strategy = strategy;
    report.plans.push_back(std::move(rp));
  }
  if (report.plans.empty()) {
    double need = kInfeasible;
    for (const auto& ctx : contexts)
      need = std::min(need, ctx->smallest_rejected_peak);
    std::string why = need < kInfeasible
                          ? "the smallest activation peak found is " + GibText(need) +
                                ", over the " + GibText(report.activation_budget_bytes) +
                                " left for activations (" + GibText(total_budget) +
                                " budget minus " + GibText(report.static_bytes) +
                                " of weights, gradients and AdamW state)"
                          : "no candidate could be simulated";
    return FailedPrecondition("no plan for " + model.name + " fits on " + device.name + ": " + why +
                              "; allow more micro-batches (--micro-batches) or a larger "
                              "--memory-budget-gib");
  }
  std::stable_sort(report.plans.begin(), report.plans.end(),
                   [](const RankedPlan& a, const RankedPlan& b) { return a.step_us < b.step_us; });
  return report;
}

}  // namespace

StatusOr<PlanReport> PlanStep(const ModelSpec& model, const DeviceSpec& device,
                              const Profile& profile, const PlannerOptions& options) {
  return RunPlanner(model, device, profile, options,
                    [&](PhaseEvaluator& e, const std::vector<int>& modules) {
                      return HeuristicPhaseSearch(e, modules, options);
                    });
}

StatusOr<PlanReport> PlanStepExhaustive(const ModelSpec& model, const DeviceSpec& device,
                                        const Profile& profile, const PlannerOptions& options) {
  if (model.modules.size() > 5) {
    return InvalidArgument("the exhaustive search enumerates every grouping of modules; " +
                           model.name + " has " + std::to_string(model.modules.size()) +
                           " modules, over the 5 it can handle (use the heuristic)");
  }
  return RunPlanner(model, device, profile, options,
                    [](PhaseEvaluator& e, const std::vector<int>& modules) {
                      return ExhaustivePhaseSearch(e, modules);
                    });
}

}  // namespace mosaic
