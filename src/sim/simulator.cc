// The discrete-event step simulator; see simulator.h.
#include "sim/simulator.h"

#include <algorithm>
#include <limits>
#include <map>

namespace mosaic {

// Note [simulation and tie-breaking]
// Phases run one after another; a phase starts when the previous one's last task ends. Inside
// a phase each partition runs its task list in order, one task at a time; a task starts as soon
// as its partition is free and every predecessor in the task graph has ended. Between events
// every running task progresses at the constant rate the performance model gives for the
// current set of running tasks (Note [shared streams], Note [contention]); the next event is
// the earliest end. At one instant the simulator:
//   1. ends every task whose remaining time is within 1e-12 (relative) of the earliest end,
//      in partition order (the order of the phase's partition list), releasing successors and
//      the activation memory of a backward task's micro-batch;
//   2. then starts, in partition order, the head task of every idle partition whose
//      predecessors have all ended (a start never waits for a later event of the same instant);
//   3. re-evaluates all rates once, for the new set of running tasks.
// Nothing depends on hash order, threads or wall time, so the same inputs give the same
// timeline bit for bit. Memory freed and allocated at one instant is freed first.
//
// SM-time utilization is the integral over the step of the SMs kept busy (a dedicated task
// holds its quota; a shared task its share, counted up to its demand) over SMs * the phases'
// span (the executor's per-step work, Note [executor overhead], is left out of it).

StatusOr<SimProgram> CompilePlan(const Plan& plan, const TaskGraph& graph,
                                 const DeviceSpec& device) {
  SimProgram program;
  std::vector<char> seen(graph.size(), 0);
  for (size_t i = 0; i < plan.phases.size(); ++i) {
    const PhaseSpec& ph = plan.phases[i];
    SimPhase sp;
    sp.name = ph.name;
    int dedicated = 0;
    bool has_shared = false;
    for (size_t j = 0; j < ph.partitions.size(); ++j) {
      const PartitionSpec& p = ph.partitions[j];
      SimPartition part;
      part.id = p.id;
      part.kind = p.kind;
      part.sms = p.kind == PartitionKind::kDedicated ? p.sms.value() : 0;
      part.priority = p.kind == PartitionKind::kShared ? p.priority : 0;
      if (part.priority < 0 || part.priority > kMaxStreamPriority)
        return InvalidArgument("phases[" + std::to_string(i) + "].partitions[" + std::to_string(j) +
                               "]: stream priority " + std::to_string(part.priority) +
                               " is not 0 to " + std::to_string(kMaxStreamPriority));
      if (p.kind == PartitionKind::kDedicated) {
        if (part.sms <= 0)
          return InvalidArgument("phases[" + std::to_string(i) + "].partitions[" +
                                 std::to_string(j) + "]: a dedicated partition needs sms > 0");
        dedicated += part.sms;
      } else {
        has_shared = true;
      }
      for (const TaskId& id : p.tasks) {
        int t = graph.Find(id);
        if (t < 0) return NotFound("plan task " + id.ToString() + " is not in the step's graph");
        if (seen[t]) return InvalidArgument("plan task " + id.ToString() + " appears twice");
        seen[t] = 1;
        part.tasks.push_back(t);
      }
      sp.partitions.push_back(std::move(part));
    }
    if (dedicated > device.sm_count.value())
      return InvalidArgument("phase " + ph.name + ": dedicated partitions hold " +
                             std::to_string(dedicated) + " SMs, over the device's " +
                             std::to_string(device.sm_count.value()));
    if (has_shared && dedicated >= device.sm_count.value())
      return InvalidArgument("phase " + ph.name +
                             ": shared partitions get no SMs (dedicated ones hold them all)");
    program.phases.push_back(std::move(sp));
  }
  return program;
}

Simulator::Simulator(const TaskGraph& graph, const PerfModel& model)
    : graph_(graph), model_(model) {
  const int n = static_cast<int>(graph_.size());
  kind_.resize(n);
  fwd_of_.resize(n);
  in_program_.assign(n, 0);
  preds_.assign(n, 0);
  for (const Task& task : graph_.tasks()) {
    kind_[task.index] = PerfModel::Kind(task.module_index, task.id.phase);
    fwd_of_[task.index] = PerfModel::Kind(task.module_index, TaskPhase::kForward);
    if (!model_.has(kind_[task.index]) && missing_.empty()) missing_ = task.id.ToString();
  }
}

StatusOr<SimResult> Simulator::Run(const SimProgram& program, const SimOptions& options) {
  if (!missing_.empty()) return NotFound("the performance model has no entry for " + missing_);
  const int n = static_cast<int>(graph_.size());
  const auto& tasks = graph_.tasks();
  const int total_sms = model_.device().sm_count.value();
  SimResult r;
  r.tasks.assign(options.record_tasks ? n : 0, TaskTiming{});
  // Only the program's tasks are touched, so a one-phase program of a large step is cheap.
  program_tasks_.clear();
  for (const SimPhase& ph : program.phases)
    for (const SimPartition& p : ph.partitions)
      for (int t : p.tasks) {
        in_program_[t] = 1;
        program_tasks_.push_back(t);
      }
  for (int t : program_tasks_) {
    int count = 0;
    for (int e : graph_.in_edges(t))
      if (in_program_[graph_.edges()[e].from]) ++count;
    preds_[t] = count;
  }
  struct Reset {  // in_program_ is all zeros between runs
    Simulator* s;
    ~Reset() {
      for (int t : s->program_tasks_)
        s->in_program_[t] = 0;
    }
  } reset{this};

  // Note [executor overhead]: only a whole step pays the per-step work (the planner's phase
  // search turns it off: its candidates are sums of phases).
  const bool whole_step = options.step_overhead && program_tasks_.size() == graph_.size();
  const StepOverheadModel& overhead = model_.step_overhead();
  r.overhead_before = TimeUs(whole_step ? overhead.before_us : 0);
  r.overhead_after = TimeUs(whole_step ? overhead.after_us : 0);
  const double extra = r.overhead_before.value() + r.overhead_after.value();
  double now = 0, sm_time = 0, memory = 0, peak = 0;
  int64_t events = 0;
  r.busy.resize(program.phases.size());
  for (size_t pi = 0; pi < program.phases.size(); ++pi) {
    const SimPhase& ph = program.phases[pi];
    const int np = static_cast<int>(ph.partitions.size());
    double pool = total_sms;
    for (const SimPartition& p : ph.partitions)
      if (p.kind == PartitionKind::kDedicated) pool -= p.sms;
    std::vector<int> head(np, 0), current(np, -1);
    std::vector<double> remaining(np, 0), start(np, 0), sms_time(np, 0);
    std::vector<double> busy(np, 0);
    std::vector<int> slot(np, -1);  // partition -> index into run_/rate_
    // Starts partition j's head task if it is ready; an instant task (the optimizer under the
    // executor model) ends at once and the next one is tried. True when one ended.
    auto try_start = [&](int j) {
      const SimPartition& p = ph.partitions[j];
      bool ended = false;
      while (current[j] < 0 && head[j] < static_cast<int>(p.tasks.size())) {
        int t = p.tasks[head[j]];
        if (preds_[t] > 0) break;
        if (model_.instant(kind_[t])) {
          events += 2;
          if (options.record_tasks) {
            TaskTiming& tt = r.tasks[t];
            tt.phase = static_cast<int>(pi);
            tt.partition = j;
            tt.start = tt.end = TimeUs(now);
          }
          for (int e : graph_.out_edges(t))
            --preds_[graph_.edges()[e].to];
          ++head[j];
          ended = true;
          continue;
        }
        current[j] = t;
        remaining[j] = 1.0;
        start[j] = now;
        sms_time[j] = 0;
        ++events;
        if (tasks[t].id.phase == TaskPhase::kForward) {
          memory += model_.activation_bytes(kind_[t]).value();
          peak = std::max(peak, memory);
        }
        break;
      }
      return ended;
    };
    // An instant task ending may release a partition tried earlier: repeat until none ends.
    auto start_all = [&] {
      bool again = true;
      while (again) {
        again = false;
        for (int j = 0; j < np; ++j)
          again = try_start(j) || again;
      }
    };
    start_all();
    while (true) {
      run_.clear();
      for (int j = 0; j < np; ++j) {
        slot[j] = -1;
        if (current[j] < 0) continue;
        const SimPartition& p = ph.partitions[j];
        slot[j] = static_cast<int>(run_.size());
        run_.push_back(
            {kind_[current[j]], p.kind == PartitionKind::kShared, double(p.sms), p.priority});
      }
      if (run_.empty()) {
        for (int j = 0; j < np; ++j) {
          const SimPartition& p = ph.partitions[j];
          if (head[j] >= static_cast<int>(p.tasks.size())) continue;
          int t = p.tasks[head[j]];
          std::string waits;
          for (int e : graph_.in_edges(t)) {
            int from = graph_.edges()[e].from;
            if (in_program_[from]) waits = tasks[from].id.ToString();
          }
          return FailedPrecondition("deadlock in phase " + ph.name + ": partition " + p.id +
                                    " waits to run " + tasks[t].id.ToString() +
                                    (waits.empty() ? "" : " which needs " + waits) +
                                    ", which never ends first (the order contradicts a "
                                    "dependency or an activation buffer limit)");
        }
        break;  // phase done
      }
      rate_.resize(run_.size());
      model_.Evaluate(run_.data(), static_cast<int>(run_.size()), pool, rate_.data());
      double dt = std::numeric_limits<double>::infinity();
      for (int j = 0; j < np; ++j)
        if (slot[j] >= 0) dt = std::min(dt, remaining[j] / rate_[slot[j]].rate);
      if (!(dt < std::numeric_limits<double>::infinity()))
        return FailedPrecondition("phase " + ph.name +
                                  ": no running task makes progress (every one has 0 SMs)");
      const double cutoff = dt * (1 + 1e-12);
      now += dt;
      for (int j = 0; j < np; ++j) {
        if (slot[j] < 0) continue;
        const TaskRate& tr = rate_[slot[j]];
        const double left = remaining[j] / tr.rate;
        remaining[j] = left <= cutoff ? 0.0 : remaining[j] - tr.rate * dt;
        if (tr.rate > 0) busy[j] += dt;  // waiting behind a higher-priority stream is not busy
        sms_time[j] += tr.sms * dt;
        sm_time += tr.useful_sms * dt;
      }
      if (options.stop_after_us > 0 && now + extra > options.stop_after_us) {
        r.step = TimeUs(std::numeric_limits<double>::infinity());
        r.events = events;
        return r;
      }
      for (int j = 0; j < np; ++j) {
        if (slot[j] < 0 || remaining[j] > 0) continue;
        const int t = current[j];
        ++events;
        if (options.record_tasks) {
          TaskTiming& tt = r.tasks[t];
          tt.phase = static_cast<int>(pi);
          tt.partition = j;
          tt.start = TimeUs(start[j]);
          tt.end = TimeUs(now);
          tt.sms = now > start[j] ? sms_time[j] / (now - start[j]) : 0;
        }
        if (tasks[t].id.phase == TaskPhase::kBackward)
          memory -= model_.activation_bytes(fwd_of_[t]).value();
        for (int e : graph_.out_edges(t))
          --preds_[graph_.edges()[e].to];
        current[j] = -1;
        ++head[j];
      }
      start_all();
    }
    r.busy[pi].resize(np);
    for (int j = 0; j < np; ++j)
      r.busy[pi][j] = TimeUs(busy[j]);
    r.phase_end.push_back(TimeUs(now));
  }
  // The phases ran from 0; they start after the zeroing. The step sums in the planner's order
  // (phases, then the per-step work), so a baseline it reports is bit-equal to a whole run.
  const double before = r.overhead_before.value();
  if (before > 0) {
    for (TaskTiming& tt : r.tasks)
      if (tt.phase >= 0) {
        tt.start = TimeUs(tt.start.value() + before);
        tt.end = TimeUs(tt.end.value() + before);
      }
    for (TimeUs& e : r.phase_end)
      e = TimeUs(e.value() + before);
  }
  r.step = TimeUs(now + before + r.overhead_after.value());
  r.utilization = now > 0 ? sm_time / (double(total_sms) * now) : 0;
  r.peak_activation = Bytes(peak);
  r.events = events;
  return r;
}

}  // namespace mosaic
