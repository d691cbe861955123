// Multi-GPU placement planner; see multi_gpu.h and docs/planning.md section 9.
#include "planner/multi_gpu.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <map>
#include <set>

#include "core/cost.h"
#include "core/task_graph.h"
#include "perfmodel/perf_model.h"

namespace mosaic {

// Note [communication model]
// A link moves `bw` bytes per second per direction and pays `latency` per message. A ring
// all-reduce over N GPUs is a reduce-scatter and an all-gather, 2 (N-1) steps each moving
// bytes/N, so every GPU sends 2 (N-1)/N * bytes and waits 2 (N-1) latencies:
//     T_ar(bytes, N) = 2 (N-1)/N * bytes / bw + 2 (N-1) * latency.
// Gradients are all-reduced in buckets as backward produces them (DDP, 25 MiB): the bandwidth
// term is that of the whole, and every bucket pays its own 2 (N-1) latencies. A point-to-point
// transfer (activations forward, their gradients backward) is bytes / bw + latency; links are
// full duplex, so a GPU's sends and receives overlap.
// Calibration: a measured time m of one operation keeps the latency term l and rescales the
// bandwidth so that the model gives m: scale = (bandwidth term at the spec) / (m - l), bounded
// to [kMinScale, kMaxScale] (m <= l: the upper bound). One number, since NCCL's all-reduce and
// send/recv ride the same links.

CommModel CommModel::FromDevice(const DeviceSpec& d) {
  return CommModel(d.link_bandwidth.value() > 0 ? d.link_bandwidth : BytesPerSec(25e9),
                   d.link_bandwidth.value() > 0 ? d.link_latency : TimeUs(10));
}

TimeUs CommModel::RingAllReduce(Bytes bytes, int gpus) const {
  if (gpus <= 1 || bytes.value() <= 0) return TimeUs(0);
  const double n = gpus;
  return TimeUs(1e6 * 2.0 * (n - 1) / n * bytes.value() / bandwidth().value() +
                2.0 * (n - 1) * latency_.value());
}

TimeUs CommModel::BucketedAllReduce(Bytes bytes, Bytes bucket, int gpus) const {
  if (gpus <= 1 || bytes.value() <= 0) return TimeUs(0);
  const double n = gpus;
  const double buckets =
      bucket.value() > 0 ? std::ceil(bytes.value() / bucket.value() - 1e-9) : 1.0;
  return TimeUs(1e6 * 2.0 * (n - 1) / n * bytes.value() / bandwidth().value() +
                buckets * 2.0 * (n - 1) * latency_.value());
}

TimeUs CommModel::SendRecv(Bytes bytes) const {
  if (bytes.value() <= 0) return TimeUs(0);
  return TimeUs(1e6 * bytes.value() / bandwidth().value() + latency_.value());
}

Status CommModel::Calibrate(double bandwidth_term_us_at_spec, double latency_term_us,
                            TimeUs measured) {
  const double left = measured.value() - latency_term_us;
  double scale = left <= 0 ? kMaxScale : bandwidth_term_us_at_spec / left;
  scale_ = std::clamp(scale, kMinScale, kMaxScale);
  return Status::Ok();
}

Status CommModel::CalibrateAllReduce(Bytes bytes, int gpus, TimeUs measured) {
  if (gpus < 2) return InvalidArgument("all-reduce calibration needs at least 2 GPUs");
  if (!(bytes.value() > 0) || !(measured.value() > 0) || !std::isfinite(measured.value()))
    return InvalidArgument("all-reduce calibration needs positive bytes and time");
  const double n = gpus;
  return Calibrate(1e6 * 2.0 * (n - 1) / n * bytes.value() / bandwidth_.value(),
                   2.0 * (n - 1) * latency_.value(), measured);
}

Status CommModel::CalibrateSendRecv(Bytes bytes, TimeUs measured) {
  if (!(bytes.value() > 0) || !(measured.value() > 0) || !std::isfinite(measured.value()))
    return InvalidArgument("send/recv calibration needs positive bytes and time");
  return Calibrate(1e6 * bytes.value() / bandwidth_.value(), latency_.value(), measured);
}

const char* ToString(LayoutKind k) {
  switch (k) {
    case LayoutKind::kColocated:
      return "colocated";
    case LayoutKind::kDisaggregated:
      return "disaggregated";
    case LayoutKind::kHybrid:
      return "hybrid";
  }
  return "?";
}

std::string MultiGpuLayout::GroupsText() const {
  std::string s;
  for (const GpuGroup& g : groups) {
    if (!s.empty()) s += " + ";
    s += std::to_string(g.gpus) + " " + g.name;
  }
  return s;
}

// Note [multi-GPU layouts]
// All layouts process the same global batch per step: N times the model's batch (one
// model-batch per GPU, weak scaling), so step times compare directly and samples/s = global
// batch / step. Scaling efficiency = samples/s / (N x one GPU's samples/s), one GPU running
// the single-GPU planner's best plan.
//  (a) colocated: every GPU runs the single-GPU plan (step T1) on its share, then the gradients
//      of all modules are all-reduced over the N GPUs in buckets. Buckets leave as backward
//      produces them: all but the last bucket's all-reduce can hide behind the backward
//      compute (the sum of the backward tasks' full-GPU times), the rest is exposed. While it
//      overlaps, the all-reduce holds `comm_sms` SMs (NCCL's kernels: a small dedicated
//      partition), so the compute it hides behind runs on S - c SMs: it costs the overlapped
//      time x c / (S - c) more.
//  (b) disaggregated: the encoders (vit/audio; in a second variant also the projectors they
//      feed) on G_e GPUs, everything else (the LLM or the text tower and the loss) on
//      G_l = N - G_e, each group data parallel inside; micro-batches pipeline from one group to
//      the other, activations sent forward and their gradients back. Per micro-batch a GPU
//      of the encoder group computes E (the forward and backward of its modules at full-GPU
//      time, one after another) and the other L; the N x M global micro-batches are dealt out
//      evenly, ceil(N M / G) per GPU. A group's per-step time is its micro-batches' compute or
//      its link time, whichever is larger (transfers overlap compute on copy engines); the
//      pipeline adds one micro-batch's way through the other stage and both transfers (fill
//      and drain): step = max(W_e, W_l) + (E + L + 2 c - max(E, L)), then each group's
//      optimizer and exposed all-reduce (of its own modules' gradients, over its own GPUs),
//      the slower group setting the end. Every split G_e = 1..N-1 and every micro-batch count
//      the planner would try is evaluated (O(N) arithmetic each).
//  (c) mixes: the splits other than the best are reported too (an even split, the split
//      proportional to the stages' work), so the table shows how the choice depends on the
//      ratio of GPUs per group; and hybrid layouts, some GPUs colocated and the others split,
//      in one data-parallel job (below).
// Stages run their modules one after another (no colocation inside a stage), which is
// conservative for disaggregated layouts of several encoders.

namespace {

int ElementBytes(Precision p) {
  return p == Precision::kFp32 ? 4 : 2;
}

// Feature width of what module `m` sends downstream.
int OutputWidth(const ModuleSpec& m) {
  if (m.kind == ModuleKind::kProjector) return m.out_dim;
  return m.output_dim > 0 ? m.output_dim : m.width;
}

struct Stage {
  std::string name;
  std::vector<int> modules;
  double params = 0;
  double static_bytes = 0;  // weights, gradients and AdamW state
};

struct Split {
  Stage enc, rest;
  double bytes_per_sample = 0;  // activations crossing, one direction
};

bool IsEncoder(const ModuleSpec& m) {
  return m.kind == ModuleKind::kVit || m.kind == ModuleKind::kAudio;
}

// Candidate cuts: encoders | rest, and encoders + the projectors fed only by them | rest.
std::vector<Split> Splits(const ModelSpec& model) {
  std::vector<Split> out;
  const int n = static_cast<int>(model.modules.size());
  std::vector<bool> enc(n, false);
  for (int i = 0; i < n; ++i)
    enc[i] = IsEncoder(model.modules[i]);
  for (int variant = 0; variant < 2; ++variant) {
    std::vector<bool> side = enc;
    if (variant == 1) {
      bool any = false;
      for (int i = 0; i < n; ++i) {
        if (model.modules[i].kind != ModuleKind::kProjector) continue;
        bool fed = true;
        for (const std::string& in : model.InputsOf(model.modules[i].name))
          fed = fed && enc[model.IndexOf(in)];
        if (fed) side[i] = any = true;
      }
      if (!any) continue;
    }
    Split s;
    s.enc.name = "enc";
    s.rest.name = "rest";
    bool has_llm = false;
    for (int i = 0; i < n; ++i) {
      Stage& st = side[i] ? s.enc : s.rest;
      st.modules.push_back(i);
      const ModuleCost cost = EstimateModuleCost(model, i, 1);
      st.params += cost.parameters;
      st.static_bytes += cost.parameter_bytes.value();
      has_llm = has_llm || model.modules[i].kind == ModuleKind::kLlm;
    }
    s.rest.name = has_llm ? "llm" : "text";
    if (variant == 1) s.enc.name = "enc+proj";
    if (s.enc.modules.empty() || s.rest.modules.empty()) continue;
    bool backward_edge = false;
    for (const auto& [from, to] : model.edges) {
      const int a = model.IndexOf(from), b = model.IndexOf(to);
      if (side[a] && !side[b]) {
        s.bytes_per_sample += double(InputTokensOut(model, from)) * OutputWidth(model.modules[a]) *
                              ElementBytes(model.precision);
      }
      if (!side[a] && side[b]) backward_edge = true;
    }
    if (!backward_edge) out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> Names(const ModelSpec& model, const std::vector<int>& modules) {
  std::vector<std::string> names;
  for (int m : modules)
    names.push_back(model.modules[m].name);
  return names;
}

// Per-micro-batch times of a set of modules at full GPU, from the perf model.
struct StageTimes {
  double fwd_bwd = 0, bwd = 0, opt = 0;
  double activation_bytes = 0;  // held by one micro-batch between forward and backward
};
StageTimes Times(const PerfModel& pm, const std::vector<int>& modules, int sms) {
  StageTimes t;
  for (int m : modules) {
    for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward, TaskPhase::kOptimizer}) {
      const int k = PerfModel::Kind(m, ph);
      if (!pm.has(k)) continue;
      if (ph == TaskPhase::kForward) t.activation_bytes += pm.activation_bytes(k).value();
      const double us = pm.Isolated(k, sms).value();
      if (ph == TaskPhase::kOptimizer) {
        t.opt += us;
      } else {
        t.fwd_bwd += us;
        if (ph == TaskPhase::kBackward) t.bwd += us;
      }
    }
  }
  return t;
}

// All-reduce of fp32 gradients, one ring per (parameters, GPUs) pair one after another (a GPU
// of a hybrid layout joins the encoders' ring and the LLM's), overlapping a backward window:
// all but the last bucket can hide behind it, holding `comm_sms` SMs while they do.
void AllReduce(const CommModel& comm, const MultiGpuOptions& o,
               std::initializer_list<std::pair<double, int>> rings, double backward_us, int sms,
               int comm_sms, GpuGroup* g) {
  double total = 0, last = 0;
  for (const auto& [params, gpus] : rings) {
    const Bytes bytes(4.0 * params);
    const double t = comm.BucketedAllReduce(bytes, o.bucket, gpus).value();
    if (t <= 0) continue;
    total += t;
    last = comm.RingAllReduce(Bytes(std::min(bytes.value(), o.bucket.value())), gpus).value();
  }
  g->allreduce = TimeUs(total);
  const double overlapped = std::max(0.0, std::min(total - last, std::max(0.0, backward_us)));
  g->exposed_allreduce = TimeUs(total - overlapped);
  g->comm_sm_cost = TimeUs(sms > comm_sms ? overlapped * comm_sms / (sms - comm_sms) : overlapped);
}

// A single-partition plan of one stage's tasks (forward micro-batch by micro-batch in
// topological order, backward in reverse, then the optimizer steps).
Plan StagePlan(const ModelSpec& model, const DeviceSpec& device, const std::vector<int>& modules,
               const std::string& group, int micro_batches, double step_us) {
  Plan p;
  p.name = model.name + " " + group + " group";
  p.model = model.name + "/" + group;
  p.device = device.name;
  p.micro_batches = micro_batches;
  std::vector<std::string> topo = model.TopologicalOrder();
  std::vector<int> order;
  for (const std::string& name : topo) {
    int m = model.IndexOf(name);
    if (std::find(modules.begin(), modules.end(), m) != modules.end()) order.push_back(m);
  }
  PartitionSpec part;
  part.id = group;
  part.kind = PartitionKind::kShared;
  auto batch_level = [&](int m) {
    return model.modules[m].is_loss() && model.modules[m].loss == LossKind::kContrastive;
  };
  for (int mb = 0; mb < micro_batches; ++mb)
    for (int m : order)
      if (!batch_level(m) || mb == 0)
        part.tasks.push_back({model.modules[m].name, TaskPhase::kForward, mb});
  for (int mb = 0; mb < micro_batches; ++mb)
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      if (!batch_level(*it) || mb == 0)
        part.tasks.push_back({model.modules[*it].name, TaskPhase::kBackward, mb});
  for (int m : order)
    if (!model.modules[m].is_loss())
      part.tasks.push_back({model.modules[m].name, TaskPhase::kOptimizer, 0});
  p.phases.push_back({"step", {part}});
  p.predicted_step = TimeUs(step_us);
  return p;
}

}  // namespace

StatusOr<MultiGpuReport> PlanMultiGpu(const ModelSpec& model, const DeviceSpec& device,
                                      const Profile& profile, const MultiGpuOptions& options) {
  if (options.gpus < 1)
    return InvalidArgument("--gpus must be at least 1 (got " + std::to_string(options.gpus) + ")");
  if (options.gpus > 65536)
    return InvalidArgument("--gpus must be at most 65536 (got " + std::to_string(options.gpus) +
                           ")");
  if (options.planner.perf.world_size != 1)
    return InvalidArgument(
        "multi-GPU planning models the all-reduce itself; leave the perf model's world_size "
        "at 1");
  if (!(options.bucket.value() > 0)) return InvalidArgument("gradient bucket must be positive");
  const int N = options.gpus;
  const int S = device.sm_count.value();
  const int comm_sms =
      options.comm_sms >= 0 ? options.comm_sms : std::min(device.sm_granularity.value(), S);
  MultiGpuReport r;
  r.gpus = N;
  r.comm = options.comm ? *options.comm : CommModel::FromDevice(device);
  const CommModel& comm = r.comm;
  r.global_batch = model.batch_size * N;

  MOSAIC_ASSIGN_OR_RETURN(r.single_gpu, PlanStep(model, device, profile, options.planner));
  const RankedPlan& best1 = r.single_gpu.plans.at(0);
  const double t1 = best1.step_us;
  r.single_gpu_step = TimeUs(t1);
  r.single_gpu_samples_per_s = model.batch_size / t1 * 1e6;

  // Perf models per micro-batch count: the single-GPU plan's, and the counts the planner was
  // asked to try (default: the model's and 1, 2, 4, 8 dividing the batch).
  std::set<int> counts = {best1.plan.micro_batches};
  if (!options.planner.micro_batches.empty()) {
    counts.insert(options.planner.micro_batches.begin(), options.planner.micro_batches.end());
  } else {
    counts.insert(model.micro_batches);
    for (int m : {1, 2, 4, 8})
      if (model.batch_size % m == 0 && m <= std::max(1, options.planner.max_micro_batches))
        counts.insert(m);
  }
  std::map<int, PerfModel> pms;
  for (int m : counts) {
    if (m < 1 || model.batch_size % m != 0) continue;
    MOSAIC_ASSIGN_OR_RETURN(PerfModel pm,
                            PerfModel::Build(model, device, profile, model.batch_size / m,
                                             options.planner.perf, options.planner.calibration));
    pms.emplace(m, std::move(pm));
  }

  std::vector<int> all_modules(model.modules.size());
  for (size_t i = 0; i < all_modules.size(); ++i)
    all_modules[i] = static_cast<int>(i);
  double all_params = 0;
  for (int m : all_modules)
    all_params += EstimateModuleCost(model, m, 1).parameters;

  std::vector<MultiGpuLayout> layouts;
  auto finish = [&](MultiGpuLayout& l) {
    l.samples_per_s = r.global_batch / l.step.value() * 1e6;
    l.scaling_efficiency = l.samples_per_s / (N * r.single_gpu_samples_per_s);
  };

  // (a) colocated, data parallel.
  {
    MultiGpuLayout l;
    l.name = "colocated data-parallel";
    l.kind = LayoutKind::kColocated;
    GpuGroup g;
    g.name = "all";
    g.modules = Names(model, all_modules);
    g.gpus = N;
    g.micro_batches_per_gpu = best1.plan.micro_batches;
    const StageTimes st = Times(pms.at(best1.plan.micro_batches), all_modules, S);
    g.optimizer = TimeUs(std::min(st.opt, t1));
    g.compute = TimeUs(t1 - g.optimizer.value());
    AllReduce(comm, options, {{all_params, N}}, st.bwd * best1.plan.micro_batches, S, comm_sms, &g);
    l.step = TimeUs(t1 + g.exposed_allreduce.value() + g.comm_sm_cost.value());
    l.groups.push_back(g);
    finish(l);
    layouts.push_back(l);
  }

  // (b), (c) disaggregated, every split of the GPUs and micro-batch count.
  if (N >= 2) {
    for (const Split& split : Splits(model)) {
      std::vector<MultiGpuLayout> by_ge(N, MultiGpuLayout{});  // best per G_e over counts
      for (const auto& [M, pm] : pms) {
        const StageTimes e = Times(pm, split.enc.modules, S);
        const StageTimes l = Times(pm, split.rest.modules, S);
        const double c_mb =
            comm.SendRecv(Bytes(split.bytes_per_sample * (model.batch_size / M))).value();
        const long long Q = static_cast<long long>(N) * M;
        // Memory: a stage holds its static state and, 1F1B-style, the activations of at most
        // two micro-batches in flight (one being sent or computed downstream).
        const double budget = options.planner.memory_budget_bytes > 0
                                  ? options.planner.memory_budget_bytes
                                  : 0.9 * device.memory.value();
        const double in_flight = std::min<double>(2.0, static_cast<double>(Q));
        if (split.enc.static_bytes + in_flight * e.activation_bytes > budget ||
            split.rest.static_bytes + in_flight * l.activation_bytes > budget)
          continue;
        for (int ge = 1; ge < N; ++ge) {
          const int gl = N - ge;
          GpuGroup ga, gb;
          ga.name = split.enc.name;
          gb.name = split.rest.name;
          ga.gpus = ge;
          gb.gpus = gl;
          ga.micro_batches_per_gpu = static_cast<int>((Q + ge - 1) / ge);
          gb.micro_batches_per_gpu = static_cast<int>((Q + gl - 1) / gl);
          ga.compute = TimeUs(ga.micro_batches_per_gpu * e.fwd_bwd);
          gb.compute = TimeUs(gb.micro_batches_per_gpu * l.fwd_bwd);
          ga.link = TimeUs(ga.micro_batches_per_gpu * c_mb);
          gb.link = TimeUs(gb.micro_batches_per_gpu * c_mb);
          ga.optimizer = TimeUs(e.opt);
          gb.optimizer = TimeUs(l.opt);
          AllReduce(comm, options, {{split.enc.params, ge}}, ga.micro_batches_per_gpu * e.bwd, S,
                    comm_sms, &ga);
          AllReduce(comm, options, {{split.rest.params, gl}}, gb.micro_batches_per_gpu * l.bwd, S,
                    comm_sms, &gb);
          const double wa = std::max(ga.compute.value(), ga.link.value()) + ga.comm_sm_cost.value();
          const double wb = std::max(gb.compute.value(), gb.link.value()) + gb.comm_sm_cost.value();
          const double fill = e.fwd_bwd + l.fwd_bwd + 2 * c_mb - std::max(e.fwd_bwd, l.fwd_bwd);
          const double tail = std::max(ga.optimizer.value() + ga.exposed_allreduce.value(),
                                       gb.optimizer.value() + gb.exposed_allreduce.value());
          const double step = std::max(wa, wb) + fill + tail;
          if (by_ge[ge].groups.empty() || step < by_ge[ge].step.value()) {
            MultiGpuLayout cand;
            cand.kind = LayoutKind::kDisaggregated;
            cand.groups = {ga, gb};
            cand.step = TimeUs(step);
            by_ge[ge] = cand;
          }
        }
      }
      // The best split, the even split and the split proportional to the stages' work.
      int best_ge = 0;
      for (int ge = 1; ge < N; ++ge)
        if (!by_ge[ge].groups.empty() &&
            (best_ge == 0 || by_ge[ge].step.value() < by_ge[best_ge].step.value()))
          best_ge = ge;
      if (best_ge == 0) continue;  // no micro-batch count fits the memory of both stages
      const StageTimes e = Times(pms.begin()->second, split.enc.modules, S);
      const StageTimes l = Times(pms.begin()->second, split.rest.modules, S);
      int prop =
          static_cast<int>(std::lround(N * e.fwd_bwd / std::max(1e-9, e.fwd_bwd + l.fwd_bwd)));
      prop = std::clamp(prop, 1, N - 1);
      std::vector<std::pair<int, std::string>> picks = {
          {best_ge, "best split"}, {std::max(1, N / 2), "even split"}, {prop, "work-proportional"}};
      std::set<int> seen;
      for (const auto& [ge, why] : picks) {
        if (!seen.insert(ge).second || by_ge[ge].groups.empty()) continue;
        MultiGpuLayout cand = by_ge[ge];
        cand.groups[0].modules = Names(model, split.enc.modules);
        cand.groups[1].modules = Names(model, split.rest.modules);
        cand.name = "disaggregated " + split.enc.name + "|" + split.rest.name + " (" + why + ")";
        finish(cand);
        layouts.push_back(cand);
      }
    }
  }

  // (c) hybrid: h GPUs colocate everything, the other d = N - h are split encoders | rest; one
  // data-parallel job (a colocated GPU joins both groups' rings). A colocated GPU takes q_c of
  // the N M micro-batches (its single-GPU plan's compute, scaled by micro-batches), the
  // pipeline GPUs the rest; every h in {N/4, N/2, 3N/4}, split and q_c up to twice its share
  // is tried.
  if (N >= 3) {
    const StageTimes all1 = Times(pms.at(best1.plan.micro_batches), all_modules, S);
    const double opt_all = std::min(all1.opt, t1);
    for (const Split& split : Splits(model)) {
      MultiGpuLayout best_h;
      for (int h : {N / 4, N / 2, (3 * N) / 4}) {
        const int d = N - h;
        if (h < 1 || d < 2) continue;
        for (const auto& [M, pm] : pms) {
          const StageTimes e = Times(pm, split.enc.modules, S);
          const StageTimes l = Times(pm, split.rest.modules, S);
          const long long Q = static_cast<long long>(N) * M;
          const double budget = options.planner.memory_budget_bytes > 0
                                    ? options.planner.memory_budget_bytes
                                    : 0.9 * device.memory.value();
          if (split.enc.static_bytes + 2 * e.activation_bytes > budget ||
              split.rest.static_bytes + 2 * l.activation_bytes > budget)
            continue;
          const double c_mb =
              comm.SendRecv(Bytes(split.bytes_per_sample * (model.batch_size / M))).value();
          const double per_mb_c = (t1 - opt_all) / M;  // one micro-batch of B / M samples
          for (int ge = 1; ge < d; ++ge) {
            const int gl = d - ge;
            for (int qc = 1; qc <= 2 * M; ++qc) {
              const long long qp = Q - static_cast<long long>(h) * qc;
              if (qp < 1) break;
              GpuGroup gc, ga, gb;
              gc.name = "all";
              ga.name = split.enc.name;
              gb.name = split.rest.name;
              gc.gpus = h;
              ga.gpus = ge;
              gb.gpus = gl;
              gc.micro_batches_per_gpu = qc;
              ga.micro_batches_per_gpu = static_cast<int>((qp + ge - 1) / ge);
              gb.micro_batches_per_gpu = static_cast<int>((qp + gl - 1) / gl);
              gc.compute = TimeUs(qc * per_mb_c);
              ga.compute = TimeUs(ga.micro_batches_per_gpu * e.fwd_bwd);
              gb.compute = TimeUs(gb.micro_batches_per_gpu * l.fwd_bwd);
              ga.link = TimeUs(ga.micro_batches_per_gpu * c_mb);
              gb.link = TimeUs(gb.micro_batches_per_gpu * c_mb);
              gc.optimizer = TimeUs(opt_all);
              ga.optimizer = TimeUs(e.opt);
              gb.optimizer = TimeUs(l.opt);
              AllReduce(comm, options, {{split.enc.params, h + ge}, {split.rest.params, h + gl}},
                        qc * all1.bwd * best1.plan.micro_batches / M, S, comm_sms, &gc);
              AllReduce(comm, options, {{split.enc.params, h + ge}},
                        ga.micro_batches_per_gpu * e.bwd, S, comm_sms, &ga);
              AllReduce(comm, options, {{split.rest.params, h + gl}},
                        gb.micro_batches_per_gpu * l.bwd, S, comm_sms, &gb);
              const double wa =
                  std::max(ga.compute.value(), ga.link.value()) + ga.comm_sm_cost.value();
              const double wb =
                  std::max(gb.compute.value(), gb.link.value()) + gb.comm_sm_cost.value();
              const double fill = e.fwd_bwd + l.fwd_bwd + 2 * c_mb - std::max(e.fwd_bwd, l.fwd_bwd);
              const double pipe = std::max(wa, wb) + fill +
                                  std::max(ga.optimizer.value() + ga.exposed_allreduce.value(),
                                           gb.optimizer.value() + gb.exposed_allreduce.value());
              const double colo = gc.compute.value() + gc.comm_sm_cost.value() +
                                  gc.optimizer.value() + gc.exposed_allreduce.value();
              const double step = std::max(pipe, colo);
              if (best_h.groups.empty() || step < best_h.step.value()) {
                best_h.kind = LayoutKind::kHybrid;
                best_h.groups = {gc, ga, gb};
                best_h.step = TimeUs(step);
              }
            }
          }
        }
      }
      if (best_h.groups.empty()) continue;
      best_h.groups[0].modules = Names(model, all_modules);
      best_h.groups[1].modules = Names(model, split.enc.modules);
      best_h.groups[2].modules = Names(model, split.rest.modules);
      best_h.name = "hybrid colocated + " + split.enc.name + "|" + split.rest.name;
      finish(best_h);
      layouts.push_back(best_h);
    }
  }

  std::stable_sort(layouts.begin(), layouts.end(),
                   [](const MultiGpuLayout& a, const MultiGpuLayout& b) {
                     return a.step.value() < b.step.value();
                   });
  const size_t keep = static_cast<size_t>(std::max(1, options.max_layouts));
  if (layouts.size() > keep) {
    // The colocated layout stays in the list as the reference, in its place by step time.
    auto co = std::find_if(layouts.begin(), layouts.end(), [](const MultiGpuLayout& l) {
      return l.kind == LayoutKind::kColocated;
    });
    if (keep >= 2 && co - layouts.begin() >= static_cast<std::ptrdiff_t>(keep)) {
      MultiGpuLayout c = *co;
      layouts.resize(keep - 1);
      layouts.push_back(c);
    } else {
      layouts.resize(keep);
    }
  }
  r.layouts = std::move(layouts);

  const MultiGpuLayout& chosen = r.layouts[0];
  if (chosen.kind == LayoutKind::kColocated) {
    r.plans.push_back(best1.plan);
  } else {
    for (const GpuGroup& g : chosen.groups) {
      if (g.name == "all") {  // a hybrid layout's colocated GPUs run the single-GPU plan
        r.plans.push_back(best1.plan);
        continue;
      }
      std::vector<int> mods;
      for (const std::string& name : g.modules)
        mods.push_back(model.IndexOf(name));
      r.plans.push_back(
          StagePlan(model, device, mods, g.name, g.micro_batches_per_gpu, chosen.step.value()));
    }
  }
  return r;
}

}  // namespace mosaic
