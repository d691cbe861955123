// Checkpoints: everything a run needs to continue exactly where it stopped (model parameters
// and buffers, AdamW moments, step, torch's CPU RNG, the data loader's position, the loss
// scale), in one file written atomically (temporary file, fsync, rename, fsync of the folder),
// behind a header that lets a damaged file be refused with a clear error:
//
//   offset size  field
//   0      8     magic "MOSAICKP"
//   8      4     format version, uint32 little-endian (kCheckpointVersion)
//   12     4     CRC-32 (zlib) of the payload
//   16     8     payload size in bytes, uint64 little-endian
//   24     8     reserved, 0
//   32     ...   payload: a torch::serialize archive (keys in checkpoint.cc)
//
//   TrainState st;  st.step = 100;  ...
//   MOSAIC_RETURN_IF_ERROR(SaveCheckpoint(dir + "/" + CheckpointFileName(100), *model, *opt, st));
//   Status s = LoadCheckpoint(path, *model, *opt, &st);  // "...: checksum mismatch ..."
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/status.h"
#include "train/checkpoint_header.h"
#include "train/data_loader.h"

namespace mosaic::train {

struct TrainState {
  int64_t step = 0;          // optimizer steps completed
  DataPosition data;         // where the data loader resumes
  torch::Tensor rng;         // torch's default CPU generator state (uint8)
  torch::Tensor loss_scale;  // LossScaler::State(), or undefined
  std::string model_name;    // refuses a checkpoint of another model
  uint64_t seed = 0;         // refuses a checkpoint of another data order
};

// Serializes and writes atomically; the previous file under `path`, if any, stays until the
// new one is complete on disk. `midway` is WriteFileAtomic's test hook (crash tests).
Status SaveCheckpoint(const std::string& path, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, const TrainState& state,
                      const std::function<void(const std::string&)>& midway = nullptr);

// Verifies the header and checksum before touching `model`, `optimizer` and `state`.
Status LoadCheckpoint(const std::string& path, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, TrainState* state);

// Only the header check (magic, version, size, checksum): OK or why the file is refused.
Status VerifyCheckpointFile(const std::string& path);
// VerifyCheckpointBytes (the same on bytes in memory) is in checkpoint_header.h.

// "step-00000100.ckpt"
std::string CheckpointFileName(int64_t step);
// Checkpoint files in `dir` (by their names), newest step first. Missing dir: empty.
std::vector<std::string> ListCheckpoints(const std::string& dir);
// Deletes the temporaries (step-N.ckpt.tmp.<pid>) that writers killed mid-write left in `dir`,
// when no process of that pid lives; returns how many. ListCheckpoints ignores them anyway.
int RemoveStaleCheckpointTemporaries(const std::string& dir);
// Deletes all but the newest `keep` checkpoints in `dir`.
void PruneCheckpoints(const std::string& dir, int keep);

}  // namespace mosaic::train
