// The performance model: curves per task kind, shared-stream division and colocation
// slowdown; see perf_model.h.
#include "perfmodel/perf_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/cost.h"

namespace mosaic {

// Note [shared streams]
// A shared partition is a plain stream; the hardware scheduler hands the SMs that no dedicated
// partition holds (the pool, P) to the thread blocks of whatever kernels are resident. We model
// this as weighted max-min fair division with demands: task i can usefully occupy d_i SMs (its
// saturation point, the SMs within 5% of its full-GPU time) and weighs w_i = (FLOPs per
// kernel)^gamma, a proxy for how many blocks each of its kernels puts in front of the
// scheduler. When sum d_i <= P every task gets its demand and the SMs left over are spread in
// proportion to the demands (the scheduler does not idle SMs while blocks wait, but they
// barely help); otherwise a level L with sum min(d_i, L w_i) = P gives task i min(d_i, L w_i).
// A task's time on a share is its curve at that (fractional) SM count. The division is
// re-evaluated whenever a task starts or ends, which is what makes plain streams win on whole
// steps (gpu-facts.md): when the short text tower ends, the ViT gets the whole GPU at once,
// while a static split leaves the text's SMs idle.
// Why weights: the measured H100 pairs (configs/profiles/clip-b16-h100-sxm.json) show the big
// kernels taking most of the GPU: ViT-B/16 forward next to the text forward on plain streams
// took 6.90 ms (5.49 alone) while the text took 6.27 ms (1.73 alone), what a ~110 / 22 SM
// division gives; an equal split would have finished the text in ~2.7 ms. gamma is fitted to
// the profile's shared pairs (PerfModel::FitColocation; 0.75 on those), default 1.0. On the
// gpu-facts CLIP B/16 bs32 curves the model predicts 20.9 ms for two plain streams against
// 20.76 measured and 22.6 for one stream against 22.65, but 22.1 for the 104/28 split against
// 23.4 measured: static splits come out optimistic (tests/sim, docs/planning.md section 3).
//
// Note [stream priorities]
// A shared partition may carry a stream priority (Plan, PartitionSpec::priority). The block
// scheduler dispatches waiting thread blocks of higher-priority streams first and never
// preempts resident blocks, so a high-priority task gets the SMs it can use and the lower
// ones only what it leaves idle. In the division above that is one tier per priority, highest
// first: a tier whose demands fit in what is left gets them; otherwise it divides what is left
// by the weighted water-fill, and the tiers below get nothing and wait (rate 0) until a task
// above ends. With equal priorities the division is the one above, unchanged. The model is
// fluid: it sees a task's demand, not the tail waves and launch gaps of its kernels, which are
// where a low-priority stream really runs. So on clip-b16 (the ViT's measured curve scales to
// nearly all 132 SMs) it predicts a raised ViT stream to be about temporal, while the measured
// cause of the 1.11x ceiling is the text tower slowing the ViT ~20% on equal-priority streams
// (bench/results/diagnosis); it predicts a gain where demands leave SMs over (ImageBind).
// The planner tries one high-priority partition per phase (Note [priority refinement]); the
// benchmark measures it ("graph-priority-streams").
//
// Note [contention]
// Tasks running at the same time share DRAM bandwidth and L2. Task i alone on its SMs takes
// T_i and moves B_i bytes: it needs u_i = min(1, B_i / (T_i * BW)) of the bandwidth. With
// U = sum u_j, its slowdown is
//   f_i = (1 + kappa * (U - u_i)) * g_i,
//   g_i = u_i / min(u_i, L)  where sum_j min(u_j, L) = 1  (g_i = 1 when U <= 1).
// g is the roofline: once the tasks together ask for more than the device's bandwidth, it is
// divided max-min fairly and a task that gets less than it needs stretches by the shortfall
// (compute-bound tasks, asking little, are not slowed by it). kappa is interference below the
// roofline (L2 thrashing, DRAM row conflicts), proportional to the others' traffic; it is
// fitted with gamma to the profile's measured pairs (grid search over kappa in [0, 3] and gamma
// in [0, 3], each pair simulated: both start together, the survivor then runs alone; minimizing
// the squared log errors of both members' times) and defaults to 0.3: encoder pairs ask for u ~ 0.1
// each, so 0.3 makes them ~3% slower than alone, inside the 1-9% gpu-facts.md measured for
// concurrent green contexts, and it brings the CLIP B/16 plain-stream step to 20.68 ms
// against 20.76 measured (0.1 gives 20.50). Properties the tests pin: f_i >= 1; f_i = 1 for a task
// alone; the factor is symmetric in the other tasks (permuting them permutes the outputs); f_i <=
// (1 + kappa (n - 1)) * n.

// Note [executor overhead]
// The engine's step (engine/plan_executor.cc, engine/step_timing.cc) is more than the plan's
// tasks: before the first task the host zeroes every gradient, one kernel per parameter tensor;
// the loss runs eagerly (no graph), so its many small kernels cost host launch time; and the
// optimizer tasks of the plan are no-ops: gradient clipping and one fused AdamW over all
// parameters run once after the last phase, on the caller's stream, alone on the GPU. With the
// device's "executor" constants the model predicts that step:
//   step = zero + phases (optimizer tasks instant) + optimizer
//   zero = tensors * zero_grad_us_per_tensor + 4 B * params / (eff * BW)
//   optimizer = optimizer_bytes_per_param * params / (eff * BW)   (clip 12 B + AdamW 28 B)
// and an eager loss task takes max(kernels * eager_op_us, bytes / (eff * BW)) (synthetic law;
// a next-token loss moves 26 B per logit forward, 38 backward).
// A profile's measured step_overhead (zero_grad_us, optimizer_us) replaces the law's zero and
// optimizer. The constants in configs/devices/h100-sxm.json are fitted on clip-b16's graph
// temporal step alone (bench/model_error.py --fit); docs/planning.md section 10 shows the
// decomposition of the measured steps that motivates each term and the hold-out check. With
// world_size > 1 the gradient all-reduces join the optimizer's time (not overlapped).

namespace {

bool IsBatchLevel(const ModuleSpec& m) {
  return m.is_loss() && m.loss == LossKind::kContrastive;  // as BuildTaskGraph decides
}

// Ring all-reduce of fp32 gradients over `world` GPUs.
TimeUs AllReduceTime(double parameters, const DeviceSpec& d, int world) {
  if (world <= 1) return TimeUs(0);
  const double bytes = 4.0 * parameters * 2.0 * (world - 1) / world;
  const double bw = d.link_bandwidth.value() > 0 ? d.link_bandwidth.value() : 25e9;
  const double latency = d.link_latency.value() > 0 ? d.link_latency.value() : 10;
  return TimeUs(1e6 * bytes / bw + 2.0 * (world - 1) * latency);
}

// Water-filling of `capacity` among demands; writes each grant. Deterministic: ties in demand
// keep input order.
void WaterFill(const double* demand, int n, double capacity, double* grant) {
  thread_local std::vector<int> order;
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return demand[a] < demand[b]; });
  double left = capacity;
  for (int k = 0; k < n; ++k) {
    int i = order[k];
    double level = left / (n - k);
    if (demand[i] <= level) {
      grant[i] = demand[i];
      left -= demand[i];
    } else {
      for (int j = k; j < n; ++j)
        grant[order[j]] = level;
      return;
    }
  }
}

