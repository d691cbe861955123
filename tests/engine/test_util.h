// Helpers for the engine tests: tiny CLIP- and LLaVA-shaped specs, plan checks, and eager
// reference steps.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "core/model_spec.h"
#include "core/plan.h"
#include "engine/plan_executor.h"
#include "models/multimodal_model.h"

namespace mosaic::engine::testing {

inline const bool kSingleThreaded = [] {
  at::set_num_threads(1);
  return true;
}();

inline ModelSpec SpecFromJson(const std::string& text) {
  StatusOr<ModelSpec> s = ParseModelSpec(Json::parse(text));
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

inline ModelSpec TinyClip(int batch = 8, int micro_batches = 1) {
  return SpecFromJson(R"({"name": "clip-t", "batch_size": )" + std::to_string(batch) +
                      R"(, "micro_batches": )" + std::to_string(micro_batches) + R"(,
    "precision": "fp32",
    "modules": [
      {"name": "vision", "kind": "vit", "width": 16, "depth": 2, "heads": 2, "image_size": 16,
       "patch_size": 8, "output_dim": 8, "pool": "cls"},
      {"name": "text", "kind": "text", "width": 16, "depth": 2, "heads": 2, "seq_len": 6,
       "vocab_size": 40, "output_dim": 8, "causal": true, "pool": "last"},
      {"name": "loss", "kind": "loss", "loss": "contrastive"}],
    "edges": [["vision", "loss"], ["text", "loss"]]})");
}

inline ModelSpec TinyLlava(int batch = 4, int micro_batches = 2) {
  return SpecFromJson(R"({"name": "llava-t", "batch_size": )" + std::to_string(batch) +
                      R"(, "micro_batches": )" + std::to_string(micro_batches) + R"(,
    "precision": "fp32",
    "modules": [
      {"name": "vision", "kind": "vit", "width": 16, "depth": 2, "heads": 2, "image_size": 16,
       "patch_size": 8, "pool": "none"},
      {"name": "projector", "kind": "projector", "projector": "mlp2", "in_dim": 16,
       "hidden_dim": 32, "out_dim": 32},
      {"name": "llm", "kind": "llm", "width": 32, "depth": 2, "heads": 4, "kv_heads": 2,
       "mlp_dim": 64, "seq_len": 8, "vocab_size": 50, "rope_theta": 10000},
      {"name": "loss", "kind": "loss", "loss": "next_token"}],
    "edges": [["vision", "projector"], ["projector", "llm"], ["llm", "loss"]]})");
}

// Every TaskGraph edge goes forward in `order` (task indices), and every partition's tasks keep
// the plan's order.
inline void ExpectHonoursPlan(const PlanExecutor& exec, const Plan& plan) {
  const TaskGraph& g = exec.graph();
  const std::vector<int>& order = exec.executed();
  ASSERT_EQ(order.size(), g.size()) << "every task runs exactly once";
  std::vector<int> pos(g.size(), -1);
  for (size_t k = 0; k < order.size(); ++k) {
    ASSERT_EQ(pos[order[k]], -1) << g.tasks()[order[k]].id.ToString() << " ran twice";
    pos[order[k]] = static_cast<int>(k);
  }
  for (const TaskEdge& e : g.edges()) {
    EXPECT_LT(pos[e.from], pos[e.to])
        << g.tasks()[e.from].id.ToString() << " -> " << g.tasks()[e.to].id.ToString();
  }
  for (size_t ph = 0; ph < plan.phases.size(); ++ph)
    for (const PartitionSpec& p : plan.phases[ph].partitions)
      for (size_t k = 1; k < p.tasks.size(); ++k)
        EXPECT_LT(pos[g.Find(p.tasks[k - 1])], pos[g.Find(p.tasks[k])])
            << "partition " << p.id << " order";
  // Phases run in sequence.
  for (int a : order)
    for (int b : order)
      if (exec.placement(a).first < exec.placement(b).first) {
        EXPECT_LT(pos[a], pos[b]);
      }
}

// The eager reference step: per micro-batch forward and backward of the whole model with the
// loss scaled by 1/M (per-micro-batch losses), or the whole batch at once when the model has a
// batch-level (contrastive) loss. Returns the step loss; gradients are left in .grad.
inline torch::Tensor EagerStep(models::MultimodalModel& model, const models::Batch& batch,
                               int micro_batches, bool batch_level_loss) {
  model->zero_grad();
  models::AutocastGuard guard(batch.tokens.device(), model->spec().precision);
  if (batch_level_loss) {
    torch::Tensor loss = model->forward(batch).loss;
    loss.backward();
    return loss.detach();
  }
  torch::Tensor total = torch::zeros({}, torch::TensorOptions().device(batch.tokens.device()));
  const int64_t mb = batch.size() / micro_batches;
  for (int m = 0; m < micro_batches; ++m) {
    torch::Tensor loss = model->forward(batch.Slice(m * mb, mb)).loss / micro_batches;
    loss.backward();
    total = total + loss.detach();
  }
  return total;
}

// Copies of every parameter's gradient, by name.
inline std::map<std::string, torch::Tensor> Grads(models::MultimodalModel& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& kv : model->named_parameters())
    if (kv.value().grad().defined()) out[kv.key()] = kv.value().grad().detach().clone().cpu();
  return out;
}

// The largest `diff(a[name], b[name])` over b's tensors, and where (a missing one is 1e9).
template <typename Diff>
double WorstOver(const std::map<std::string, torch::Tensor>& a,
                 const std::map<std::string, torch::Tensor>& b, std::string* where, Diff diff) {
  double worst = 0;
  for (const auto& [name, tb] : b) {
    auto it = a.find(name);
    if (it == a.end()) {
      *where = name + " (missing)";
      return 1e9;
    }
    const double d = diff(it->second.to(torch::kDouble), tb.to(torch::kDouble));
    if (!(d <= worst)) {
      worst = d;
      *where = name;
    }
  }
  return worst;
}

// Largest |a - b| / (max|b| + tiny) over tensors, and the name where it happened.
inline double MaxRelDiff(const std::map<std::string, torch::Tensor>& a,
                         const std::map<std::string, torch::Tensor>& b, std::string* where) {
  return WorstOver(a, b, where, [](const torch::Tensor& x, const torch::Tensor& ref) {
    return (x - ref).abs().max().item<double>() / (ref.abs().max().item<double>() + 1e-12);
  });
}

// Largest per-tensor ||a - b|| / ||b|| (norm-wise relative error), and where.
inline double MaxNormRelDiff(const std::map<std::string, torch::Tensor>& a,
                             const std::map<std::string, torch::Tensor>& b, std::string* where) {
  return WorstOver(a, b, where, [](const torch::Tensor& x, const torch::Tensor& ref) {
    return (x - ref).norm().item<double>() / (ref.norm().item<double>() + 1e-30);
  });
}

}  // namespace mosaic::engine::testing
