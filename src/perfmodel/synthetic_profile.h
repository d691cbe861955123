// Synthetic profiles: what a module would measure on a device, from its analytic cost
// (core/cost.h) and a scaling law shaped on the H100 measurements of gpu-facts.md. Used until
// `mosaic profile` has written real profiles to configs/profiles/<model>-<device>.json, and by
// the tests and benchmarks (Note [synthetic scaling law] in synthetic_profile.cc).
//
//   Profile p = MakeSyntheticProfile(model, device, /*micro_batch_size=*/32);
//   TimeUs t = SyntheticTime(model, device, model.IndexOf("vision"), TaskPhase::kForward,
//                            /*samples=*/32, /*sms=*/64.0);
#pragma once

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/profile.h"
#include "core/task_graph.h"
#include "core/units.h"

namespace mosaic {

// Constants of the law t(s) = L + F / (eff(M) * P_sm * s) + B / (BW * min(1, s / s_bw)).
struct SyntheticLaw {
  double max_efficiency = 0.33;  // fraction of datasheet peak a large GEMM-heavy pass reaches
  double half_efficiency_tokens = 400;  // tokens per micro-batch at which efficiency is half
  double bandwidth_sms = 48;            // SMs needed to saturate DRAM bandwidth
  int kernels_per_block_fwd = 15;       // graph nodes per transformer block, forward (backward: 2x)
  // Wider GEMMs run closer to peak: a transformer's efficiency scales by (width / 768)^this.
  double width_exponent = 0.4;
  double reference_width = 768;
};

// Work of one (module, phase) task on `samples` samples.
struct TaskWork {
  Flops flops{0};
  Bytes bytes{0};             // DRAM traffic
  Bytes activation_bytes{0};  // forward only: held until the backward
  double tokens = 0;          // parallel work items (tokens) of the micro-batch
  int kernels = 0;            // kernels (graph nodes) the task launches
};
TaskWork EstimateTaskWork(const ModelSpec& model, int module_index, TaskPhase phase, int samples,
                          const SyntheticLaw& law = {});

// Parameter tensors of a module as src/models builds it (each is one gradient the executor
// zeroes with its own kernel): 12 per LayerNorm block with biases (2 norms, qkv, out, fc1, fc2),
// 6 per RMSNorm/SwiGLU block without biases, plus embeddings, norms and heads.
int EstimateParameterTensors(const ModuleSpec& module);

// The law's time for (module, phase) on `samples` samples and `sms` SMs. With the device's
// executor constants a loss task runs eagerly (Note [executor overhead]): the longer of its
// kernels' host launches (eager_op_us each; 6 forward, 12 backward per input beyond the
// anchor) and its GPU work, a next-token loss moving 26 bytes per logit forward and 38
// backward, at the executor's bandwidth efficiency.
TimeUs SyntheticTime(const ModelSpec& model, const DeviceSpec& device, int module_index,
                     TaskPhase phase, int samples, double sms, const SyntheticLaw& law = {});

// A profile with source "synthetic": one entry per task kind of the model, points at every
// SM count the device can dedicate (IsValidQuota) plus the full device, shared_time = full.
Profile MakeSyntheticProfile(const ModelSpec& model, const DeviceSpec& device, int micro_batch_size,
                             const SyntheticLaw& law = {});

}  // namespace mosaic