// Weighted max-min fairness: task i gets min(demand_i, level * weight_i), the level set so the
// grants sum to `capacity` (callers ensure the demands exceed it).
void WeightedWaterFill(const double* demand, const double* weight, int n, double capacity,
                       double* grant) {
  thread_local std::vector<int> order;
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  for (int i = 1; i < n; ++i) {  // insertion sort by demand / weight (stable, n is small)
    int v = order[i], j = i;
    while (j > 0 && demand[order[j - 1]] * weight[v] > demand[v] * weight[order[j - 1]]) {
      order[j] = order[j - 1];
      --j;
    }
    order[j] = v;
  }
  double left = capacity, total_weight = 0;
  for (int i = 0; i < n; ++i)
    total_weight += weight[i];
  for (int k = 0; k < n; ++k) {
    int i = order[k];
    if (demand[i] * total_weight <= left * weight[i]) {
      grant[i] = demand[i];
      left -= demand[i];
      total_weight -= weight[i];
    } else {
      for (int j = k; j < n; ++j)
        grant[order[j]] = left * weight[order[j]] / total_weight;
      return;
    }
  }
}

}  // namespace

StatusOr<PerfModel> PerfModel::Build(const ModelSpec& model, const DeviceSpec& device,
                                     const Profile& profile, int micro_batch_size,
                                     const PerfModelOptions& options,
                                     const Calibration* calibration) {
  if (micro_batch_size <= 0)
    return InvalidArgument("micro-batch size must be positive, got " +
                           std::to_string(micro_batch_size));
  if (!profile.model.empty() && profile.model != model.name)
    return InvalidArgument("the profile is for model \"" + profile.model + "\", not \"" +
                           model.name + "\"");
  if (!profile.device.empty() && profile.device != device.name)
    return InvalidArgument("the profile is for device \"" + profile.device + "\", not \"" +
                           device.name + "\"");
  if (device.sm_count.value() <= 0) return InvalidArgument("device has no SMs");
  if (profile.micro_batch_size <= 0)
    return InvalidArgument("the profile has no positive micro_batch_size");
  PerfModel pm;
  pm.device_ = device;
  pm.micro_batch_size_ = micro_batch_size;
  pm.bandwidth_ = device.memory_bandwidth.value() > 0 ? device.memory_bandwidth.value() / 1e6 : 1e5;
  if (options.contention >= 0 && options.shared_weight_exponent >= 0) {
    pm.kappa_ = options.contention;
    pm.gamma_ = options.shared_weight_exponent;
  } else {
    MOSAIC_ASSIGN_OR_RETURN(ColocationFit fit, FitColocation(model, device, profile, options));
    pm.kappa_ = fit.contention;
    pm.gamma_ = fit.shared_weight_exponent;
  }
  const int n = static_cast<int>(model.modules.size());
  const int S = device.sm_count.value();
  pm.curves_.resize(3 * n);
  pm.present_.assign(3 * n, false);
  pm.table_.resize(3 * n);
  pm.activation_.assign(3 * n, 0);
  pm.bytes_.assign(3 * n, 0);
  pm.demand_.assign(3 * n, 0);
  pm.weight_.assign(3 * n, 1e-6);
  pm.weight_pow_.assign(3 * n, 1);
  int measured = 0, synthetic = 0;
  std::vector<int> quotas;
  for (int s = 1; s <= S; ++s)
    if (device.IsValidQuota(SmCount(s)) || s == S) quotas.push_back(s);
  for (int m = 0; m < n; ++m) {
    const ModuleSpec& spec = model.modules[m];
    pm.static_bytes_ += EstimateModuleCost(model, m, 1).parameter_bytes.value();
    const bool batch_level = IsBatchLevel(spec);
    const int samples = batch_level ? model.batch_size : micro_batch_size;
    const int profiled = batch_level ? model.batch_size : profile.micro_batch_size;
    for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward, TaskPhase::kOptimizer}) {
      if (ph == TaskPhase::kOptimizer && !spec.has_parameters()) continue;
      const int k = Kind(m, ph);
      const TaskWork work = EstimateTaskWork(model, m, ph, samples, options.law);
      std::vector<ProfilePoint> points;
      const ProfileEntry* e = profile.Find(spec.name, ph);
      if (e && !e->points.empty()) {
        ++measured;
        // Note [micro-batch rescaling]: a profile is measured at one micro-batch size; other
        // sizes scale each measured point by the synthetic law's ratio at the same SMs, and
        // bytes/activations by the analytic ratio. Exact when the size matches.
        const TaskWork base = EstimateTaskWork(model, m, ph, profiled, options.law);
        for (const ProfilePoint& p : e->points) {
          double r = 1;
          if (samples != profiled) {
            r = SyntheticTime(model, device, m, ph, samples, p.sms.value(), options.law) /
                SyntheticTime(model, device, m, ph, profiled, p.sms.value(), options.law);
          }
          points.push_back({p.sms, p.time * r});
        }
        auto ratio = [](double a, double b) { return b > 0 ? a / b : 1.0; };
        pm.bytes_[k] = e->bytes.value() * ratio(work.bytes.value(), base.bytes.value());
        pm.activation_[k] = e->activation_bytes.value() > 0
                                ? e->activation_bytes.value() * ratio(work.activation_bytes.value(),
                                                                      base.activation_bytes.value())
                                : work.activation_bytes.value();
      } else {
        ++synthetic;
        for (int s : quotas)
          points.push_back(
              {SmCount(s), SyntheticTime(model, device, m, ph, samples, s, options.law)});
        pm.bytes_[k] = work.bytes.value();
        pm.activation_[k] = work.activation_bytes.value();
      }
      // Shared-stream weight: GFLOPs per kernel, a proxy for the thread blocks each kernel
      // puts in front of the hardware scheduler (Note [shared streams]).
      const double flops =
          e && !e->points.empty() && e->flops.value() > 0
              ? e->flops.value() * (samples == profiled ? 1.0 : double(samples) / profiled)
              : work.flops.value();
      pm.weight_[k] = std::max(1e-6, flops / std::max(1, work.kernels) / 1e9);
      MOSAIC_ASSIGN_OR_RETURN(ScalingCurve curve, ScalingCurve::Fit(points));
      if (ph == TaskPhase::kOptimizer && options.world_size > 1) {
        curve = curve.Shifted(
            AllReduceTime(EstimateModuleCost(model, m, 1).parameters, device, options.world_size));
      }
      if (calibration)
        curve = curve.Scaled(calibration->factor(spec.name, ph) * calibration->step_factor());
      pm.demand_[k] = curve.SaturationSms(options.demand_epsilon, S);
      pm.table_[k].resize(S + 1);
      for (int s = 0; s <= S; ++s)
        pm.table_[k][s] = curve.At(std::max(s, 1)).value();
      pm.curves_[k] = std::move(curve);
      pm.present_[k] = true;
    }
  }
  for (int k = 0; k < 3 * n; ++k)
    pm.weight_pow_[k] = std::pow(pm.weight_[k], pm.gamma_);
  if (device.executor) {
    // Note [executor overhead]
    StepOverheadModel& o = pm.overhead_;
    o.serial_optimizer = true;
    double allreduce = 0;
    for (int m = 0; m < n; ++m) {
      if (!model.modules[m].has_parameters()) continue;
      const double params = EstimateModuleCost(model, m, 1).parameters;
      o.parameters += params;
      o.parameter_tensors += EstimateParameterTensors(model.modules[m]);
      allreduce += AllReduceTime(params, device, options.world_size).value();
    }
    const ExecutorSpec& ex = *device.executor;
    const double bw = ex.bandwidth_efficiency * pm.bandwidth_;  // bytes per microsecond
    o.measured_before = profile.step_overhead.zero_grad_us >= 0;
    o.measured_after = profile.step_overhead.optimizer_us >= 0;
    o.before_us = o.measured_before
                      ? profile.step_overhead.zero_grad_us
                      : o.parameter_tensors * ex.zero_grad_us_per_tensor + 4.0 * o.parameters / bw;
    o.after_us = (o.measured_after ? profile.step_overhead.optimizer_us
                                   : ex.optimizer_bytes_per_param * o.parameters / bw) +
                 allreduce;
    if (calibration) {
      o.before_us *= calibration->step_factor();
      o.after_us *= calibration->step_factor();
    }
  }
  pm.source_ = measured == 0 ? "synthetic" : synthetic == 0 ? "measured" : "measured+synthetic";
  return pm;
}

