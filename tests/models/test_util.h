// Helpers for the models tests: tiny module specs and a finite-difference gradient check.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "core/model_spec.h"

namespace mosaic::models::testing {

// ctest runs test binaries side by side on few cores; OpenMP's spinning worker threads then made
// a 2 s test take 50 s (measured on the 2-core CI machine). Tiny test models gain nothing from
// intra-op threads.
inline const bool kSingleThreaded = [] {
  at::set_num_threads(1);
  return true;
}();

inline ModuleSpec TinyVit(Pooling pool, int output_dim = 0) {
  ModuleSpec m;
  m.name = "vision";
  m.kind = ModuleKind::kVit;
  m.width = 8;
  m.depth = 2;
  m.heads = 2;
  m.mlp_dim = 16;
  m.image_size = 8;
  m.patch_size = 4;
  m.channels = 3;
  m.pool = pool;
  m.output_dim = output_dim;
  return m;
}

inline ModuleSpec TinyText(Pooling pool, bool causal, int output_dim = 0) {
  ModuleSpec m;
  m.name = "text";
  m.kind = ModuleKind::kText;
  m.width = 8;
  m.depth = 2;
  m.heads = 2;
  m.mlp_dim = 16;
  m.seq_len = 6;
  m.vocab_size = 11;
  m.causal = causal;
  m.pool = pool;
  m.output_dim = output_dim;
  return m;
}

inline ModuleSpec TinyLlm() {
  ModuleSpec m;
  m.name = "llm";
  m.kind = ModuleKind::kLlm;
  m.width = 16;
  m.depth = 2;
  m.heads = 4;
  m.kv_heads = 2;
  m.mlp_dim = 24;
  m.seq_len = 6;
  m.vocab_size = 13;
  m.causal = true;
  m.rope_theta = 10000;
  m.pool = Pooling::kNone;
  return m;
}

inline ModuleSpec TinyProjector(ProjectorKind kind, int in, int hidden, int out) {
  ModuleSpec m;
  m.name = "projector";
  m.kind = ModuleKind::kProjector;
  m.projector = kind;
  m.in_dim = in;
  m.hidden_dim = kind == ProjectorKind::kMlp2 ? hidden : 0;
  m.out_dim = out;
  return m;
}

inline ModuleSpec TinyAudio(Pooling pool, int output_dim = 0) {
  ModuleSpec m;
  m.name = "audio";
  m.kind = ModuleKind::kAudio;
  m.width = 8;
  m.depth = 2;
  m.heads = 2;
  m.mlp_dim = 16;
  m.n_mels = 5;
  m.frames = 10;
  m.pool = pool;
  m.output_dim = output_dim;
  return m;
}

inline ModuleSpec Loss(LossKind kind, const std::string& name = "loss") {
  ModuleSpec m;
  m.name = name;
  m.kind = ModuleKind::kLoss;
  m.loss = kind;
  return m;
}

// Compares autograd's gradient of `loss()` (a scalar, computed in double) with central finite
// differences, for up to `per_param` random coordinates of every parameter of `module`.
inline void ExpectGradientsMatchFiniteDifferences(torch::nn::Module& module,
                                                  const std::function<torch::Tensor()>& loss,
                                                  int per_param = 3, double eps = 1e-6,
                                                  double tol = 1e-6) {
  module.zero_grad();
  torch::Tensor l = loss();
  ASSERT_EQ(l.scalar_type(), torch::kDouble);
  l.backward();
  torch::manual_seed(1234);
  int checked = 0;
  for (auto& named : module.named_parameters()) {
    torch::Tensor p = named.value();
    ASSERT_TRUE(p.grad().defined()) << named.key() << " got no gradient";
    torch::Tensor flat_grad = p.grad().reshape({-1});
    const int64_t n = p.numel();
    for (int k = 0; k < per_param && k < n; ++k) {
      const int64_t i = torch::randint(n, {1}).item<int64_t>();
      double analytic = flat_grad[i].item<double>();
      double plus, minus;
      {
        torch::NoGradGuard no_grad;
        torch::Tensor flat = p.view({-1});
        const double orig = flat[i].item<double>();
        flat[i] = orig + eps;
        plus = loss().item<double>();
        flat[i] = orig - eps;
        minus = loss().item<double>();
        flat[i] = orig;
      }
      const double numeric = (plus - minus) / (2 * eps);
      EXPECT_NEAR(analytic, numeric, tol * std::max(1.0, std::abs(numeric)))
          << named.key() << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

// A fixed random linear functional of y, so that every output element matters to the loss.
inline torch::Tensor Probe(const torch::Tensor& y, int64_t seed = 7) {
  torch::Generator g = at::detail::createCPUGenerator(seed);
  torch::Tensor w = at::randn(y.sizes(), g, y.options().device(torch::kCPU)).to(y.device());
  return (y * w).sum();
}

}  // namespace mosaic::models::testing
