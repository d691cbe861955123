// Generated planning instances for the planner benchmark: CLIP-like (2-3 encoders and a
// contrastive loss), LLaVA-like (encoder -> projector -> LLM -> next-token loss) and wide
// many-encoder models, on a few device shapes, with synthetic profiles. Deterministic: the
// same seed gives the same instances.
//
//   std::vector<PlanningInstance> family = OracleFamily(/*count=*/200, /*seed=*/1);
//   PlanningInstance big = WideInstance(/*modules=*/16, /*seed=*/7);
#pragma once

#include <random>
#include <string>
#include <vector>

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/profile.h"
#include "perfmodel/synthetic_profile.h"

namespace mosaic::bench {

struct PlanningInstance {
  std::string name;
  ModelSpec model;
  DeviceSpec device;
  Profile profile;
};

inline DeviceSpec GpuShape(int sms, int granularity, const std::string& name) {
  DeviceSpec d;
  d.name = name;
  d.sm_count = SmCount(sms);
  d.sm_granularity = SmCount(granularity);
  d.sm_groups = sms / granularity;
  d.memory = Bytes(80.0 * (1 << 30));
  d.peak_flops_bf16 = FlopsPerSec(989e12 * sms / 132);
  d.peak_flops_fp32 = FlopsPerSec(67e12 * sms / 132);
  d.memory_bandwidth = BytesPerSec(3350e9 * std::min(1.0, sms / 100.0));
  d.launch_overhead = TimeUs(4);
  d.link_bandwidth = BytesPerSec(450e9);
  d.link_latency = TimeUs(5);
  return d;
}

inline ModuleSpec Encoder(const std::string& name, std::mt19937& rng) {
  const int widths[] = {256, 384, 512, 768, 1024};
  const int depths[] = {2, 4, 6, 12, 24};
  ModuleSpec m;
  m.name = name;
  const int kind = std::uniform_int_distribution<int>(0, 2)(rng);
  m.width = widths[std::uniform_int_distribution<int>(0, 4)(rng)];
  m.depth = depths[std::uniform_int_distribution<int>(0, 4)(rng)];
  m.heads = m.width / 64;
  m.mlp_dim = 4 * m.width;
  m.output_dim = 512;
  if (kind == 0) {
    m.kind = ModuleKind::kVit;
    m.image_size = 224;
    m.patch_size = std::uniform_int_distribution<int>(0, 1)(rng) ? 16 : 32;
    m.channels = 3;
  } else if (kind == 1) {
    m.kind = ModuleKind::kText;
    m.seq_len = 77;
    m.vocab_size = 49408;
  } else {
    m.kind = ModuleKind::kAudio;
    m.n_mels = 80;
    m.frames = 400;
  }
  return m;
}

inline ModuleSpec Loss(LossKind kind) {
  ModuleSpec l;
  l.name = "loss";
  l.kind = ModuleKind::kLoss;
  l.loss = kind;
  return l;
}

// Encoders + contrastive loss (`encoders` of them), CLIP/ImageBind-like.
inline ModelSpec ContrastiveModel(int encoders, int batch, std::mt19937& rng) {
  ModelSpec m;
  m.name = "gen-contrastive-" + std::to_string(encoders);
  m.batch_size = batch;
  for (int i = 0; i < encoders; ++i) {
    m.modules.push_back(Encoder("enc" + std::to_string(i), rng));
    m.edges.push_back({m.modules.back().name, "loss"});
  }
  m.modules.push_back(Loss(LossKind::kContrastive));
  return m;
}

// Vision encoder -> projector -> small LLM -> next-token loss, LLaVA-like.
inline ModelSpec ChainModel(int batch, std::mt19937& rng) {
  ModelSpec m;
  m.name = "gen-chain";
  m.batch_size = batch;
  ModuleSpec v = Encoder("vision", rng);
  v.kind = ModuleKind::kVit;
  v.image_size = 224;
  v.patch_size = 16;
  v.channels = 3;
  v.pool = Pooling::kNone;
  v.output_dim = 0;
  ModuleSpec p;
  p.name = "projector";
  p.kind = ModuleKind::kProjector;
  p.projector = ProjectorKind::kMlp2;
  p.in_dim = v.width;
  p.hidden_dim = 1024;
  p.out_dim = 1024;
  ModuleSpec llm;
  llm.name = "llm";
  llm.kind = ModuleKind::kLlm;
  llm.width = 1024;
  llm.depth = std::uniform_int_distribution<int>(0, 1)(rng) ? 8 : 16;
  llm.heads = 16;
  llm.kv_heads = 4;
  llm.mlp_dim = 2816;
  llm.seq_len = 256;
  llm.vocab_size = 32000;
  m.modules = {v, p, llm, Loss(LossKind::kNextToken)};
  m.edges = {{"vision", "projector"}, {"projector", "llm"}, {"llm", "loss"}};
  return m;
}

inline PlanningInstance Make(std::string name, ModelSpec model, DeviceSpec device) {
  PlanningInstance in;
  in.name = std::move(name);
  in.profile = MakeSyntheticProfile(model, device, model.micro_batch_size());
  in.model = std::move(model);
  in.device = std::move(device);
  return in;
}

// Instances small enough for the exhaustive oracle: at most 3 modules with SMs to split per
// phase on a 132-SM H100, or 4 on smaller shapes.
inline std::vector<PlanningInstance> OracleFamily(int count, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<PlanningInstance> out;
  const int batches[] = {4, 8, 16, 32};
  for (int i = 0; out.size() < static_cast<size_t>(count); ++i) {
    const int batch = batches[std::uniform_int_distribution<int>(0, 3)(rng)];
    const int shape = std::uniform_int_distribution<int>(0, 2)(rng);
    DeviceSpec d = shape == 0   ? GpuShape(132, 8, "h100-like")
                   : shape == 1 ? GpuShape(64, 8, "gpu-64")
                                : GpuShape(78, 8, "gpu-78");
    const int kind = std::uniform_int_distribution<int>(0, 2)(rng);
    ModelSpec m;
    if (kind == 0) {
      m = ContrastiveModel(2, batch, rng);
    } else if (kind == 1 && shape != 0) {
      m = ContrastiveModel(3, batch, rng);
    } else if (shape != 0) {
      m = ChainModel(batch, rng);
    } else {
      m = ContrastiveModel(2, batch, rng);
    }
    m.name += "-" + std::to_string(i);
    out.push_back(Make(m.name + "@" + d.name, m, d));
  }
  return out;
}

// A wide model: `encoders` encoders into a contrastive loss on an H100-like GPU.
inline PlanningInstance WideInstance(int encoders, unsigned seed, int batch = 32) {
  std::mt19937 rng(seed);
  ModelSpec m = ContrastiveModel(encoders, batch, rng);
  return Make(m.name, m, GpuShape(132, 8, "h100-like"));
}

// A chain model with `extra` more encoders feeding the LLM through the projector.
inline PlanningInstance PipelineInstance(int modules, unsigned seed, int batch = 32) {
  std::mt19937 rng(seed);
  ModelSpec m = ChainModel(batch, rng);
  for (int i = 0; static_cast<int>(m.modules.size()) < modules; ++i) {
    ModuleSpec e = Encoder("enc" + std::to_string(i), rng);
    e.output_dim = 0;
    e.pool = Pooling::kNone;
    ModuleSpec p;
    p.name = "proj" + std::to_string(i);
    p.kind = ModuleKind::kProjector;
    p.projector = ProjectorKind::kLinear;
    p.in_dim = e.width;
    p.out_dim = 1024;
    m.modules.insert(m.modules.begin(), {e, p});
    m.edges.push_back({e.name, p.name});
    m.edges.push_back({p.name, "llm"});
  }
  m.name = "gen-pipeline-" + std::to_string(m.modules.size());
  return Make(m.name, m, GpuShape(132, 8, "h100-like"));
}

}  // namespace mosaic::bench