TimeUs PerfModel::Isolated(int kind, double sms) const {
  const int s = static_cast<int>(sms);
  if (s == sms && s >= 1 && s < static_cast<int>(table_[kind].size()))
    return TimeUs(table_[kind][s]);
  return curves_[kind].At(sms);
}

void PerfModel::Evaluate(const RunningTask* tasks, int n, double shared_pool_sms,
                         TaskRate* out) const {
  thread_local std::vector<double> demand, weight, grant, u, granted;
  thread_local std::vector<int> shared_idx;
  demand.clear();
  weight.clear();
  shared_idx.clear();
  for (int i = 0; i < n; ++i) {
    if (!tasks[i].shared) continue;
    // Note [stream priorities]: highest priority first, equal ones in input order (insertion
    // sort, n is small), so that each priority tier is one run of the arrays below.
    int k = static_cast<int>(shared_idx.size());
    shared_idx.push_back(i);
    while (k > 0 && tasks[shared_idx[k - 1]].priority < tasks[i].priority) {
      shared_idx[k] = shared_idx[k - 1];
      --k;
    }
    shared_idx[k] = i;
  }
  for (int i : shared_idx) {
    demand.push_back(demand_[tasks[i].kind]);
    weight.push_back(weight_pow_[tasks[i].kind]);
  }
  // Note [shared streams]: divide the pool among the shared tasks.
  const int ns = static_cast<int>(shared_idx.size());
  if (ns > 0) {
    grant.assign(ns, 0);
    double total_demand = 0;
    for (double d : demand)
      total_demand += d;
    if (total_demand <= shared_pool_sms) {
      for (int j = 0; j < ns; ++j) {
        out[shared_idx[j]].useful_sms = demand[j];
        out[shared_idx[j]].sms = demand[j] * shared_pool_sms / total_demand;
      }
    } else {
      // Note [stream priorities]: tiers from the highest priority down, each dividing what the
      // ones above left (one tier when every stream has the same priority).
      double left = shared_pool_sms;
      for (int begin = 0, end = 0; begin < ns; begin = end) {
        double tier_demand = 0;
        for (end = begin;
             end < ns && tasks[shared_idx[end]].priority == tasks[shared_idx[begin]].priority;
             ++end)
          tier_demand += demand[end];
        if (tier_demand <= left) {
          std::copy(demand.begin() + begin, demand.begin() + end, grant.begin() + begin);
          left -= tier_demand;
        } else if (left > 0) {
          WeightedWaterFill(demand.data() + begin, weight.data() + begin, end - begin, left,
                            grant.data() + begin);
          left = 0;
        }  // else the tier waits: its grants stay 0
      }
      for (int j = 0; j < ns; ++j) {
        out[shared_idx[j]].useful_sms = grant[j];
        out[shared_idx[j]].sms = grant[j];
      }
    }
  }
  u.resize(n);
  double total_u = 0;
  for (int i = 0; i < n; ++i) {
    TaskRate& r = out[i];
    if (!tasks[i].shared) {
      r.sms = tasks[i].sms;
      r.useful_sms = tasks[i].sms;
    }
    // A shared task that higher-priority streams leave no SMs waits (rate 0).
    r.isolated_us = r.sms > 0 ? Isolated(tasks[i].kind, r.sms).value()
                              : std::numeric_limits<double>::infinity();
    u[i] = r.sms > 0 ? std::min(1.0, bytes_[tasks[i].kind] / (r.isolated_us * bandwidth_)) : 0;
    total_u += u[i];
  }
  // Note [contention]: roofline division of bandwidth, then interference below it.
  granted.assign(n, 0);
  if (total_u > 1) {
    WaterFill(u.data(), n, 1.0, granted.data());
  }
  for (int i = 0; i < n; ++i) {
    TaskRate& r = out[i];
    double g = (total_u > 1 && u[i] > granted[i] && granted[i] > 0) ? u[i] / granted[i] : 1.0;
    r.slowdown = (1 + kappa_ * std::max(0.0, total_u - u[i])) * g;
    r.rate = r.sms > 0 ? 1.0 / (r.isolated_us * r.slowdown) : 0;
  }
}

