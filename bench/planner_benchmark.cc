// Planner and simulator benchmarks (google benchmark). What issue 4 asks to show:
//  - BM_OracleGap: the heuristic against the exhaustive oracle over >= 200 generated instances
//    (counters: instances, worst_gap_pct, mean_gap_pct, exact = instances with gap < 1e-9);
//  - BM_Plan/<modules>/<gpus>: wall time of PlanStep for 8 modules on one GPU and 16 modules
//    on 64 GPUs (data parallel; planned with the simulator alone);
//  - BM_Simulate: simulator events per second on one core.
//  - BM_PlanMultiGpu/<gpus>/<model>: wall time of PlanMultiGpu (`mosaic plan --gpus N`: the
//    single-GPU search plus every colocated / disaggregated layout) for 64 and 512 GPUs.
//
//   ninja -C build-plan planner_benchmark && build-plan/bench/planner_benchmark
//   build-plan/bench/planner_benchmark --benchmark_filter=OracleGap --benchmark_format=json
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>

#include "planner/multi_gpu.h"
#include "planner/planner.h"
#include "planner_instances.h"
#include "sim/simulator.h"

namespace mosaic::bench {
namespace {

void BM_OracleGap(benchmark::State& state) {
  const int count = static_cast<int>(state.range(0));
  std::vector<PlanningInstance> family = OracleFamily(count, /*seed=*/2024);
  PlannerOptions options;
  options.micro_batches = {1, 2};
  double worst = 0, sum = 0;
  int exact = 0, solved = 0;
  std::string worst_name;
  for (auto _ : state) {
    worst = sum = 0;
    exact = solved = 0;
    for (const PlanningInstance& in : family) {
      StatusOr<PlanReport> h = PlanStep(in.model, in.device, in.profile, options);
      StatusOr<PlanReport> x = PlanStepExhaustive(in.model, in.device, in.profile, options);
      if (!h.ok() || !x.ok()) {
        state.SkipWithError((in.name + ": " + (h.ok() ? x : h).status().ToString()).c_str());
        return;
      }
      const double gap = h->plans[0].step_us / x->plans[0].step_us - 1;
      if (gap > worst) worst = gap, worst_name = in.name;
      sum += gap;
      exact += gap < 1e-9 ? 1 : 0;
      ++solved;
    }
  }
  state.counters["instances"] = solved;
  state.counters["worst_gap_pct"] = 100 * worst;
  state.counters["mean_gap_pct"] = 100 * sum / std::max(1, solved);
  state.counters["exact"] = exact;
  state.SetLabel("worst: " + (worst_name.empty() ? std::string("none") : worst_name));
}
BENCHMARK(BM_OracleGap)->Arg(240)->Iterations(1)->Unit(benchmark::kSecond);

// range(0): modules; range(1): data-parallel GPUs; range(2): 0 wide (encoders + contrastive
// loss), 1 pipeline (encoders -> projectors -> LLM -> next-token loss).
void BM_Plan(benchmark::State& state) {
  const int modules = static_cast<int>(state.range(0));
  const int gpus = static_cast<int>(state.range(1));
  PlanningInstance in = state.range(2) == 0 ? WideInstance(modules - 1, /*seed=*/7)
                                            : PipelineInstance(modules, /*seed=*/7);
  PlannerOptions options;
  options.perf.world_size = gpus;
  double speedup = 0;
  int64_t sims = 0;
  for (auto _ : state) {
    StatusOr<PlanReport> r = PlanStep(in.model, in.device, in.profile, options);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      return;
    }
    speedup = r->temporal_us / r->plans[0].step_us;
    sims = r->simulations;
  }
  state.counters["modules"] = static_cast<double>(in.model.modules.size());
  state.counters["gpus"] = gpus;
  state.counters["speedup_vs_temporal"] = speedup;
  state.counters["simulations"] = static_cast<double>(sims);
  state.SetLabel(in.model.name);
}
BENCHMARK(BM_Plan)
    ->Args({8, 1, 0})
    ->Args({8, 1, 1})
    ->Args({16, 64, 0})
    ->Args({16, 64, 1})
    ->Unit(benchmark::kMillisecond);

// range(0): GPUs; range(1): 0 clip-b16, 1 llava-small (zoo specs, synthetic H100 profiles).
void BM_PlanMultiGpu(benchmark::State& state) {
  const int gpus = static_cast<int>(state.range(0));
  const std::string name = state.range(1) == 0 ? "clip-b16" : "llava-small";
  const std::string root = MOSAIC_SOURCE_DIR;
  StatusOr<ModelSpec> model = LoadModelSpec(root + "/configs/models/" + name + ".json");
  StatusOr<DeviceSpec> device = LoadDeviceSpec(root + "/configs/devices/h100-sxm.json");
  if (!model.ok() || !device.ok()) {
    state.SkipWithError("cannot load the zoo specs");
    return;
  }
  Profile profile = MakeSyntheticProfile(*model, *device, model->micro_batch_size());
  MultiGpuOptions options;
  options.gpus = gpus;
  double efficiency = 0, step_ms = 0;
  std::string chosen;
  for (auto _ : state) {
    StatusOr<MultiGpuReport> r = PlanMultiGpu(*model, *device, profile, options);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      return;
    }
    efficiency = r->layouts[0].scaling_efficiency;
    step_ms = r->layouts[0].step.value() / 1000;
    chosen = r->layouts[0].name;
  }
  state.counters["gpus"] = gpus;
  state.counters["scaling_efficiency"] = efficiency;
  state.counters["step_ms"] = step_ms;
  state.SetLabel(name + ": " + chosen + " (simulated)");
}
BENCHMARK(BM_PlanMultiGpu)
    ->Args({64, 0})
    ->Args({512, 0})
    ->Args({64, 1})
    ->Args({512, 1})
    ->Unit(benchmark::kMillisecond);

