// Measuring modules under SM quotas (profiler.h).
#include "engine/profiler.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/cost.h"
#include "engine/cuda_check.h"
#include "engine/graphed_module.h"
#include "engine/partition.h"

namespace mosaic::engine {
namespace {

using LaunchFn = std::function<Status(cudaStream_t)>;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median time (us) of `launch` on `stream` over `reps` back-to-back repetitions, each timed
// between its own pair of events, after `warmup` untimed ones.
StatusOr<double> TimeOne(const LaunchFn& launch, cudaStream_t stream, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i)
    MOSAIC_RETURN_IF_ERROR(launch(stream));
  std::vector<CudaEvent> ev;
  for (int i = 0; i <= reps; ++i) {
    MOSAIC_ASSIGN_OR_RETURN(CudaEvent e, CudaEvent::Create(/*timing=*/true));
    ev.push_back(std::move(e));
  }
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev[0].get(), stream));
  for (int i = 0; i < reps; ++i) {
    MOSAIC_RETURN_IF_ERROR(launch(stream));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev[i + 1].get(), stream));
  }
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, ev[i].get(), ev[i + 1].get()));
    us.push_back(ms * 1000.0);
  }
  return Median(us);
}

// Median times (us) of a and b started together on their streams, `reps` times.
StatusOr<std::pair<double, double>> TimeTogether(const LaunchFn& a, cudaStream_t sa,
                                                 const LaunchFn& b, cudaStream_t sb, int warmup,
                                                 int reps) {
  for (int i = 0; i < warmup; ++i) {
    MOSAIC_RETURN_IF_ERROR(a(sa));
    MOSAIC_RETURN_IF_ERROR(b(sb));
  }
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(sa));
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(sb));
  std::vector<double> ta, tb;
  for (int i = 0; i < reps; ++i) {
    MOSAIC_ASSIGN_OR_RETURN(CudaEvent start, CudaEvent::Create(true));
    MOSAIC_ASSIGN_OR_RETURN(CudaEvent ea, CudaEvent::Create(true));
    MOSAIC_ASSIGN_OR_RETURN(CudaEvent eb, CudaEvent::Create(true));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(start.get(), sa));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(sb, start.get(), 0));
    MOSAIC_RETURN_IF_ERROR(a(sa));
    MOSAIC_RETURN_IF_ERROR(b(sb));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(ea.get(), sa));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(eb.get(), sb));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(sa));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(sb));
    float ma = 0, mb = 0;
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ma, start.get(), ea.get()));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&mb, start.get(), eb.get()));
    ta.push_back(ma * 1000.0);
    tb.push_back(mb * 1000.0);
  }
  return std::make_pair(Median(ta), Median(tb));
}

// One module captured in one place (a green context or a plain stream), ready to replay.
struct Captured {
  std::unique_ptr<GreenContext> context;  // null: plain stream (whole GPU)
  OwnedStream replay;
  std::unique_ptr<GraphedModule> module;
  ~Captured() {
    if (replay.get()) cudaStreamSynchronize(replay.get());
    module.reset();  // graphs before the context they live in
    replay = OwnedStream();
    context.reset();
  }
};

struct ModuleInputsFor {
  std::vector<torch::Tensor> inputs;
  std::vector<bool> needs_grad;
};

}  // namespace

std::string DriverVersion() {
  std::ifstream f("/proc/driver/nvidia/version");
  std::string line;
  if (std::getline(f, line)) {
    // "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ..."
    std::istringstream in(line);
    std::string word;
    while (in >> word) {
      const bool version = !word.empty() && std::isdigit(static_cast<unsigned char>(word[0])) &&
                           word.find('.') != std::string::npos &&
                           word.find_first_not_of("0123456789.") == std::string::npos;
      if (version) return word;
    }
  }
  int v = 0;
  if (cudaDriverGetVersion(&v) == cudaSuccess && v > 0)
    return "cuda " + std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
  return "unknown";
}

std::string TorchVersion() {
  std::string v = TORCH_VERSION;
  int rt = 0;  // torch's wheels name their CUDA build like this: 2.11.0+cu130
  if (v.find('+') == std::string::npos && cudaRuntimeGetVersion(&rt) == cudaSuccess && rt > 0)
    v += "+cu" + std::to_string(rt / 1000) + std::to_string(rt % 1000 / 10);
  return v;
}

