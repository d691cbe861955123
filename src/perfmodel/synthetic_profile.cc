// The synthetic scaling law; see synthetic_profile.h.
#include "perfmodel/synthetic_profile.h"

#include <algorithm>
#include <cmath>

#include "core/cost.h"

namespace mosaic {

// Note [synthetic scaling law]
// A task of F FLOPs moving B bytes over M tokens takes on s SMs
//   t(s) = L + F / (eff(M) * P_sm * s) + B / (BW * min(1, s / s_bw))
//   eff(M) = max_efficiency * M / (M + half_efficiency_tokens)
// with P_sm the datasheet peak per SM, BW the DRAM bandwidth and L = kernels * launch
// overhead. The three terms are what gpu-facts.md shows: a floor that no SM count removes
// (kernel latency: 15 graph nodes per block and pass, about 2 ms for a 12-block text tower's
// forward+backward), GEMM work that speeds up linearly with SMs at about a third of peak (ViT-B/16
// bs128 reaches 33%), and memory traffic that speeds up only until about 48 SMs saturate HBM. Small
// micro-batches reach a lower efficiency (ViT-B/16 bs8 scales 3.5x where bs32 scales 4x
// over 16..132 SMs), which eff(M) captures. The terms add rather than overlap because a transformer
// alternates compute-bound GEMMs and memory-bound elementwise kernels. With the defaults the law
// lands within 6% rms (worst 12%) of the gpu-facts table (ViT-B/16 and text w512, bs8 and bs32);
// docs/planning.md shows the comparison. Backward is twice the forward's FLOPs and traffic with
// twice its kernels; the optimizer (fused AdamW) is memory-bound: 12 FLOPs and 28 bytes per
// parameter (read weights, grads, two moments; write three), in a handful of kernels.
// Wider GEMMs run closer to peak: a transformer's efficiency is also scaled by
// (width / 768)^0.4. The exponent is fitted on llava-small's measured H100 profile (its
// 1024-wide ViT-L and 2048-wide LLM at 16..132 SMs: rms log error 32% without the term, 14%
// with it) under the constraint that the gpu-facts table stays within its bounds (6.5% rms,
// 12% worst, from 6.3% and 11.8%); the suite's imagebind-like and omni-small steps, planned
// from the law, are the hold-out (docs/planning.md section 10).

TaskWork EstimateTaskWork(const ModelSpec& model, int module_index, TaskPhase phase, int samples,
                          const SyntheticLaw& law) {
  const ModuleSpec& m = model.modules[module_index];
  const ModuleCost c = EstimateModuleCost(model, module_index, samples);
  TaskWork w;
  double tokens;
  int fwd_kernels;
  if (m.is_transformer()) {
    // The GEMMs' rows: every token the module runs, an LLM's prefix (projected encoder tokens)
    // included, not only its text (omni-small's LLM runs 256 text + 1696 prefix tokens).
    double run = m.sequence_tokens();
    if (m.kind == ModuleKind::kLlm)
      for (const std::string& in : model.InputsOf(m.name))
        run += InputTokensOut(model, in);
    tokens = double(samples) * run;
    fwd_kernels = law.kernels_per_block_fwd * m.depth + 6;
  } else {
    tokens = c.parameters > 1 ? c.forward_flops.value() / (2 * c.parameters) : samples;
    fwd_kernels = m.is_loss() ? 6 : 4;
  }
  w.tokens = std::max(1.0, tokens);
  switch (phase) {
    case TaskPhase::kForward:
      w.flops = c.forward_flops;
      w.bytes = c.forward_traffic;
      w.activation_bytes = c.activation_bytes;
      w.kernels = fwd_kernels;
      break;
    case TaskPhase::kBackward:
      w.flops = c.forward_flops * 2.0;
      w.bytes = c.forward_traffic * 2.0;
      w.kernels = 2 * fwd_kernels;
      break;
    case TaskPhase::kOptimizer:
      w.flops = Flops(12.0 * c.parameters);
      w.bytes = Bytes(28.0 * c.parameters);
      w.tokens = std::max(1.0, c.parameters / 4096);  // elementwise over all parameters
      w.kernels = 4;
      break;
  }
  return w;
}

int EstimateParameterTensors(const ModuleSpec& m) {
  const bool bias = m.kind != ModuleKind::kLlm;
  const int per_block = bias ? 12 : 6;
  switch (m.kind) {
    case ModuleKind::kVit:  // patch conv (+ bias), positions, class token, ln_pre, ln_post, proj
      return per_block * m.depth + 1 + (m.patch_bias ? 1 : 0) + 1 +
             (m.pool == Pooling::kCls || m.drop_cls ? 1 : 0) + 4 + (m.output_dim > 0 ? 1 : 0);
    case ModuleKind::kText:  // token embedding, positions, final norm, proj
      return per_block * m.depth + 2 + 2 + (m.output_dim > 0 ? 1 : 0);
    case ModuleKind::kAudio:  // two convs with biases, positions, ln_post, proj
      return per_block * m.depth + 4 + 1 + 2 + (m.output_dim > 0 ? 1 : 0);
    case ModuleKind::kLlm:  // token embedding, final RMSNorm, LM head
      return per_block * m.depth + 2 + (m.tie_embeddings ? 0 : 1);
    case ModuleKind::kProjector:
      return m.projector == ProjectorKind::kMlp2 ? 4 : 2;
    case ModuleKind::kLoss:
      return m.has_parameters() ? 1 : 0;  // a contrastive loss's temperature
  }
  return 0;
}

namespace {

// Note [executor overhead]: the loss runs eagerly; its host launches and its GPU work overlap.
TimeUs EagerLossTime(const ModelSpec& model, const DeviceSpec& device, int module_index,
                     TaskPhase phase, int samples, double sms, const SyntheticLaw& law) {
  const ModuleSpec& m = model.modules[module_index];
  const TaskWork w = EstimateTaskWork(model, module_index, phase, samples, law);
  const auto inputs = model.InputsOf(m.name);
  const int pairs = std::max<int>(1, static_cast<int>(inputs.size()) - 1);
  const int kernels = (phase == TaskPhase::kBackward ? 12 : 6) * pairs;
  double bytes = w.bytes.value();
  if (m.loss == LossKind::kNextToken && !inputs.empty()) {
    // models/losses.cc NextTokenLoss, per logit: forward bf16 -> fp32 (2 + 4), the reshape's
    // copy of the narrowed logits (4 + 4), log-softmax (two reads and a write, 12); backward
    // the NLL gradient (4), log-softmax's (four passes, 16), the narrow's zero-filled copy back
    // (12) and fp32 -> bf16 (6). Counted from the code, not fitted: llava-small measured 23 and
    // 35 bytes per logit at 75% of the bandwidth.
    const ModuleSpec* llm = model.Find(inputs[0]);
    if (llm && llm->kind == ModuleKind::kLlm) {
      const double per_logit = phase == TaskPhase::kBackward ? 38.0 : 26.0;
      bytes += per_logit * samples * llm->seq_len * double(llm->vocab_size);
    }
  }
  const double total_sms = std::max(1, device.sm_count.value());
  const double bw = device.memory_bandwidth.value() > 0 ? device.memory_bandwidth.value() : 1e11;
  const double eff = device.executor->bandwidth_efficiency;
  const double gpu_us =
      1e6 * bytes / (eff * bw * std::min(1.0, sms / std::min(law.bandwidth_sms, total_sms)));
  return TimeUs(std::max(kernels * device.executor->eager_op_us, gpu_us));
}

}  // namespace

TimeUs SyntheticTime(const ModelSpec& model, const DeviceSpec& device, int module_index,
                     TaskPhase phase, int samples, double sms, const SyntheticLaw& law) {
  if (device.executor && model.modules[module_index].is_loss() &&
      phase != TaskPhase::kOptimizer) {
    return EagerLossTime(model, device, module_index, phase, samples, sms, law);
  }
  const TaskWork w = EstimateTaskWork(model, module_index, phase, samples, law);
  const double total_sms = std::max(1, device.sm_count.value());
  const bool low_precision = model.precision != Precision::kFp32;
  const double peak = device.peak_flops(low_precision).value();
  const double per_sm = peak > 0 ? peak / total_sms : 1e12;
  const double bw = device.memory_bandwidth.value() > 0 ? device.memory_bandwidth.value() : 1e11;
  const ModuleSpec& m = model.modules[module_index];
  const double width = m.is_transformer() && m.width > 0 ? m.width : law.reference_width;
  const double eff = law.max_efficiency * w.tokens / (w.tokens + law.half_efficiency_tokens) *
                     std::pow(width / law.reference_width, law.width_exponent);
  sms = std::max(sms, 1e-3);
  const double bw_sms = std::min(law.bandwidth_sms, total_sms);
  const double compute_s = w.flops.value() / (eff * per_sm * sms);
  const double memory_s = w.bytes.value() / (bw * std::min(1.0, sms / bw_sms));
  return TimeUs(w.kernels * device.launch_overhead.value() + 1e6 * (compute_s + memory_s));
}

Profile MakeSyntheticProfile(const ModelSpec& model, const DeviceSpec& device, int micro_batch_size,
                             const SyntheticLaw& law) {
  Profile p;
  p.model = model.name;
  p.device = device.name;
  p.precision = ToString(model.precision);
  p.micro_batch_size = micro_batch_size;
  p.source = "synthetic";
  std::vector<int> quotas;
  for (int s = 1; s <= device.sm_count.value(); ++s)
    if (device.IsValidQuota(SmCount(s)) || s == device.sm_count.value()) quotas.push_back(s);
  for (int i = 0; i < static_cast<int>(model.modules.size()); ++i) {
    const ModuleSpec& m = model.modules[i];
    // A contrastive loss sees the whole batch (Note [task graph edges]).
    const bool batch_level = m.is_loss() && m.loss == LossKind::kContrastive;
    const int samples = batch_level ? model.batch_size : micro_batch_size;
    for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward, TaskPhase::kOptimizer}) {
      if (ph == TaskPhase::kOptimizer && !m.has_parameters()) continue;
      TaskWork w = EstimateTaskWork(model, i, ph, samples, law);
      ProfileEntry e;
      e.module = m.name;
      e.phase = ph;
      e.flops = w.flops;
      e.bytes = w.bytes;
      e.activation_bytes = w.activation_bytes;
      for (int s : quotas)
        e.points.push_back({SmCount(s), SyntheticTime(model, device, i, ph, samples, s, law)});
      p.entries.push_back(std::move(e));
    }
  }
  return p;
}

}  // namespace mosaic
