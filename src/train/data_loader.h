// Batches for training: examples from an ExampleSource in a seeded shuffled order (a new
// permutation each epoch), turned into tensors (images resized and normalized, captions
// tokenized, audio as log-mel frames) on a background thread that keeps a bounded queue of
// ready batches. Its position (epoch, offset) goes into checkpoints, so a resumed run sees
// exactly the batches an uninterrupted one would.
//
//   LoaderOptions opt;  opt.batch_size = 32;  opt.image_size = 32;  opt.seq_len = 16;
//   DataLoader loader(source, tokenizer, opt, /*start=*/{});
//   MOSAIC_ASSIGN_OR_RETURN(Batch b, loader.Next());  // b.images: (32, 3, 32, 32)
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "train/example_source.h"
#include "train/tokenizer.h"

namespace mosaic::train {

// The next example to read: the `offset`-th of epoch `epoch`'s permutation.
struct DataPosition {
  int64_t epoch = 0;
  int64_t offset = 0;
  bool operator==(const DataPosition& o) const { return epoch == o.epoch && offset == o.offset; }
};

struct Batch {
  torch::Tensor images;   // (B, 3, S, S) float32, about [-1, 1]
  torch::Tensor tokens;   // (B, L) int64, padded with the tokenizer's pad id
  torch::Tensor lengths;  // (B) int64: non-pad tokens per row (bos and eos included)
  torch::Tensor audio;    // (B, n_mels, frames) float32; undefined without audio
  std::vector<std::string> captions;
  std::vector<std::string> names;
  DataPosition next;    // where reading resumes after this batch
  int64_t skipped = 0;  // bad examples skipped while filling this batch
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

struct LoaderOptions {
  int batch_size = 32;
  int image_size = 32;
  int seq_len = 16;
  int n_mels = 0;  // > 0: examples carry audio, turned into (n_mels, frames) log-mel features
  int frames = 0;
  uint64_t seed = 0;
  bool shuffle = true;
  BadDataPolicy on_bad_data = BadDataPolicy::kStop;
  int prefetch_batches = 4;  // bound of the queue of ready batches
  int workers = 1;           // threads decoding the examples of one batch (1: the prefetch thread)
  // Data-parallel runs (Note [rank slices] in data_loader.cc): with shard_count W > 1 each batch
  // is slice shard_index of the next batch_size * W examples in the shared order, so W loaders
  // together read exactly what one loader with batch_size * W reads, without overlap.
  int shard_count = 1;
  int shard_index = 0;
  // One line per skipped example ("<file>: <why> (skipped)"); defaults to stderr.
  std::function<void(const std::string&)> warn;
};

// Image (any size) -> (3, S, S): shorter side resized to S (bilinear, antialiased), center
// crop, scaled to [-1, 1].
torch::Tensor ImageToTensor(const Image& image, int size);

// One batch from explicit example indices, synchronously (evaluation, tests). Bad examples
// follow options.on_bad_data.
StatusOr<Batch> MakeBatch(const ExampleSource& source, const Tokenizer& tokenizer,
                          const LoaderOptions& options, const std::vector<int64_t>& indices);

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const ExampleSource> source,
             std::shared_ptr<const Tokenizer> tokenizer, LoaderOptions options,
             DataPosition start = {});
  ~DataLoader();  // stops and joins the prefetch thread
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch, waiting for the prefetch thread if needed. After an error (kStop on bad
  // data, or no usable example left) every call returns that error.
  StatusOr<Batch> Next();

  // Example order of `epoch` (a permutation of [0, size) or the identity without shuffle).
  static std::vector<int64_t> EpochOrder(int64_t size, uint64_t seed, int64_t epoch, bool shuffle);

 private:
  void Run();
  StatusOr<Batch> Produce();
  StatusOr<Batch> ProduceSlice();  // shard_count > 1
  // The example at the data position, then one step on (into the next epoch, reshuffled, at the
  // end of one). `n`: the source's size.
  int64_t NextIndex(int64_t n);

  std::shared_ptr<const ExampleSource> source_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  LoaderOptions options_;

  // Producer-side state (touched by the prefetch thread only).
  DataPosition pos_;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;

  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  std::deque<StatusOr<Batch>> queue_;
  bool stop_ = false;
  bool failed_ = false;
  Status error_;
  std::thread thread_;
};

}  // namespace mosaic::train