StatusOr<Profile> ProfileModel(models::MultimodalModel model, const DeviceSpec& device_spec,
                               torch::Device device, const ProfileOptions& options) {
  if (!device.is_cuda()) return Unavailable("profiling needs a CUDA GPU");
  const ModelSpec& spec = model->spec();
  const int dev = device.has_index() ? device.index() : 0;
  c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(dev));
  std::string why;
  auto split_or = SmSplit::Create(dev);
  if (!split_or.ok()) {
    return Unavailable("profiling under SM quotas needs green contexts: " +
                       split_or.status().message());
  }
  const SmSplit& split = **split_or;
  std::vector<int> quotas = options.quotas;
  if (quotas.empty()) {
    for (int k = 1; k <= split.groups(); ++k)
      quotas.push_back(k * split.granule());
    if (split.remainder() > 0) quotas.push_back(split.total());
  }
  std::sort(quotas.begin(), quotas.end());
  quotas.erase(std::unique(quotas.begin(), quotas.end()), quotas.end());
  for (int q : quotas) {
    int c = 0;
    bool r = false;
    MOSAIC_RETURN_IF_ERROR(split.Decompose(q, &c, &r));
  }
  const int mb = options.micro_batch_size > 0 ? options.micro_batch_size : spec.micro_batch_size();
  auto say = [&](const std::string& s) {
    if (options.progress) options.progress(s);
  };

  // Inputs of every module: one eager forward of the whole model on a synthetic micro-batch.
  const models::Batch batch = models::SyntheticBatch(spec, mb, device, options.seed);
  std::vector<ModuleInputsFor> inputs(spec.modules.size());
  try {
    torch::NoGradGuard no_grad;
    models::AutocastGuard autocast(device, spec.precision);
    models::ModuleOutputs outs;
    for (const std::string& name : spec.TopologicalOrder()) {
      const int i = spec.IndexOf(name);
      inputs[i].inputs = model->ModuleInputs(i, batch, outs);
      for (const torch::Tensor& x : inputs[i].inputs) {
        bool from_producer = false;
        for (const std::string& q : spec.InputsOf(name))
          from_producer = from_producer || (x.defined() && x.is_same(outs[q]));
        inputs[i].needs_grad.push_back(from_producer);
      }
      // Producer outputs as they will be at run time: real tensors, detached.
      for (torch::Tensor& x : inputs[i].inputs)
        if (x.defined()) x = x.detach().clone();
      outs[name] = model->ForwardModule(i, inputs[i].inputs);
      // ModuleInputs for consumers must see the same tensors we mark as from producers.
    }
  } catch (const c10::Error& e) {
    return Internal(std::string("profile forward: ") + e.what_without_backtrace());
  }

  auto capture = [&](int i,
                     std::unique_ptr<GreenContext> ctx) -> StatusOr<std::unique_ptr<Captured>> {
    auto c = std::make_unique<Captured>();
    c->context = std::move(ctx);
    OwnedStream cs;
    if (c->context) {
      MOSAIC_ASSIGN_OR_RETURN(cs, c->context->CreateStream());
      MOSAIC_ASSIGN_OR_RETURN(c->replay, c->context->CreateStream());
    } else {
      MOSAIC_ASSIGN_OR_RETURN(cs, CreatePlainStream());
      MOSAIC_ASSIGN_OR_RETURN(c->replay, CreatePlainStream());
    }
    c->module =
        std::make_unique<GraphedModule>(model.get(), i, ExecMode::kGraph, device, spec.precision);
    c->module->set_slots(1);
    MOSAIC_RETURN_IF_ERROR(
        c->module->CaptureSlot(0, inputs[i].inputs, inputs[i].needs_grad, std::move(cs)));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    return c;
  };
  auto fwd_of = [](const Captured& c) {
    return LaunchFn([&c](cudaStream_t s) { return c.module->LaunchForward(0, s); });
  };
  auto bwd_of = [](const Captured& c) {
    return LaunchFn([&c](cudaStream_t s) { return c.module->LaunchBackward(0, s); });
  };
  auto release = [&] {
    cudaDeviceSynchronize();
    c10::cuda::CUDACachingAllocator::emptyCache();
  };

  Profile p;
  p.model = spec.name;
  p.device = device_spec.name;
  p.precision = ToString(spec.precision);
  p.micro_batch_size = mb;
  p.source = "measured";
  p.driver = DriverVersion();
  p.torch = TorchVersion();
  {
    const std::time_t now = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    p.created = buf;
  }
  std::vector<int> graphed;
  for (const std::string& name : spec.TopologicalOrder()) {
    const int i = spec.IndexOf(name);
    if (!spec.modules[i].is_loss()) graphed.push_back(i);
  }
  for (int i : graphed) {
    const ModuleSpec& ms = spec.modules[i];
    const ModuleCost cost = EstimateModuleCost(spec, i, mb);
    ProfileEntry fwd, bwd;
    fwd.module = bwd.module = ms.name;
    fwd.phase = TaskPhase::kForward;
    bwd.phase = TaskPhase::kBackward;
    fwd.flops = cost.forward_flops;
    bwd.flops = cost.forward_flops * 2.0;
    fwd.bytes = cost.forward_traffic;
    bwd.bytes = cost.forward_traffic * 2.0;
    fwd.activation_bytes = cost.activation_bytes;
    for (int q : quotas) {
      int count = 0;
      bool rem = false;
      MOSAIC_RETURN_IF_ERROR(split.Decompose(q, &count, &rem));
      MOSAIC_ASSIGN_OR_RETURN(auto ctx, split.Combine(0, count, rem));
      MOSAIC_ASSIGN_OR_RETURN(auto c, capture(i, std::move(ctx)));
      MOSAIC_ASSIGN_OR_RETURN(
          double tf, TimeOne(fwd_of(*c), c->replay.get(), options.warmup, options.repetitions));
      MOSAIC_ASSIGN_OR_RETURN(
          double tb, TimeOne(bwd_of(*c), c->replay.get(), options.warmup, options.repetitions));
      c.reset();
      release();
      fwd.points.push_back({SmCount(q), TimeUs(tf)});
      bwd.points.push_back({SmCount(q), TimeUs(tb)});
      std::ostringstream line;
      line.precision(4);
      line << ms.name << " @ " << q << " SMs: fwd " << tf / 1000 << " ms, bwd " << tb / 1000
           << " ms";
      say(line.str());
    }
    p.entries.push_back(fwd);
    p.entries.push_back(bwd);
  }

  if (options.pairs && graphed.size() >= 2) {
    // Pairs of modules side by side: on two plain streams sharing the GPU, and on an even split
    // of the SM groups (the second part with the remainder).
    const int half = split.groups() / 2;
    const int a_sms = half * split.granule();
    const int b_sms = split.total() - a_sms;
    for (size_t x = 0; x < graphed.size(); ++x)
      for (size_t y = x + 1; y < graphed.size(); ++y) {
        const int a = graphed[x], b = graphed[y];
        for (bool dedicated : {false, true}) {
          std::unique_ptr<GreenContext> ca, cb;
          if (dedicated) {
            MOSAIC_ASSIGN_OR_RETURN(ca, split.Combine(0, half, false));
            MOSAIC_ASSIGN_OR_RETURN(
                cb, split.Combine(half, split.groups() - half, split.remainder() > 0));
          }
          MOSAIC_ASSIGN_OR_RETURN(auto A, capture(a, std::move(ca)));
          MOSAIC_ASSIGN_OR_RETURN(auto B, capture(b, std::move(cb)));
          for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward}) {
            const bool f = ph == TaskPhase::kForward;
            MOSAIC_ASSIGN_OR_RETURN(
                auto t, TimeTogether(f ? fwd_of(*A) : bwd_of(*A), A->replay.get(),
                                     f ? fwd_of(*B) : bwd_of(*B), B->replay.get(), options.warmup,
                                     options.repetitions));
            ColocationSample s;
            s.a = {spec.modules[a].name, ph, SmCount(dedicated ? a_sms : 0)};
            s.b = {spec.modules[b].name, ph, SmCount(dedicated ? b_sms : 0)};
            s.time_a = TimeUs(t.first);
            s.time_b = TimeUs(t.second);
            p.pairs.push_back(s);
            std::ostringstream line;
            line.precision(4);
            line << "pair " << s.a.module << "." << ToString(ph) << "@"
                 << (dedicated ? std::to_string(a_sms) : std::string("shared")) << " + "
                 << s.b.module << "." << ToString(ph) << "@"
                 << (dedicated ? std::to_string(b_sms) : std::string("shared")) << ": "
                 << t.first / 1000 << " / " << t.second / 1000 << " ms";
            say(line.str());
          }
          A.reset();
          B.reset();
          release();
        }
      }
  }
  return p;
}

}  // namespace mosaic::engine