std::pair<TimeUs, TimeUs> PerfModel::PairTimes(const RunningTask& a, const RunningTask& b) const {
  const double total = device_.sm_count.value();
  const double pool = std::max(0.0, total - (a.shared ? 0 : a.sms) - (b.shared ? 0 : b.sms));
  RunningTask run[2] = {a, b};
  TaskRate rate[2];
  Evaluate(run, 2, pool, rate);
  const double end_a = 1 / rate[0].rate, end_b = 1 / rate[1].rate;
  const double first = std::min(end_a, end_b);
  // The survivor runs alone on its place (a dedicated partition keeps its SMs).
  const int s = end_a <= end_b ? 1 : 0;
  const double left = std::max(0.0, 1 - rate[s].rate * first);
  TaskRate alone;
  Evaluate(&run[s], 1, pool, &alone);
  const double end_s = first + left / alone.rate;
  return s == 1 ? std::make_pair(TimeUs(first), TimeUs(end_a == end_b ? first : end_s))
                : std::make_pair(TimeUs(end_s), TimeUs(first));
}

StatusOr<PerfModel::ColocationFit> PerfModel::FitColocation(const ModelSpec& model,
                                                            const DeviceSpec& device,
                                                            const Profile& profile,
                                                            const PerfModelOptions& options) {
  ColocationFit fit;
  fit.contention = options.contention >= 0 ? options.contention : options.default_contention;
  fit.shared_weight_exponent = options.shared_weight_exponent >= 0
                                   ? options.shared_weight_exponent
                                   : options.default_shared_weight_exponent;
  if (profile.pairs.empty()) return fit;
  PerfModelOptions o = options;
  o.contention = 0;
  o.shared_weight_exponent = 0;
  o.world_size = 1;
  MOSAIC_ASSIGN_OR_RETURN(PerfModel pm,
                          Build(model, device, profile, profile.micro_batch_size, o, nullptr));
  struct Sample {
    RunningTask a, b;
    double time_a, time_b;
  };
  std::vector<Sample> samples;
  bool any_shared = false;
  for (size_t i = 0; i < profile.pairs.size(); ++i) {
    const ColocationSample& s = profile.pairs[i];
    const PairMember* mem[2] = {&s.a, &s.b};
    RunningTask run[2];
    for (int j = 0; j < 2; ++j) {
      int m = model.IndexOf(mem[j]->module);
      int k = m < 0 ? -1 : Kind(m, mem[j]->phase);
      if (!pm.has(k))
        return InvalidArgument("pairs[" + std::to_string(i) + "]: no task " + mem[j]->module + "." +
                               ToString(mem[j]->phase) + " in model " + model.name);
      run[j] = {k, mem[j]->sms.value() == 0, double(mem[j]->sms.value())};
    }
    any_shared = any_shared || (run[0].shared && run[1].shared);
    samples.push_back({run[0], run[1], s.time_a.value(), s.time_b.value()});
  }
  auto error = [&](double kappa, double gamma) {
    pm.kappa_ = kappa;
    pm.gamma_ = gamma;
    for (size_t k = 0; k < pm.weight_.size(); ++k)
      pm.weight_pow_[k] = std::pow(pm.weight_[k], gamma);
    double sq = 0;
    for (const Sample& s : samples) {
      auto [ta, tb] = pm.PairTimes(s.a, s.b);
      const double ea = std::log(ta.value() / s.time_a), eb = std::log(tb.value() / s.time_b);
      sq += ea * ea + eb * eb;
    }
    return sq;
  };
  const bool fit_kappa = options.contention < 0;
  const bool fit_gamma = options.shared_weight_exponent < 0 && any_shared;
  double best = std::numeric_limits<double>::infinity();
  for (int gi = 0; gi <= (fit_gamma ? 60 : 0); ++gi) {
    const double gamma = fit_gamma ? 0.05 * gi : fit.shared_weight_exponent;
    for (int ki = 0; ki <= (fit_kappa ? 150 : 0); ++ki) {
      const double kappa = fit_kappa ? 0.02 * ki : fit.contention;
      const double e = error(kappa, gamma);
      if (e < best - 1e-15) {  // ties keep the smaller values (the grid runs upward)
        best = e;
        fit.contention = kappa;
        fit.shared_weight_exponent = gamma;
      }
    }
  }
  fit.pairs = static_cast<int>(samples.size());
  fit.rms_log_error = std::sqrt(best / (2.0 * samples.size()));
  return fit;
}

StatusOr<double> PerfModel::FitContention(const ModelSpec& model, const DeviceSpec& device,
                                          const Profile& profile, double fallback,
                                          const PerfModelOptions& options) {
  PerfModelOptions o = options;
  o.default_contention = fallback;
  MOSAIC_ASSIGN_OR_RETURN(ColocationFit fit, FitColocation(model, device, profile, o));
  return fit.contention;
}

}  // namespace mosaic