// One step of a 16-module pipeline model with 8 micro-batches, modules on shared streams
// and dedicated partitions alternately: many overlapping tasks, contention re-evaluated at
// every event.
void BM_Simulate(benchmark::State& state) {
  PlanningInstance in = PipelineInstance(16, /*seed=*/3);
  const int mb = 8;
  PerfModel pm = *PerfModel::Build(in.model, in.device, in.profile, in.model.batch_size / mb);
  TaskGraph g = *BuildTaskGraph(in.model, mb, {});
  SimProgram prog;
  SimPhase phase{"step", {}};
  const int n = static_cast<int>(in.model.modules.size());
  for (int m = 0; m < n; ++m) {
    SimPartition p;
    p.id = in.model.modules[m].name;
    p.kind = m % 2 == 0 && m < 12 ? PartitionKind::kDedicated : PartitionKind::kShared;
    p.sms = p.kind == PartitionKind::kDedicated ? 8 : 0;
    for (const Task& t : g.tasks())
      if (t.module_index == m && t.id.phase != TaskPhase::kOptimizer) p.tasks.push_back(t.index);
    for (const Task& t : g.tasks())
      if (t.module_index == m && t.id.phase == TaskPhase::kOptimizer) p.tasks.push_back(t.index);
    phase.partitions.push_back(p);
  }
  prog.phases.push_back(phase);
  Simulator sim(g, pm);
  int64_t events = 0;
  for (auto _ : state) {
    StatusOr<SimResult> r = sim.Run(prog, {/*record_tasks=*/true, 0});
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      return;
    }
    events += r->events;
    benchmark::DoNotOptimize(r->step);
  }
  state.counters["events_per_s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
  state.counters["events_per_step"] = static_cast<double>(events) / state.iterations();
}
BENCHMARK(BM_Simulate)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace mosaic::bench

BENCHMARK_MAIN();
