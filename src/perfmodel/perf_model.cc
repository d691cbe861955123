// The performance model: curves per task kind, shared-stream division and colocation
// slowdown; see perf_model.h.
#include "perfmodel/perf_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/cost.h"

namespace mosaic {

// Note [shared streams]
// A shared partition is a plain stream; the hardware scheduler hands the SMs that no dedicated
// partition holds (the pool, P) to whatever kernels are resident, block by block. We model
// this as max-min fair division with demands: task i can usefully occupy d_i SMs (its
// saturation point, the SMs within 5% of its full-GPU time); when sum d_i <= P every task gets
// its demand and the SMs left over are spread in proportion to the demands (the scheduler does
// not leave SMs idle while blocks wait, but they barely help); otherwise a water level L with
// sum min(d_i, L) = P gives task i min(d_i, L). A task's time on a share is its curve at that
// (fractional) SM count. The division is re-evaluated whenever a task starts or ends, which is
// what makes plain streams win on whole steps (gpu-facts.md): when the short text tower ends,
// the ViT gets the whole GPU at once, while a static split leaves the text's SMs idle. On the
// gpu-facts CLIP B/16 bs32 case (measured curves) this predicts 20.7 ms for two plain
// streams against 20.76 measured and 22.6 for one stream against 22.65, but 22.1 for the
// 104/28 split against 23.4 measured: static splits come out optimistic (tests/sim,
// docs/planning.md section 3).
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
// fitted by least squares from the profile's measured pairs (f_obs / g - 1 = kappa * (U - u_i))
// and defaults to 0.3: encoder pairs ask for u ~ 0.1 each, so 0.3 makes them ~3% slower than
// alone, inside the 1-9% gpu-facts.md measured for concurrent green contexts, and it brings
// the CLIP B/16 plain-stream step to 20.68 ms against 20.76 measured (0.1 gives 20.50).
// Properties the tests pin: f_i >= 1; f_i = 1 for a task alone; the factor is symmetric in the
// other tasks (permuting them permutes the outputs); f_i <= (1 + kappa (n - 1)) * n.

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
  if (options.contention >= 0) {
    pm.kappa_ = options.contention;
  } else {
    MOSAIC_ASSIGN_OR_RETURN(
        pm.kappa_, FitContention(model, device, profile, options.default_contention, options));
  }
  const int n = static_cast<int>(model.modules.size());
  const int S = device.sm_count.value();
  pm.curves_.resize(3 * n);
  pm.present_.assign(3 * n, false);
  pm.table_.resize(3 * n);
  pm.activation_.assign(3 * n, 0);
  pm.bytes_.assign(3 * n, 0);
  pm.demand_.assign(3 * n, 0);
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
  thread_local std::vector<double> demand, grant, u, granted;
  thread_local std::vector<int> shared_idx;
  demand.clear();
  shared_idx.clear();
  for (int i = 0; i < n; ++i) {
    if (tasks[i].shared) {
      shared_idx.push_back(i);
      demand.push_back(demand_[tasks[i].kind]);
    }
  }
  // Note [shared streams]: divide the pool among the shared tasks.
  const int ns = static_cast<int>(shared_idx.size());
  if (ns > 0) {
    grant.resize(ns);
    double total_demand = 0;
    for (double d : demand)
      total_demand += d;
    if (total_demand <= shared_pool_sms) {
      for (int j = 0; j < ns; ++j) {
        out[shared_idx[j]].useful_sms = demand[j];
        out[shared_idx[j]].sms = demand[j] * shared_pool_sms / total_demand;
      }
    } else {
      WaterFill(demand.data(), ns, shared_pool_sms, grant.data());
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
    r.isolated_us = Isolated(tasks[i].kind, r.sms).value();
    u[i] = std::min(1.0, bytes_[tasks[i].kind] / (r.isolated_us * bandwidth_));
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
    r.rate = 1.0 / (r.isolated_us * r.slowdown);
  }
}

StatusOr<double> PerfModel::FitContention(const ModelSpec& model, const DeviceSpec& device,
                                          const Profile& profile, double fallback,
                                          const PerfModelOptions& options) {
  if (profile.pairs.empty()) return fallback;
  PerfModelOptions o = options;
  o.contention = 0;
  o.world_size = 1;
  MOSAIC_ASSIGN_OR_RETURN(PerfModel pm,
                          Build(model, device, profile, profile.micro_batch_size, o, nullptr));
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < profile.pairs.size(); ++i) {
    const ColocationSample& s = profile.pairs[i];
    const PairMember* mem[2] = {&s.a, &s.b};
    RunningTask run[2];
    double dedicated = 0;
    for (int j = 0; j < 2; ++j) {
      int m = model.IndexOf(mem[j]->module);
      int k = m < 0 ? -1 : Kind(m, mem[j]->phase);
      if (!pm.has(k))
        return InvalidArgument("pairs[" + std::to_string(i) + "]: no task " + mem[j]->module + "." +
                               ToString(mem[j]->phase) + " in model " + model.name);
      run[j] = {k, mem[j]->sms.value() == 0, double(mem[j]->sms.value())};
      if (!run[j].shared) dedicated += run[j].sms;
    }
    TaskRate rate[2];
    pm.Evaluate(run, 2, std::max(0.0, device.sm_count.value() - dedicated), rate);
    const double measured[2] = {s.time_a.value(), s.time_b.value()};
    for (int j = 0; j < 2; ++j) {
      const RunningTask& other = run[1 - j];
      double u_other =
          std::min(1.0, pm.bytes_[other.kind] / (rate[1 - j].isolated_us * pm.bandwidth_));
      double y = measured[j] * rate[j].rate - 1;  // f_obs / g - 1 (kappa = 0 in rate)
      sxy += y * u_other;
      sxx += u_other * u_other;
    }
  }
  if (sxx <= 0) return fallback;
  return std::clamp(sxy / sxx, 0.0, 1.0);
}

}  // namespace mosaic
