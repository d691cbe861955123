// The training loop (see trainer.h).
#include "train/trainer.h"

#include <ATen/DeviceAccelerator.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>
#include <thread>

#include "dist/all_gather.h"
#include "dist/data_parallel.h"
#include "dist/process_group.h"
#include "engine/plan_executor.h"
#include "planner/online.h"
#include "interop/hf_model.h"
#include "models/losses.h"
#include "models/multimodal_model.h"
#include "train/checkpoint.h"
#include "train/data_loader.h"
#include "train/optimizer.h"
#include "train/plan_choice.h"
#include "train/posix_files.h"
#include "train/progress.h"
#include "train/tokenizer.h"

namespace mosaic::train {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

StatusOr<torch::Device> ParseDevice(const std::string& s) {
  if (s == "cpu") return torch::Device(torch::kCPU);
  if (s == "cuda" || s.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      return Unavailable("--device " + s + ": no CUDA device is available here");
    }
    try {
      torch::Device d(s);
      if (!d.has_index()) return torch::Device(torch::kCUDA, 0);  // streams need the index
      if (d.index() >= static_cast<int>(torch::cuda::device_count())) {
        return InvalidArgument("--device " + s + ": only " +
                               std::to_string(torch::cuda::device_count()) + " CUDA devices");
      }
      return d;
    } catch (const std::exception&) {
    }
  }
  return InvalidArgument("--device: expected cpu, cuda or cuda:N, got '" + s + "'");
}

// What the data loader must produce for this model.
struct DataShape {
  int image_size = 0;
  int seq_len = 0;
  int n_mels = 0, frames = 0;
};

StatusOr<DataShape> ShapeFor(const ModelSpec& spec, const Tokenizer& tok) {
  DataShape d;
  for (size_t i = 0; i < spec.modules.size(); ++i) {
    const ModuleSpec& m = spec.modules[i];
    const std::string where = "modules[" + std::to_string(i) + "] '" + m.name + "'";
    switch (m.kind) {
      case ModuleKind::kVit:
        if (m.channels != 0 && m.channels != 3) {
          return InvalidArgument(where + ": mosaic train reads RGB images; channels is " +
                                 std::to_string(m.channels));
        }
        if (d.image_size != 0 && d.image_size != m.image_size) {
          return InvalidArgument(where +
                                 ": vision modules of different image sizes need "
                                 "per-module inputs, which mosaic train does not read yet");
        }
        d.image_size = m.image_size;
        break;
      case ModuleKind::kText:
      case ModuleKind::kLlm:
        if (tok.vocab_size() > m.vocab_size) {
          return InvalidArgument(where + ": vocab_size " + std::to_string(m.vocab_size) +
                                 " is smaller than the tokenizer's " +
                                 std::to_string(tok.vocab_size()) + " pieces (" + tok.path() + ")");
        }
        d.seq_len = d.seq_len == 0 ? m.seq_len : std::min(d.seq_len, m.seq_len);
        break;
      case ModuleKind::kAudio:
        d.n_mels = m.n_mels;
        d.frames = m.frames;
        break;
      default:
        break;
    }
  }
  if (d.image_size == 0 || d.seq_len == 0) {
    return InvalidArgument(spec.name +
                           ": mosaic train needs a vision module and a text or llm module");
  }
  return d;
}

models::Batch ToModelBatch(const Batch& b, torch::Device device) {
  models::Batch m;
  m.images = b.images;
  m.tokens = b.tokens;
  m.token_mask = torch::arange(b.tokens.size(1)).unsqueeze(0) < b.lengths.unsqueeze(1);
  m.audio = b.audio;
  return device.is_cpu() ? m : m.To(device);
}

// The micro-batches of one step as one batch (the executor splits it again).
models::Batch CatBatches(const std::vector<models::Batch>& parts) {
  if (parts.size() == 1) return parts[0];
  auto cat = [&](auto field) {
    std::vector<torch::Tensor> ts;
    for (const models::Batch& b : parts)
      if ((b.*field).defined()) ts.push_back(b.*field);
    return ts.empty() ? torch::Tensor() : torch::cat(ts, 0);
  };
  models::Batch whole;
  whole.images = cat(&models::Batch::images);
  whole.tokens = cat(&models::Batch::tokens);
  whole.token_mask = cat(&models::Batch::token_mask);
  whole.audio = cat(&models::Batch::audio);
  return whole;
}

int64_t DeviceMemoryBytes(torch::Device device) {
  if (device.is_cpu()) return ResidentMemoryBytes();
  auto stats = at::accelerator::getDeviceStats(device.index() < 0 ? 0 : device.index());
  return stats.allocated_bytes[0].peak;  // StatType::AGGREGATE
}

// The two inputs of the first contrastive loss fed by a vision and a text module.
bool FindRetrievalPair(const ModelSpec& spec, std::string* image, std::string* text) {
  for (const ModuleSpec& m : spec.modules) {
    if (!m.is_loss() || m.loss != LossKind::kContrastive) continue;
    image->clear();
    text->clear();
    for (const std::string& in : spec.InputsOf(m.name)) {
      const ModuleSpec* src = spec.Find(in);
      if (src == nullptr) continue;
      if (src->kind == ModuleKind::kVit && image->empty()) *image = in;
      if (src->kind == ModuleKind::kText && text->empty()) *text = in;
    }
    if (!image->empty() && !text->empty()) return true;
  }
  return false;
}

