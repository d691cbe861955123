// mosaic-step-bench: measured training-step time of one model under several ways of running it:
// eager temporal (PyTorch as users run it), graph temporal (per-module CUDA graphs on one
// stream: the honest baseline), graphs on concurrent shared streams, and graphs on a split of
// the SMs (green contexts). Each mode: warmup steps, then `--steps` timed steps (device events
// around each, AdamW included), median reported; JSON with every repetition.
//
//   mosaic-step-bench --model clip-b16 --split vision:104,text:28 -o out/clip-b16-steps.json
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "core/file_io.h"
#include "core/model_spec.h"
#include "engine/fused_adamw.h"
#include "engine/partition.h"
#include "engine/plan_executor.h"
#include "engine/profiler.h"
#include "engine/standard_plans.h"
#include "models/multimodal_model.h"

using namespace mosaic;
using namespace mosaic::engine;

namespace {

struct Mode {
  std::string name;
  ExecMode exec;
  StatusOr<Plan> plan;
};

StatusOr<std::vector<ModuleGroup>> ParseSplit(const std::string& text) {
  std::vector<ModuleGroup> groups;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t colon = item.find(':');
    if (colon == std::string::npos) return InvalidArgument("--split: want module:sms, got " + item);
    ModuleGroup g;
    std::stringstream names(item.substr(0, colon));
    std::string n;
    while (std::getline(names, n, '+'))
      g.modules.push_back(n);
    g.sms = std::stoi(item.substr(colon + 1));
    groups.push_back(g);
  }
  return groups;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Measured step time of a model under eager/graph temporal, shared streams, splits");
  std::string model_arg = "clip-b16", split_arg, out, configs = "configs", plan_file;
  int steps = 20, warmup = 5;
  bool split_fwd_only = false;
  app.add_option("--model", model_arg, "Model spec file or zoo name")->capture_default_str();
  app.add_option("--configs", configs, "Configs folder")->capture_default_str();
  app.add_option("--split", split_arg, "Dedicated split, e.g. vision:104,text:28 (+ joins)");
  app.add_option("--split-fwd-only", split_fwd_only,
                 "Split only the forward phase; backward on shared streams")
      ->capture_default_str();
  app.add_option("--plan", plan_file, "Also time this plan file");
  app.add_option("--steps", steps, "Timed steps per mode")->capture_default_str();
  app.add_option("--warmup", warmup, "Untimed steps per mode")->capture_default_str();
  app.add_option("-o,--out", out, "JSON results");
  CLI11_PARSE(app, argc, argv);

  const std::string path =
      model_arg.find('/') == std::string::npos && model_arg.find(".json") == std::string::npos
          ? configs + "/models/" + model_arg + ".json"
          : model_arg;
  StatusOr<ModelSpec> spec = LoadModelSpec(path);
  if (!spec.ok()) {
    std::cerr << "mosaic-step-bench: " << spec.status().message() << "\n";
    return 2;
  }
  if (!torch::cuda::is_available()) {
    std::cerr << "mosaic-step-bench: needs a CUDA GPU\n";
    return 2;
  }
  const torch::Device device(torch::kCUDA, 0);
  torch::manual_seed(1);
  StatusOr<models::MultimodalModel> model = models::BuildMultimodalModel(*spec, device);
  if (!model.ok()) {
    std::cerr << "mosaic-step-bench: " << model.status().message() << "\n";
    return 2;
  }
  const int M = spec->micro_batches;
  const models::Batch batch = models::SyntheticBatch(*spec, spec->batch_size, device, 7);

