// `mosaic train`: trains a model of the zoo on generated shapes (default) or on the user's
// image/caption pairs, then reports held-out image->text retrieval (docs/training.md).
//
//   mosaic train --model clip-tiny                      # the README's demo, CPU, ~1 minute
//   mosaic train -m configs/models/clip-b16.json --device cuda --steps 500 --data shards/
//   mosaic train -m clip-tiny --checkpoint-dir runs/a --checkpoint-every 50 --resume
//   mosaic train --init hf/clip-folder --data pairs/ --steps 200   # fine-tune HF weights
//   torchrun --nproc-per-node 2 --no-python mosaic train -m clip-tiny   # data parallel
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <numeric>

#include "cli/commands.h"
#include "core/file_io.h"
#include "dist/connect.h"
#include "dist/launch_env.h"
#include "train/progress.h"
#include "train/trainer.h"

namespace mosaic::cli {
namespace {

struct TrainFlags {
  train::TrainOptions options;
  std::string on_bad_data = "stop";
  std::string on_nonfinite = "auto";
  std::string metrics_out;
  double dist_timeout_s = 300;
  double grad_bucket_mb = 25;
  FusedKernelFlags fused;
};

// SIGINT/SIGTERM ask the loop to stop after the current step, with a checkpoint; a second
// signal gets the default action (ends the process at once).
std::atomic<bool> g_stop{false};
extern "C" void OnStopSignal(int sig) {
  g_stop.store(true);
  std::signal(sig, SIG_DFL);
}

// Installs the handlers for the run's lifetime. SIGXFSZ (a file size limit, ulimit -f) is
// ignored so that a checkpoint write past the limit fails with EFBIG and is reported like a
// full disk instead of killing the process.
class StopSignals {
 public:
  StopSignals() {
    prev_int_ = std::signal(SIGINT, OnStopSignal);
    prev_term_ = std::signal(SIGTERM, OnStopSignal);
    prev_xfsz_ = std::signal(SIGXFSZ, SIG_IGN);
  }
  ~StopSignals() {
    std::signal(SIGINT, prev_int_);
    std::signal(SIGTERM, prev_term_);
    std::signal(SIGXFSZ, prev_xfsz_);
  }