struct EvalResult {
  bool has_retrieval = false;
  double top1 = 0, chance = 0, loss = 0;
  int pairs = 0;
};

StatusOr<EvalResult> Evaluate(models::MultimodalModel& model, const ExampleSource& source,
                              const Tokenizer& tok, const LoaderOptions& loader_options,
                              int samples, torch::Device device, int chunk) {
  torch::NoGradGuard no_grad;
  model->eval();
  const ModelSpec& spec = model->spec();
  std::string image_module, text_module;
  const bool retrieval = FindRetrievalPair(spec, &image_module, &text_module);
  std::vector<torch::Tensor> image_features, text_features;
  std::vector<std::string> captions;
  double loss_sum = 0;
  int64_t counted = 0;
  const int64_t n = std::min<int64_t>(samples, source.size());
  LoaderOptions o = loader_options;
  o.on_bad_data = BadDataPolicy::kSkip;  // evaluation reports and skips broken pairs
  for (int64_t start = 0; start < n; start += chunk) {
    std::vector<int64_t> idx(static_cast<size_t>(std::min<int64_t>(chunk, n - start)));
    std::iota(idx.begin(), idx.end(), start);
    auto batch = MakeBatch(source, tok, o, idx);
    if (!batch.ok()) continue;
    models::ModelOutput out;
    {
      models::AutocastGuard autocast(device, spec.precision);
      out = model->forward(ToModelBatch(*batch, device));
    }
    loss_sum += out.loss.item<double>() * batch->size();
    counted += batch->size();
    if (retrieval) {
      image_features.push_back(out.outputs.at(image_module).to(torch::kCPU, torch::kFloat32));
      text_features.push_back(out.outputs.at(text_module).to(torch::kCPU, torch::kFloat32));
      for (auto& c : batch->captions)
        captions.push_back(c);
    }
  }
  model->train();
  if (counted == 0) return InvalidArgument("no usable held-out examples to evaluate on");
  EvalResult r;
  r.loss = loss_sum / static_cast<double>(counted);
  r.pairs = static_cast<int>(counted);
  if (retrieval) {
    auto img = torch::nn::functional::normalize(
        torch::cat(image_features), torch::nn::functional::NormalizeFuncOptions().dim(1));
    auto txt = torch::nn::functional::normalize(
        torch::cat(text_features), torch::nn::functional::NormalizeFuncOptions().dim(1));
    auto best = torch::matmul(img, txt.t()).argmax(1);  // (N)
    auto best_a = best.accessor<int64_t, 1>();
    int64_t right = 0;
    double chance = 0;
    const size_t N = captions.size();
    for (size_t i = 0; i < N; ++i) {
      right += captions[static_cast<size_t>(best_a[i])] == captions[i];
      chance += static_cast<double>(std::count(captions.begin(), captions.end(), captions[i])) /
                static_cast<double>(N);
    }
    r.has_retrieval = true;
    r.top1 = static_cast<double>(right) / static_cast<double>(N);
    r.chance = chance / static_cast<double>(N);
  }
  return r;
}

at::Generator CpuGenerator() {
  return at::detail::getDefaultCPUGenerator();
}

// Note [small-model defaults]: below kSmallModelParameters parameters (the CPU-sized zoo
// models) training defaults to a peak learning rate of 1e-3 and, on the CPU, to one intra-op
// thread: their ops are too small to split, and OpenMP workers spinning on a shared 2-core
// machine made clip-tiny 6x slower (90 vs 540 samples/s measured). Larger models default to
// 1e-4 (clip-b16 collapsed to a constant loss of ln(batch) at 5e-4 and batch 32) and to
// torch's thread count.
constexpr int64_t kSmallModelParameters = 10'000'000;

// Swallows everything: the log of ranks other than 0.
class NullStream : public std::ostream {
 public:
  NullStream() : std::ostream(nullptr) {}
};

// What every rank of a data-parallel run must agree on (dist::CheckSameSettings).
std::string SettingsFingerprint(const TrainOptions& o, const ModelSpec& spec) {
  std::ostringstream s;
  s << "model " << spec.name << ", batch " << spec.batch_size << "/" << spec.micro_batches
    << ", steps " << o.steps << ", seed " << o.seed << ", lr " << o.lr << ", warmup "
    << o.warmup_steps << ", data '" << o.data << "', resume " << o.resume << ", check every "
    << o.check_replicas_every;
  return s.str();
}

}  // namespace

std::string ResolveModelPath(const std::string& model, const std::string& configs_dir) {
  const bool json = model.size() > 5 && model.compare(model.size() - 5, 5, ".json") == 0;
  if (json || model.find('/') != std::string::npos) {
    return model;
  }
  return JoinPath(JoinPath(configs_dir, "models"), model + ".json");
}