  std::vector<Mode> modes;
  modes.push_back({"eager-temporal", ExecMode::kEager, TemporalPlan(*spec, M)});
  modes.push_back({"graph-temporal", ExecMode::kGraph, TemporalPlan(*spec, M)});
  modes.push_back({"graph-shared-streams", ExecMode::kGraph, SharedStreamsPlan(*spec, M)});
  if (!split_arg.empty()) {
    StatusOr<std::vector<ModuleGroup>> g = ParseSplit(split_arg);
    if (!g.ok()) {
      std::cerr << "mosaic-step-bench: " << g.status().message() << "\n";
      return 2;
    }
    modes.push_back({"graph-split " + split_arg + (split_fwd_only ? " (fwd)" : ""),
                     ExecMode::kGraph, PartitionedPlan(*spec, M, *g, split_fwd_only)});
  }
  if (!plan_file.empty())
    modes.push_back({"plan " + plan_file, ExecMode::kGraph, LoadPlan(plan_file)});

  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  Json doc;
  doc["model"] = spec->name;
  doc["batch_size"] = spec->batch_size;
  doc["micro_batches"] = M;
  doc["precision"] = ToString(spec->precision);
  doc["gpu"] = prop.name;
  doc["driver"] = DriverVersion();
  doc["torch"] = TorchVersion();
  doc["modes"] = Json::array();
  std::vector<std::pair<std::string, double>> table;
  std::vector<double> fb_table;
  for (Mode& mode : modes) {
    if (!mode.plan.ok()) {
      std::cerr << mode.name << ": " << mode.plan.status().message() << "\n";
      continue;
    }
    std::vector<double> ms, fb_ms;
    int unmoved = 0;
    {
      ExecutorOptions o;
      o.mode = mode.exec;
      auto exec = PlanExecutor::Create(*model, *mode.plan, batch, device, o);
      if (!exec.ok()) {
        std::cerr << mode.name << ": " << exec.status().message() << "\n";
        continue;
      }
      unmoved = (*exec)->misplaced_backwards();
      FusedAdamW opt((*model)->parameters(), torch::optim::AdamWOptions(1e-5));
      const cudaStream_t s = c10::cuda::getCurrentCUDAStream().stream();
      bool failed = false;
      for (int i = 0; i < warmup + steps && !failed; ++i) {
        auto e0 = CudaEvent::Create(true), e1 = CudaEvent::Create(true),
             e2 = CudaEvent::Create(true);
        cudaEventRecord(e0->get(), s);
        auto loss = (*exec)->ForwardBackward(batch);
        cudaEventRecord(e1->get(), s);
        Status st = loss.ok() ? (*exec)->ApplyOptimizer(&opt) : loss.status();
        cudaEventRecord(e2->get(), s);
        if (!st.ok()) {
          std::cerr << mode.name << ": " << st.message() << "\n";
          failed = true;
          break;
        }
        cudaEventSynchronize(e2->get());
        float t = 0, fb = 0;
        cudaEventElapsedTime(&t, e0->get(), e2->get());
        cudaEventElapsedTime(&fb, e0->get(), e1->get());
        if (i >= warmup) {
          ms.push_back(t);
          fb_ms.push_back(fb);
        }
      }
      if (failed) continue;
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted.empty() ? 0 : sorted[sorted.size() / 2];
    std::vector<double> fb_sorted = fb_ms;
    std::sort(fb_sorted.begin(), fb_sorted.end());
    const double fb_median = fb_sorted.empty() ? 0 : fb_sorted[fb_sorted.size() / 2];
    table.push_back({mode.name, median});
    fb_table.push_back(fb_median);
    Json m;
    m["mode"] = mode.name;
    m["plan"] = ToJson(*mode.plan);
    m["median_ms"] = median;
    m["step_ms"] = ms;
    m["forward_backward_median_ms"] = fb_median;
    m["forward_backward_ms"] = fb_ms;
    m["misplaced_backward_graphs"] = unmoved;
    doc["modes"].push_back(m);
  }
  std::printf("%s bs%d (%d micro-batches, %s) on %s, median of %d steps (fused AdamW, clip 1.0):\n",
              spec->name.c_str(), spec->batch_size, M, ToString(spec->precision), prop.name, steps);
  std::printf("  %-44s %10s %8s %12s\n", "mode", "step ms", "speedup", "fwd+bwd ms");
  const double base = table.size() > 1 ? table[1].second : 0;
  for (size_t k = 0; k < table.size(); ++k)
    std::printf("  %-44s %10.2f %7.2fx %12.2f\n", table[k].first.c_str(), table[k].second,
                base > 0 && table[k].second > 0 ? base / table[k].second : 0.0, fb_table[k]);
  if (!out.empty()) {
    Status s = WriteJsonFile(out, doc);
    if (!s.ok()) std::cerr << s.message() << "\n";
  }
  return 0;
}
