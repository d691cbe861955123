// The training loop behind `mosaic train`: builds the model from its spec, reads batches
// (generated shapes or the user's folder/tar shards), runs forward/backward over the step's
// micro-batches (bf16/fp16 autocast on CUDA, fp32 on the CPU), clips gradients, steps AdamW
// on the warmup + cosine schedule, logs, checkpoints, resumes, and at the end measures
// image->text retrieval on held-out pairs (contrastive models) or the held-out loss.
//
//   TrainOptions opt;
//   opt.model_path = "configs/models/clip-tiny.json";
//   opt.steps = 300;
//   MOSAIC_ASSIGN_OR_RETURN(TrainResult r, Train(opt));
//   r.retrieval_top1;   // e.g. 0.6, against r.retrieval_chance ~ 0.01
#pragma once

#include <atomic>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "core/model_spec.h"
#include "core/status.h"
#include "train/example_source.h"
#include "train/nonfinite.h"

namespace mosaic::dist {
class Context;
}

namespace mosaic::train {

struct TrainOptions {
  std::string model_path;  // a spec file, or a zoo name looked up in configs_dir/models
  // A Hugging Face folder (config.json + safetensors; src/interop) to fine-tune from: its weights
  // initialize the model; without model_path its config.json is the model; without tokenizer
  // its vocab.json + merges.txt (CLIP) are the tokenizer, when it has them. A file instead of a
  // folder is an OpenCLIP checkpoint in safetensors, for the CLIP spec that model_path names.
  std::string init;
  std::string configs_dir = "configs";
  std::string device = "cpu";  // cpu | cuda | cuda:N
  int64_t steps = 1500;
  int batch_size = 0;         // 0: the spec's
  int micro_batches = 0;      // 0: the spec's
  double lr = 0;              // peak; 0: auto (Note [small-model defaults] in trainer.cc)
  int64_t warmup_steps = -1;  // -1: 5% of the steps (at least 1)
  double weight_decay = 0.1;
  double clip_grad = 1.0;  // max global gradient norm; <= 0: no clipping
  uint64_t seed = 0;
  std::string data;       // folder or tar shard(s); empty: generated shapes
  std::string eval_data;  // held-out pairs for retrieval; empty: generated (or none)
  std::string tokenizer;  // empty: <configs_dir>/tokenizers/shapes.model
  BadDataPolicy on_bad_data = BadDataPolicy::kStop;
  NonFinitePolicy on_nonfinite = NonFinitePolicy::kAuto;  // NaN/Inf loss or gradients
  int eval_samples = 256;
  std::string checkpoint_dir;    // empty: no checkpoints
  int64_t checkpoint_every = 0;  // steps; 0: only at the end (when checkpoint_dir is set)
  int keep_checkpoints = 2;
  bool resume = false;  // continue from the newest valid checkpoint in checkpoint_dir
  int64_t log_every = 50;
  int prefetch_batches = 4;
  int threads = 0;            // torch intra-op threads on the CPU; 0: auto (same Note)
  bool progress_bar = false;  // redraw one line (a terminal) instead of plain lines
  bool print_model_table = true;
  // How a step runs (train/plan_choice.h). Empty: the model's forward and autograd, micro-batch
  // by micro-batch (contrastive losses per micro-batch). Otherwise the engine's executor on
  // whole batches (a contrastive loss sees the whole batch): "temporal-eager", "temporal-graph",
  // "shared-streams", "auto" (time the planner's candidates on this GPU, keep the fastest), or a
  // plan file. bf16/fp32 models only (no fp16 loss scaling in the executor). on_nonfinite and
  // inject_nonfinite apply to planned steps too (Note [numeric faults] in nonfinite.h).
  std::string plan;
  std::string device_spec = "h100-sxm";  // the planner's device (configs/devices/)
  std::string profile;                   // "", a profile file, or "synthetic"
  // With a graph plan on CUDA: time every task of every step (CUDA events), fold the times into
  // the perf model, and every replan_every steps re-plan; switch when the calibrated planner
  // predicts a gain of over 5% that pays for re-capturing (planner/online.h).
  bool online_replan = false;
  int replan_every = 20;
  // Checked after every step; when it turns true (SIGINT/SIGTERM in `mosaic train`) the run
  // writes a checkpoint (with checkpoint_dir) and returns early with `interrupted` set.
  const std::atomic<bool>* stop_requested = nullptr;
  std::ostream* log = nullptr;  // progress and messages; nullptr: std::cerr
  // Test hooks (docs/training.md "Test hooks"; `mosaic train` sets them from
  // MOSAIC_INJECT_NONFINITE and MOSAIC_TEST_CHECKPOINT_PAUSE_MS).
  NonFiniteInjection inject_nonfinite;
  int checkpoint_write_pause_ms = 0;  // pause halfway through each checkpoint write, saying so
  // Bytes held on the GPU while a graph plan captures, freed after: graphs that need more memory
  // than eager training (what a plan the memory model underestimates does), so that a cap on
  // GPU memory provokes a real out-of-memory during capture (the fallback's gpu test).
  int64_t capture_ballast_bytes = 0;
  // Data-parallel training (docs/distributed.md): this process's membership in a run started by
  // torchrun; nullptr: one process. Every rank reads its slice of each global batch (batch_size
  // stays the global batch), gradients are averaged over ranks, contrastive losses gather every
  // rank's features; rank 0 alone logs, writes checkpoints and evaluates.
  dist::Context* dist = nullptr;
  int64_t grad_bucket_bytes = 25LL << 20;  // gradients per all-reduce
  int64_t check_replicas_every = 100;      // steps between parameter checks; 0: start and end only
};

struct TrainResult {
  std::string model_name;
  int64_t first_step = 0;      // 0, or the checkpoint's step when resumed
  int64_t last_step = 0;       // steps completed at the end
  std::vector<double> losses;  // losses[i] is the mean loss of step first_step + i
  int64_t skipped_examples = 0;
  int64_t skipped_steps = 0;  // optimizer steps skipped for a NaN/Inf loss or gradient
  double wall_seconds = 0;  // the training loop only
  double samples_per_second = 0;
  // Held-out evaluation. Contrastive models: image->text top-1 retrieval (a retrieval counts
  // as right when the chosen caption equals the true one), and its chance level (the expected
  // top-1 of a random choice, counting duplicate captions). Others: held-out loss.
  bool has_retrieval = false;
  int eval_pairs = 0;
  double retrieval_top1 = 0;
  double retrieval_chance = 0;
  double eval_loss = 0;
  std::vector<std::string> checkpoints_written;
  bool interrupted = false;  // stopped early by stop_requested
  // With TrainOptions::plan: the plan run, the perf model's step time for it (0: none) and the
  // median measured step (host clock around each step, data wait included).
  std::string plan_summary;
  double predicted_step_ms = 0;
  double measured_step_ms = 0;
  int replans = 0;  // online re-plans that switched the plan
};

// Resolves a zoo name ("clip-tiny") to <configs_dir>/models/<name>.json; paths pass through.
std::string ResolveModelPath(const std::string& model, const std::string& configs_dir);

// Runs training. Expected failures (bad flags or files, broken data under kStop, a refused
// checkpoint with nothing to fall back to, a checkpoint that cannot be written (IoError), a
// NaN/Inf under NonFinitePolicy::kStop (FailedPrecondition)) come back as a Status.
StatusOr<TrainResult> Train(const TrainOptions& options);

}  // namespace mosaic::train