StatusOr<TrainResult> Train(const TrainOptions& options) {
  dist::Context* dist = options.dist;
  const bool main_rank = dist == nullptr || dist->is_main();
  const int world = dist ? dist->world_size() : 1;
  NullStream null_log;
  std::ostream& log = !main_rank ? null_log : options.log ? *options.log : std::cerr;
  if (options.steps <= 0) return InvalidArgument("--steps must be positive");
  if (options.lr < 0 || !std::isfinite(options.lr)) {
    return InvalidArgument("--lr must be a positive number");
  }
  if (options.threads < 0) return InvalidArgument("--threads must be >= 0");
  if (options.log_every <= 0) return InvalidArgument("--log-every must be positive");
  if (options.checkpoint_every < 0) return InvalidArgument("--checkpoint-every must be >= 0");
  if (options.resume && options.checkpoint_dir.empty()) {
    return InvalidArgument("--resume needs --checkpoint-dir");
  }

  // Model spec, with the batch overrides.
  ModelSpec spec;
  struct stat init_stat;
  const bool init_is_file = !options.init.empty() &&
                            ::stat(options.init.c_str(), &init_stat) == 0 &&
                            S_ISREG(init_stat.st_mode);
  if (init_is_file && options.model_path.empty()) {
    return InvalidArgument("--init " + options.init +
                           ": a checkpoint file (OpenCLIP) needs --model for its architecture");
  }
  if (options.model_path.empty() && !options.init.empty()) {
    MOSAIC_ASSIGN_OR_RETURN(spec, interop::LoadHfSpec(options.init));
  } else {
    const std::string model_path = ResolveModelPath(options.model_path, options.configs_dir);
    MOSAIC_ASSIGN_OR_RETURN(spec, LoadModelSpec(model_path));
  }
  if (options.batch_size > 0) spec.batch_size = options.batch_size;
  if (options.micro_batches > 0) spec.micro_batches = options.micro_batches;
  if (spec.batch_size % spec.micro_batches != 0) {
    return InvalidArgument("batch size " + std::to_string(spec.batch_size) +
                           " is not a multiple of micro_batches " +
                           std::to_string(spec.micro_batches));
  }
  if (spec.micro_batch_size() % world != 0) {
    return InvalidArgument(
        "the global micro-batch of " + std::to_string(spec.micro_batch_size()) + " (batch " +
        std::to_string(spec.batch_size) + " / " + std::to_string(spec.micro_batches) +
        " micro-batches) does not split evenly over " + std::to_string(world) + " ranks");
  }
  if (dist != nullptr && !options.plan.empty()) {
    return InvalidArgument("--plan " + options.plan +
                           ": the engine's plans do not run data parallel yet; drop --plan "
                           "under torchrun (docs/distributed.md)");
  }
  if (options.grad_bucket_bytes <= 0) return InvalidArgument("--grad-bucket-mb must be positive");
  if (options.check_replicas_every < 0) {
    return InvalidArgument("--check-replicas-every must be >= 0");
  }
  MOSAIC_ASSIGN_OR_RETURN(torch::Device device, ParseDevice(options.device));
  if (dist != nullptr && dist->device().type() != device.type()) {
    return Internal("the process group is on " + dist->device().str() + " but training on " +
                    device.str());
  }

  // Tokenizer and data.
  std::string tok_path =
      options.tokenizer.empty()
          ? JoinPath(JoinPath(options.configs_dir, "tokenizers"), "shapes.model")
          : options.tokenizer;
  if (options.tokenizer.empty() && !options.init.empty() &&
      access(JoinPath(options.init, "vocab.json").c_str(), R_OK) == 0 &&
      access(JoinPath(options.init, "merges.txt").c_str(), R_OK) == 0) {
    tok_path = options.init;  // the pretrained model's own CLIP BPE
  }
  MOSAIC_ASSIGN_OR_RETURN(Tokenizer tok_value, Tokenizer::Load(tok_path));
  auto tokenizer = std::make_shared<const Tokenizer>(std::move(tok_value));
  MOSAIC_ASSIGN_OR_RETURN(DataShape shape, ShapeFor(spec, *tokenizer));

  ShapesOptions shapes;
  shapes.image_size = shape.image_size;
  shapes.audio_frames = shape.frames;
  std::shared_ptr<const ExampleSource> train_source, eval_source;
  DataSourceOptions source_options;
  source_options.on_bad_data = options.on_bad_data;
  source_options.want_audio = shape.n_mels > 0;
  source_options.warn = [&log](const std::string& line) {
    log << "mosaic train: " << line << "\n";
  };
  if (options.data.empty()) {
    // Effectively endless: a fresh example for every step of any run this program makes.
    train_source = MakeShapesSource(options.seed, int64_t{1} << 24, shapes);
  } else {
    MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<ExampleSource> s,
                            OpenDataSource(options.data, source_options));
    train_source = std::move(s);
  }
  if (!options.eval_data.empty()) {
    MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<ExampleSource> s,
                            OpenDataSource(options.eval_data, source_options));
    eval_source = std::move(s);
  } else if (options.data.empty()) {
    // Held out: another seed's stream, never seen in training.
    eval_source =
        MakeShapesSource(options.seed ^ 0x9e3779b97f4a7c15ull, options.eval_samples, shapes);
  }

  LoaderOptions loader_options;
  loader_options.batch_size = spec.micro_batch_size() / world;  // Note [rank slices]
  loader_options.shard_count = world;
  loader_options.shard_index = dist ? dist->rank() : 0;
  loader_options.image_size = shape.image_size;
  loader_options.seq_len = shape.seq_len;
  loader_options.n_mels = shape.n_mels;
  loader_options.frames = shape.frames;
  loader_options.seed = options.seed;
  loader_options.on_bad_data = options.on_bad_data;
  loader_options.prefetch_batches = options.prefetch_batches;
  // On a GPU the data must keep up with the model: decode a batch on several threads. The CPU
  // trains on every core already.
  loader_options.workers =
      device.is_cuda() ? std::clamp(static_cast<int>(std::thread::hardware_concurrency()) / 2, 1, 8)
                       : 1;
  loader_options.warn = source_options.warn;

  // Model and optimizer, initialized from the seed.
  torch::manual_seed(options.seed);
  MOSAIC_ASSIGN_OR_RETURN(models::MultimodalModel model,
                          models::BuildMultimodalModel(spec, device));
  if (!options.init.empty()) {
    std::string filled;
    if (init_is_file) {
      MOSAIC_RETURN_IF_ERROR(interop::LoadOpenClipWeights(options.init, *model));
    } else {
      // A Whisper folder fills the audio module only; the report says what stays random.
      MOSAIC_ASSIGN_OR_RETURN(interop::HfInitReport report,
                              interop::InitFromHf(options.init, *model));
      if (!report.random.empty() || report.unused_tensors > 0) filled = ": " + report.Summary();
    }
    log << "mosaic train: weights from " << options.init << " (tokenizer " << tok_path << ")"
        << filled << "\n";
  }
  model->train();
  if (options.inject_nonfinite.step >= 0 && options.inject_nonfinite.target != "loss" &&
      model->IndexOf(options.inject_nonfinite.target) < 0) {
    return InvalidArgument("MOSAIC_INJECT_NONFINITE: no module '" +
                           options.inject_nonfinite.target + "' in " + spec.name);
  }
  if (options.print_model_table) log << models::ModelTable(*model);
  std::unique_ptr<dist::GradientSync> grad_sync;
  if (dist != nullptr) {
    MOSAIC_RETURN_IF_ERROR(dist::CheckSameSettings(*dist, SettingsFingerprint(options, spec)));
    // Note [global contrastive loss] in dist/all_gather.h.
    for (int i = 0; i < model->num_modules(); ++i) {
      if (auto loss = std::dynamic_pointer_cast<models::ContrastiveLossImpl>(model->module(i))) {
        loss->set_gather(
            [dist](const torch::Tensor& x) { return dist::AllGatherWithGrad(*dist, x); });
      }
    }
    grad_sync =
        std::make_unique<dist::GradientSync>(*dist, model->parameters(), options.grad_bucket_bytes);
  }
  const bool small = model->ParameterCount() < kSmallModelParameters;
  const double peak_lr = options.lr > 0 ? options.lr : small ? 1e-3 : 1e-4;
  if (device.is_cpu() && (options.threads > 0 || small)) {
    at::set_num_threads(options.threads > 0 ? options.threads : 1);
  }
  AdamWConfig adamw;
  adamw.lr = peak_lr;
  adamw.weight_decay = options.weight_decay;
  MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::AdamW> optimizer,
                          MakeAdamW(model->named_parameters(), adamw));
  ScheduleConfig sched;
  sched.peak_lr = peak_lr;
  sched.total_steps = options.steps;
  sched.warmup_steps =
      options.warmup_steps >= 0 ? options.warmup_steps : std::max<int64_t>(1, options.steps / 20);
  WarmupCosine lr_at(sched);
  LossScaler scaler(spec.precision == Precision::kFp16 && device.is_cuda(), device);
  const bool planned = !options.plan.empty();
  if (planned && scaler.enabled())
    return InvalidArgument("--plan runs bf16 or fp32 models; " + spec.name +
                           " is fp16 (needs loss scaling): drop --plan");

  // Resume.
  TrainState state;
  state.model_name = spec.name;
  state.seed = options.seed;
  if (!options.checkpoint_dir.empty()) {
    MOSAIC_RETURN_IF_ERROR(MakeDirectories(options.checkpoint_dir));
    if (int n = RemoveStaleCheckpointTemporaries(options.checkpoint_dir); n > 0) {
      log << "mosaic train: removed " << n << " unfinished checkpoint temporar"
          << (n == 1 ? "y" : "ies") << " left in " << options.checkpoint_dir
          << " by a run that was killed while writing\n";
    }
  }
  if (options.resume) {
    std::vector<std::string> found = ListCheckpoints(options.checkpoint_dir);
    std::string refused;
    bool loaded = false;
    for (const std::string& path : found) {
      TrainState candidate = state;
      Status s = LoadCheckpoint(path, *model, *optimizer, &candidate);
      if (s.ok()) {
        state = candidate;
        loaded = true;
        log << "mosaic train: resuming from " << path << " (step " << state.step << ")\n";
        break;
      }
      log << "mosaic train: refusing checkpoint: " << s.message() << "\n";
      refused += (refused.empty() ? "" : "; ") + s.message();
    }
    if (!loaded && !found.empty()) {
      return InvalidArgument("no usable checkpoint in " + options.checkpoint_dir + ": " + refused);
    }
    if (!loaded) {
      log << "mosaic train: no checkpoint in " << options.checkpoint_dir
          << "; starting from step 0\n";
    }
    if (loaded) {
      if (state.rng.defined()) CpuGenerator().set_state(state.rng);
      if (state.loss_scale.defined()) scaler.LoadState(state.loss_scale);
    }
  }

  // A graph plan captures on its first step: the optimizer's memory is taken before, so that a
  // plan that does not fit fails while capturing, where it falls back (CreateAdamWState).
  if (planned && device.is_cuda()) CreateAdamWState(*optimizer);

  if (dist != nullptr) {
    // Same seed (or the same checkpoint) on every rank: the replicas start identical.
    MOSAIC_RETURN_IF_ERROR(
        dist::CheckReplicasInSync(*dist, model->named_parameters().pairs(), state.step));
  }

  TrainResult result;
  result.model_name = spec.name;
  result.first_step = state.step;
  if (dist != nullptr) {
    log << "mosaic train: data parallel over " << world << " ranks (" << dist->backend_name()
        << "), " << spec.micro_batch_size() / world << " samples per rank per micro-batch, "
        << grad_sync->buckets().size() << " gradient buckets\n";
  }
  log << "mosaic train: " << spec.name << " on " << device << ", batch " << spec.batch_size << " ("
      << spec.micro_batches << " micro-batch" << (spec.micro_batches > 1 ? "es" : "") << "), "
      << ToString(spec.precision) << ", peak lr " << peak_lr
      << ", data: " << train_source->Describe() << ", steps " << state.step << " -> "
      << options.steps << "\n";

  auto save = [&](int64_t step_done, const DataPosition& pos) -> Status {
    TrainState st = state;
    st.step = step_done;
    st.data = pos;
    st.rng = CpuGenerator().get_state();
    if (scaler.enabled()) st.loss_scale = scaler.State();
    if (!main_rank) return Status::Ok();  // rank 0 writes; every rank holds the same state
    const std::string path = JoinPath(options.checkpoint_dir, CheckpointFileName(step_done));
    std::function<void(const std::string&)> midway;
    if (options.checkpoint_write_pause_ms > 0) {
      midway = [&](const std::string& tmp) {
        log << "mosaic train: test hook: pausing " << options.checkpoint_write_pause_ms
            << " ms halfway through writing " << tmp << std::endl;
        std::this_thread::sleep_for(std::chrono::milliseconds(options.checkpoint_write_pause_ms));
      };
    }
    MOSAIC_RETURN_IF_ERROR(SaveCheckpoint(path, *model, *optimizer, st, midway));
    PruneCheckpoints(options.checkpoint_dir, options.keep_checkpoints);
    result.checkpoints_written.push_back(path);
    return Status::Ok();
  };

  std::vector<torch::Tensor> params = model->parameters();
  NonFiniteGuard nonfinite(
      options.on_nonfinite, &scaler,
      std::string(ToString(spec.precision)) + (device.is_cpu() ? " on the CPU" : ""));
  // Where a stopped run continues from, for the error line.
  auto last_checkpoint = [&]() -> std::string {
    if (options.checkpoint_dir.empty()) return "no --checkpoint-dir: nothing saved";
    std::vector<std::string> kept = ListCheckpoints(options.checkpoint_dir);
    return kept.empty() ? "no checkpoint written yet" : "last checkpoint " + kept.front();
  };
  ProgressLog progress(log, options.progress_bar, options.steps);
  // The end of every step, eager or planned (Note [numeric faults] in nonfinite.h): after
  // backward, the loss fault and the gradients decide whether `apply` (clipping and the
  // optimizer step) runs, the step is skipped, or the run stops.
  auto finish_step = [&](int64_t step, const std::string& loss_fault,
                         const std::function<Status()>& apply) -> Status {
    std::string line;
    const StepVerdict verdict = nonfinite.Check(step, loss_fault, *model, params, &line);
    result.skipped_steps = nonfinite.skipped_steps();
    switch (verdict) {
      case StepVerdict::kApply:
        MOSAIC_RETURN_IF_ERROR(apply());
        scaler.Update();
        return Status::Ok();
      case StepVerdict::kSkip:
        progress.Message("mosaic train: " + line);
        return Status::Ok();
      case StepVerdict::kStop:
        break;
    }
    progress.Finish();
    return FailedPrecondition(line + "; " + last_checkpoint());
  };
  // The test hook (nonfinite.h): a NaN in a module's gradients after backward.
  auto inject_into_gradients = [&](int64_t step) -> Status {
    if (step != options.inject_nonfinite.step || options.inject_nonfinite.target == "loss")
      return Status::Ok();
    return InjectNonFiniteGradient(*model, options.inject_nonfinite.target);
  };
  DataLoader loader(train_source, tokenizer, loader_options, state.data);
  DataPosition position = state.data;
  const auto t_start = Clock::now();
  auto t_window = t_start;
  int64_t window_samples = 0, window_tokens = 0, total_samples = 0;
  double window_loss = 0;
  int64_t window_steps = 0;
  bool any_rank_stopping = false;  // data parallel: a stop request seen by any rank

  // The next micro-batch: advances the data position and counts skipped examples, samples and
  // tokens (into the caller's counters: the window's, or the step's under data parallelism).
  auto next_micro_batch = [&](int64_t* samples, int64_t* tokens) -> StatusOr<Batch> {
    MOSAIC_ASSIGN_OR_RETURN(Batch batch, loader.Next());
    position = batch.next;
    result.skipped_examples += batch.skipped;
    *samples += batch.size();
    *tokens += batch.lengths.sum().item<int64_t>();
    return batch;
  };

  // --plan: the engine's executor runs the step on whole batches (plan_choice.h).
  std::unique_ptr<engine::PlanExecutor> executor;
  std::optional<OnlinePlanner> online;
  engine::ExecutorOptions exec_options;
  std::vector<double> step_ms;
  auto planned_step = [&](int64_t step) -> StatusOr<double> {
    std::vector<models::Batch> parts;
    for (int mb = 0; mb < spec.micro_batches; ++mb) {
      MOSAIC_ASSIGN_OR_RETURN(Batch batch, next_micro_batch(&window_samples, &window_tokens));
      parts.push_back(ToModelBatch(batch, device));
    }
    const models::Batch whole = CatBatches(parts);
    if (!executor) {
      PlanChoiceOptions po;
      po.plan = options.plan;
      po.device_spec = options.device_spec;
      po.profile = options.profile;
      po.configs_dir = options.configs_dir;
      po.log = [&](const std::string& line) { progress.Message(line); };
      MOSAIC_ASSIGN_OR_RETURN(PlanChoice choice,
                              ChooseTrainingPlan(spec, model, whole, device, po));
      exec_options.mode = choice.mode;
      exec_options.clip_grad = options.clip_grad;
      if (options.online_replan) {
        if (!device.is_cuda() || choice.mode != engine::ExecMode::kGraph || !choice.inputs) {
          progress.Message("mosaic train: --online-replan needs a graph plan on CUDA and a "
                           "device spec; training without it");
        } else {
          OnlineOptions oo;
          oo.replan_every = options.replan_every;
          oo.planner.micro_batches = {spec.micro_batches};
          oo.planner.top_k = 1;
          MOSAIC_ASSIGN_OR_RETURN(OnlinePlanner op,
                                  OnlinePlanner::Create(*choice.inputs, choice.plan, oo));
          online.emplace(std::move(op));
          exec_options.record_trace = true;
        }
      }
      // Test hook (capture_ballast_bytes): memory held while a graph plan captures.
      auto create = [&](const Plan& plan) -> StatusOr<std::unique_ptr<engine::PlanExecutor>> {
        torch::Tensor ballast;
        if (options.capture_ballast_bytes > 0 && exec_options.mode == engine::ExecMode::kGraph &&
            device.is_cuda()) {
          try {
            ballast = torch::empty({options.capture_ballast_bytes},
                                   torch::TensorOptions().dtype(torch::kUInt8).device(device));
          } catch (const c10::Error&) {
            // Not worded as an out of memory: the fallback is for captures, not for the hook.
            return FailedPrecondition("test hook: the capture ballast of " +
                                      std::to_string(options.capture_ballast_bytes) +
                                      " bytes did not fit beside the model");
          }
        }
        return engine::PlanExecutor::Create(model, plan, whole, device, exec_options);
      };
      StatusOr<std::unique_ptr<engine::PlanExecutor>> made = create(choice.plan);
      // Out of memory while capturing: fall back to smaller plans (one module at a time as
      // graphs, then eagerly), saying so.
      for (const char* smaller : {"temporal-graph", "temporal-eager"}) {
        if (made.ok() || !device.is_cuda() ||
            made.status().message().find("out of memory") == std::string::npos ||
            choice.plan.name == smaller) {
          break;
        }
        progress.Message("mosaic train: plan " + choice.plan.name +
                         " ran out of GPU memory while capturing; falling back to " + smaller);
        po.plan = smaller;
        MOSAIC_ASSIGN_OR_RETURN(choice, ChooseTrainingPlan(spec, model, whole, device, po));
        exec_options.mode = choice.mode;
        exec_options.record_trace = false;
        online.reset();
        choice.summary += " (fallback: out of memory)";
        made = create(choice.plan);
      }
      MOSAIC_ASSIGN_OR_RETURN(executor, std::move(made));
      result.plan_summary = choice.summary + ", " + engine::ToString(choice.mode);
      result.predicted_step_ms = choice.predicted_step_ms;
      char pred[64] = "";
      if (choice.predicted_step_ms > 0)
        std::snprintf(pred, sizeof pred, ", predicted step %.2f ms", choice.predicted_step_ms);
      progress.Message("mosaic train: plan " + result.plan_summary + pred);
    }
    const auto t0 = Clock::now();
    MOSAIC_ASSIGN_OR_RETURN(torch::Tensor loss, executor->ForwardBackward(whole));
    if (step == options.inject_nonfinite.step && options.inject_nonfinite.target == "loss") {
      loss = loss * std::numeric_limits<double>::quiet_NaN();  // test hook, after backward
    }
    MOSAIC_RETURN_IF_ERROR(inject_into_gradients(step));
    const double value = loss.item<double>();
    // The executor ran backward through the whole step; a NaN/Inf loss is described by
    // running the forward again (Note [numeric faults]).
    const std::string loss_fault =
        std::isfinite(value) ? std::string() : DiagnoseLossFault(*model, parts, device, value);
    MOSAIC_RETURN_IF_ERROR(finish_step(
        step, loss_fault, [&]() { return executor->ApplyOptimizer(optimizer.get()); }));
    if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
    step_ms.push_back(Seconds(t0, Clock::now()) * 1000);
    if (online) {
      MOSAIC_ASSIGN_OR_RETURN(std::vector<engine::TaskSpan> spans, executor->LastStepTrace());
      MeasuredStep m;
      double end_ms = 0;
      for (const engine::TaskSpan& sp : spans) {
        m.tasks.push_back({executor->graph().tasks()[sp.task].id,
                           TimeUs((sp.end_ms - sp.start_ms) * 1000)});
        end_ms = std::max(end_ms, sp.end_ms);
      }
      m.step = TimeUs(end_ms * 1000);
      const double before = online->predicted_step_us();
      MOSAIC_ASSIGN_OR_RETURN(std::optional<Plan> next, online->Observe(m, options.steps - step));
      if (next) {
        char line[200];
        std::snprintf(line, sizeof line,
                      "mosaic train: step %lld: re-planned on the calibrated model (%.2f -> %.2f ms "
                      "predicted): %s",
                      static_cast<long long>(step + 1), before / 1000,
                      online->predicted_step_us() / 1000, next->name.c_str());
        progress.Message(line);
        executor.reset();  // frees its graphs and pools before the next capture
        MOSAIC_ASSIGN_OR_RETURN(
            executor, engine::PlanExecutor::Create(model, *next, whole, device, exec_options));
        result.replans = online->replans();
        result.predicted_step_ms = online->predicted_step_us() / 1000;
      }
    }
    return value;
  };

  for (int64_t step = state.step; step < options.steps; ++step) {
    const double lr = lr_at(step);
    SetLearningRate(*optimizer, lr);
    double step_loss = 0;
    int64_t step_samples = 0, step_tokens = 0;
    if (planned) {
      MOSAIC_ASSIGN_OR_RETURN(step_loss, planned_step(step));
    } else {
    optimizer->zero_grad();
    std::string loss_fault;  // set when a micro-batch's loss is NaN/Inf (Note [numeric faults])
    for (int mb = 0; mb < spec.micro_batches; ++mb) {
      MOSAIC_ASSIGN_OR_RETURN(Batch batch, next_micro_batch(&step_samples, &step_tokens));
      models::ModelOutput out;
      try {
        models::AutocastGuard autocast(device, spec.precision);
        out = model->forward(ToModelBatch(batch, device));
      } catch (const dist::CollectiveError& e) {
        return e.status();  // a peer died or hung: Note [bounded waits] in dist/process_group.h
      }
      torch::Tensor loss = out.loss;
      if (step == options.inject_nonfinite.step && options.inject_nonfinite.target == "loss" &&
          mb == 0) {
        loss = loss * std::numeric_limits<double>::quiet_NaN();  // test hook
      }
      const double value = loss.item<double>();
      step_loss += value / spec.micro_batches;
      if (!std::isfinite(value)) {
        if (loss_fault.empty()) {
          loss_fault =
              DescribeLossFault(value, mb, ModulesWithNonFiniteOutputs(*model, out.outputs));
        }
        continue;  // no backward through a NaN/Inf loss
      }
      try {
        if (grad_sync) grad_sync->Arm(mb == spec.micro_batches - 1);
        scaler.Scale(loss / spec.micro_batches).backward();
      } catch (const dist::CollectiveError& e) {
        return e.status();
      }
    }
    MOSAIC_RETURN_IF_ERROR(inject_into_gradients(step));
    if (dist != nullptr) {
      MOSAIC_RETURN_IF_ERROR(grad_sync->Finish());  // gradients are now the mean over ranks
      // The step's loss (the mean over ranks), samples and tokens, and whether any rank was
      // asked to stop, so that all stop after the same step.
      const bool stop_here = options.stop_requested != nullptr && options.stop_requested->load();
      torch::Tensor t = torch::tensor({step_loss, static_cast<double>(step_samples),
                                       static_cast<double>(step_tokens), stop_here ? 1.0 : 0.0},
                                      torch::kFloat64)
                            .to(device);
      MOSAIC_RETURN_IF_ERROR(dist->AllReduceSum(t, "all-reduce of the step's loss"));
      t = t.cpu();
      step_loss = t[0].item<double>() / world;
      step_samples = static_cast<int64_t>(t[1].item<double>());
      step_tokens = static_cast<int64_t>(t[2].item<double>());
      any_rank_stopping = t[3].item<double>() > 0;
    }
    window_samples += step_samples;
    window_tokens += step_tokens;
    MOSAIC_RETURN_IF_ERROR(finish_step(step, loss_fault, [&]() -> Status {
      if (options.clip_grad > 0) torch::nn::utils::clip_grad_norm_(params, options.clip_grad);
      optimizer->step();
      return Status::Ok();
    }));
    }  // eager step
    result.losses.push_back(step_loss);
    window_loss += step_loss;
    ++window_steps;
    const int64_t done = step + 1;
    if (dist != nullptr && options.check_replicas_every > 0 &&
        done % options.check_replicas_every == 0) {
      MOSAIC_RETURN_IF_ERROR(
          dist::CheckReplicasInSync(*dist, model->named_parameters().pairs(), done));
    }

    if (done % options.log_every == 0 || done == options.steps) {
      const auto now = Clock::now();
      const double dt = std::max(1e-9, Seconds(t_window, now));
      StepReport r;
      r.step = done;
      r.loss = window_loss / window_steps;
      r.lr = lr;
      r.samples_per_s = window_samples / dt;
      r.tokens_per_s = window_tokens / dt;
      r.memory_bytes = DeviceMemoryBytes(device);
      r.loss_scale = scaler.enabled() ? scaler.scale() : 0;
      progress.Report(r);
      total_samples += window_samples;
      t_window = now;
      window_samples = window_tokens = window_steps = 0;
      window_loss = 0;
    }
    const bool stop = dist != nullptr
                          ? any_rank_stopping
                          : options.stop_requested != nullptr && options.stop_requested->load();
    if (!options.checkpoint_dir.empty() &&
        ((options.checkpoint_every > 0 && done % options.checkpoint_every == 0) ||
         done == options.steps || stop)) {
      Status s = save(done, position);
      if (!s.ok()) {
        // A full disk (ENOSPC), a file size limit (EFBIG)...: WriteFileAtomic removed its
        // temporary, so the previous checkpoint is the newest on disk. The run stops rather
        // than train on without a way back (docs/training.md "Checkpoints").
        progress.Finish();
        std::string why = s.message();
        const size_t tail = why.find("; previous file left intact");
        if (tail != std::string::npos) why.erase(tail);
        std::vector<std::string> kept = ListCheckpoints(options.checkpoint_dir);
        return Status(s.code(), "cannot write checkpoint " + why + "; " +
                                    (kept.empty() ? std::string("no earlier checkpoint on disk")
                                                  : kept.front() + " is intact") +
                                    "; stopped after step " + std::to_string(done) +
                                    ", continue with --resume once there is space");
      }
      if (main_rank) {
        progress.Message("mosaic train: checkpoint " + result.checkpoints_written.back());
      }
    }
    if (stop && done < options.steps) {
      progress.Message("mosaic train: stopping after step " + std::to_string(done) + " as asked" +
                       (options.checkpoint_dir.empty() ? " (no --checkpoint-dir: nothing saved)"
                                                       : "; continue with --resume"));
      result.interrupted = true;
      result.last_step = done;
      break;
    }
  }
  progress.Finish();
  if (!step_ms.empty()) {
    // The first step captured the graphs (and, with auto, timed the candidates).
    std::vector<double> timed(step_ms.begin() + (step_ms.size() > 1 ? 1 : 0), step_ms.end());
    std::sort(timed.begin(), timed.end());
    result.measured_step_ms = timed[timed.size() / 2];
    char line[160];
    std::snprintf(line, sizeof line, "mosaic train: step time median %.2f ms measured", result.measured_step_ms);
    log << line;
    if (result.predicted_step_ms > 0) {
      std::snprintf(line, sizeof line, ", %.2f ms predicted (%+.1f%%)", result.predicted_step_ms,
                    100 * (result.predicted_step_ms / result.measured_step_ms - 1));
      log << line;
    }
    log << "\n";
  }
  if (!result.interrupted) result.last_step = std::max(options.steps, state.step);
  result.wall_seconds = Seconds(t_start, Clock::now());
  total_samples += window_samples;
  result.samples_per_second = total_samples / std::max(1e-9, result.wall_seconds);
  if (dist != nullptr) {
    MOSAIC_RETURN_IF_ERROR(
        dist::CheckReplicasInSync(*dist, model->named_parameters().pairs(), result.last_step));
  }

  if (eval_source && main_rank) {  // evaluation is local to rank 0 (no gather in eval mode)
    MOSAIC_ASSIGN_OR_RETURN(
        EvalResult e, Evaluate(model, *eval_source, *tokenizer, loader_options,
                               options.eval_samples, device, std::max(1, spec.micro_batch_size())));
    result.has_retrieval = e.has_retrieval;
    result.eval_pairs = e.pairs;
    result.retrieval_top1 = e.top1;
    result.retrieval_chance = e.chance;
    result.eval_loss = e.loss;
  }
  return result;
}

}  // namespace mosaic::train