 private:
  void (*prev_int_)(int);
  void (*prev_term_)(int);
  void (*prev_xfsz_)(int);
};

// Test hooks, read from the environment only (not flags: they are for fault tests, not
// users; docs/training.md "Test hooks").
Status ReadTestHooks(train::TrainOptions* o) {
  if (const char* v = std::getenv("MOSAIC_INJECT_NONFINITE"); v != nullptr && *v != '\0') {
    MOSAIC_ASSIGN_OR_RETURN(o->inject_nonfinite, train::ParseNonFiniteInjection(v));
  }
  if (const char* v = std::getenv("MOSAIC_TEST_CHECKPOINT_PAUSE_MS"); v != nullptr && *v != '\0') {
    const std::string text = v;
    if (text.find_first_not_of("0123456789") != std::string::npos || text.size() > 6) {
      return InvalidArgument("MOSAIC_TEST_CHECKPOINT_PAUSE_MS: expected milliseconds, got '" +
                             text + "'");
    }
    o->checkpoint_write_pause_ms = std::stoi(text);
  }
  return Status::Ok();
}

double MeanOf(const std::vector<double>& v, size_t begin, size_t end) {
  if (end <= begin) return 0;
  return std::accumulate(v.begin() + begin, v.begin() + end, 0.0) / (end - begin);
}

Json MetricsJson(const train::TrainResult& r, const train::TrainOptions& o) {
  Json doc;
  doc["model"] = r.model_name;
  doc["device"] = o.device;
  doc["seed"] = o.seed;
  doc["first_step"] = r.first_step;
  doc["last_step"] = r.last_step;
  doc["losses"] = r.losses;
  doc["wall_seconds"] = r.wall_seconds;
  doc["samples_per_second"] = r.samples_per_second;
  doc["skipped_examples"] = r.skipped_examples;
  doc["skipped_steps"] = r.skipped_steps;
  doc["eval_pairs"] = r.eval_pairs;
  doc["eval_loss"] = r.eval_loss;
  if (r.has_retrieval) {
    doc["retrieval_top1"] = r.retrieval_top1;
    doc["retrieval_chance"] = r.retrieval_chance;
  }
  doc["checkpoints"] = r.checkpoints_written;
  if (!r.plan_summary.empty()) {
    doc["plan"] = r.plan_summary;
    doc["predicted_step_ms"] = r.predicted_step_ms;
    doc["measured_step_ms"] = r.measured_step_ms;
    doc["replans"] = r.replans;
  }
  return doc;
}

int Run(TrainFlags& f) {
  StatusOr<train::BadDataPolicy> policy = train::ParseBadDataPolicy(f.on_bad_data);
  if (!policy.ok()) return ReportError("train", policy.status());
  f.options.on_bad_data = *policy;
  StatusOr<train::NonFinitePolicy> nonfinite = train::ParseNonFinitePolicy(f.on_nonfinite);
  if (!nonfinite.ok()) return ReportError("train", nonfinite.status());
  f.options.on_nonfinite = *nonfinite;
  if (Status s = ReadTestHooks(&f.options); !s.ok()) return ReportError("train", s);
  if (!f.metrics_out.empty()) {
    if (Status s = CheckCanWrite(f.metrics_out); !s.ok()) return ReportError("train", s);
  }
  ApplyFusedKernelFlags(f.fused);
  f.options.progress_bar = train::IsTerminal(stderr);
  f.options.stop_requested = &g_stop;
  if (f.options.model_path.empty() && f.options.init.empty()) {
    return ReportError("train", InvalidArgument("--model or --init is required"));
  }
  StopSignals signals;
  // Data parallel when torchrun started this process as one of several ranks.
  StatusOr<dist::LaunchEnv> env = dist::ReadLaunchEnv();
  if (!env.ok()) return ReportError("train", env.status());
  std::shared_ptr<dist::Context> dist_context;
  if (env->distributed()) {
    // Rank r on CUDA trains on cuda:LOCAL_RANK.
    if (f.options.device == "cuda") f.options.device = "cuda:" + std::to_string(env->local_rank);
    StatusOr<std::shared_ptr<dist::Context>> ctx =
        dist::ConnectToRun(*env, f.options.device, f.dist_timeout_s);
    if (!ctx.ok()) return ReportError("train", ctx.status());
    dist_context = std::move(*ctx);
    f.options.dist = dist_context.get();
  }
  f.options.grad_bucket_bytes = static_cast<int64_t>(f.grad_bucket_mb * (1 << 20));
  StatusOr<train::TrainResult> result = train::Train(f.options);
  const bool main_rank = env->rank == 0;
  if (!result.ok()) {
    Status s = result.status();
    if (dist_context && s.message().rfind("rank ", 0) != 0) {
      s = Status(s.code(), "rank " + std::to_string(env->rank) + " of " +
                               std::to_string(env->world_size) + ": " + s.message());
    }
    int code = ReportError("train", s);
    // A diverged run is a failed run, not bad input.
    return result.status().code() == StatusCode::kFailedPrecondition ? kExitFailure : code;
  }
  const train::TrainResult& r = *result;
  if (!main_rank) return r.interrupted ? kExitFailure : kExitOk;  // rank 0 reports
  const size_t n = r.losses.size();
  if (n > 0) {
    const size_t k = std::max<size_t>(1, std::min<size_t>(10, n / 4));
    std::printf(
        "%s: loss %.4f -> %.4f (mean of the first and last %zu steps), steps %lld -> "
        "%lld in %.1f s, %.1f samples/s\n",
        r.model_name.c_str(), MeanOf(r.losses, 0, k), MeanOf(r.losses, n - k, n), k,
        static_cast<long long>(r.first_step), static_cast<long long>(r.last_step), r.wall_seconds,
        r.samples_per_second);
  }
  if (r.interrupted) {
    if (!f.metrics_out.empty()) (void)WriteJsonFile(f.metrics_out, MetricsJson(r, f.options));
    return kExitFailure;
  }
  if (r.has_retrieval) {
    std::printf("image->text retrieval top-1: %.1f%% on %d held-out pairs (chance %.1f%%)\n",
                100 * r.retrieval_top1, r.eval_pairs, 100 * r.retrieval_chance);
  } else if (r.eval_pairs > 0) {
    std::printf("held-out loss: %.4f on %d pairs\n", r.eval_loss, r.eval_pairs);
  }
  if (!f.metrics_out.empty()) {
    Status s = WriteJsonFile(f.metrics_out, MetricsJson(r, f.options));
    if (!s.ok()) return ReportError("train", s);
  }
  return kExitOk;
}

}  // namespace

void AddTrainCommand(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "train", "Train a model (default: on generated shapes) and report held-out retrieval");
  auto f = std::make_shared<TrainFlags>();
  train::TrainOptions& o = f->options;
  sub->add_option("--model,-m", o.model_path,
                  "Model spec file, or a zoo name (clip-tiny); default with --init: the "
                  "folder's config.json")
      ->envname("MOSAIC_MODEL");
  sub->add_option("--init", o.init,
                  "Hugging Face folder (config.json + safetensors: CLIPModel, "
                  "LlamaForCausalLM) whose weights start the run; its vocab.json + merges.txt "
                  "are the default tokenizer; or an OpenCLIP .safetensors file with --model "
                  "(docs/interop.md)")
      ->envname("MOSAIC_INIT");
  sub->add_option("--steps", o.steps, "Optimizer steps to train")
      ->envname("MOSAIC_STEPS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--batch-size", o.batch_size, "Samples per step (default: the model spec's)")
      ->envname("MOSAIC_BATCH_SIZE")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--micro-batches", o.micro_batches,
                  "Micro-batches per step, gradients accumulated (default: the model spec's)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--lr", o.lr,
                  "Peak learning rate, AdamW with warmup + cosine (default: 1e-3 for models "
                  "under 10M parameters, else 1e-4)")
      ->envname("MOSAIC_LR")
      ->check(CLI::PositiveNumber);
  sub->add_option("--threads", o.threads,
                  "torch threads on the CPU (default: 1 for models under 10M parameters, "
                  "else torch's)")
      ->envname("MOSAIC_THREADS")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--warmup-steps", o.warmup_steps, "Linear warmup steps (default: 5% of --steps)");
  sub->add_option("--weight-decay", o.weight_decay,
                  "AdamW weight decay (matrices only; none on biases, norms, embeddings, "
                  "temperature)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--clip-grad", o.clip_grad, "Max global gradient norm (0: no clipping)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--seed", o.seed,
                  "Seed of the initial weights, the data order and the "
                  "generated data")
      ->envname("MOSAIC_SEED")
      ->capture_default_str();
  sub->add_option("--data", o.data,
                  "Training pairs: a folder or tar shard(s) of NAME.jpg|png + NAME.txt "
                  "(+ NAME.wav) (default: generated shapes)")
      ->envname("MOSAIC_DATA");
  sub->add_option("--eval-data", o.eval_data,
                  "Held-out pairs for retrieval (default: generated, when training on "
                  "generated data)")
      ->envname("MOSAIC_EVAL_DATA");
  sub->add_option("--eval-samples", o.eval_samples, "Held-out pairs to evaluate on")
      ->check(CLI::Range(2, 1000000))
      ->capture_default_str();
  sub->add_option("--tokenizer", o.tokenizer,
                  "sentencepiece model (default: <configs>/tokenizers/shapes.model)")
      ->envname("MOSAIC_TOKENIZER");
  sub->add_option("--device", o.device, "cpu, cuda or cuda:N (bf16 autocast on CUDA)")
      ->envname("MOSAIC_DEVICE")
      ->capture_default_str();
  sub->add_option("--checkpoint-dir", o.checkpoint_dir,
                  "Folder for checkpoints (step-NNNNNNNN.ckpt; the newest few are kept)")
      ->envname("MOSAIC_CHECKPOINT_DIR");
  sub->add_option("--checkpoint-every", o.checkpoint_every,
                  "Steps between checkpoints (0: only at the end)")
      ->envname("MOSAIC_CHECKPOINT_EVERY")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--keep-checkpoints", o.keep_checkpoints, "Checkpoints kept in the folder")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->add_flag("--resume", o.resume,
                "Continue from the newest valid checkpoint in --checkpoint-dir")
      ->envname("MOSAIC_RESUME");
  sub->add_option("--log-every", o.log_every, "Steps between progress reports")
      ->envname("MOSAIC_LOG_EVERY")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--on-bad-data", f->on_bad_data,
                  "Unreadable image, missing caption, empty shard: report and skip, or stop")
      ->envname("MOSAIC_ON_BAD_DATA")
      ->check(CLI::IsMember({"skip", "stop"}))
      ->capture_default_str();
  sub->add_option("--on-nonfinite", f->on_nonfinite,
                  "NaN/Inf loss or gradients: skip the optimizer step, reduce-scale (skip and "
                  "halve the fp16 loss scale), stop naming the module, or auto (reduce-scale "
                  "with an fp16 loss scale, else stop)")
      ->envname("MOSAIC_ON_NONFINITE")
      ->check(CLI::IsMember({"auto", "skip", "reduce-scale", "stop"}))
      ->capture_default_str();
  sub->add_option("--configs", o.configs_dir, "Where zoo names and the tokenizer are looked up")
      ->envname("MOSAIC_CONFIGS")
      ->capture_default_str();
  sub->add_option("--dist-timeout", f->dist_timeout_s,
                  "Data parallel (under torchrun): seconds the ranks wait for each other to "
                  "join and for each collective before failing")
      ->envname("MOSAIC_DIST_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--grad-bucket-mb", f->grad_bucket_mb,
                  "Data parallel: MiB of gradients per all-reduce, launched as backward "
                  "produces them")
      ->envname("MOSAIC_GRAD_BUCKET_MB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--check-replicas-every", o.check_replicas_every,
                  "Data parallel: steps between checks that every rank holds the same "
                  "parameters (0: at the start and the end only)")
      ->envname("MOSAIC_CHECK_REPLICAS_EVERY")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--plan", o.plan,
                  "Run steps through the engine: temporal-eager, temporal-graph, shared-streams, "
                  "auto (time the planner's candidates on this GPU, keep the fastest) or a plan "
                  "file (default: plain autograd, micro-batch by micro-batch)")
      ->envname("MOSAIC_PLAN");
  sub->add_flag("--online-replan", o.online_replan,
                "With a graph --plan on CUDA: fold every step's measured task times into the "
                "perf model and re-plan when a plan predicted over 5% faster pays for itself");
  sub->add_option("--replan-every", o.replan_every, "Steps between online re-plans")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--device-spec", o.device_spec,
                  "Device spec the planner plans for (configs/devices/<name>.json)")
      ->capture_default_str();
  sub->add_option("--profile", o.profile,
                  "Profile for --plan auto (default: configs/profiles/<model>-<device-spec>.json "
                  "when it exists, else the synthetic law)")
      ->envname("MOSAIC_PROFILE");
  AddFusedKernelFlags(sub, &f->fused);
  sub->add_option("--metrics-out", f->metrics_out,
                  "Also write losses, throughput and retrieval as JSON to this file");
  SetCommand(sub, [f] { return Run(*f); });
}

}  // namespace mosaic::cli
