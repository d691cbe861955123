// Shuffled, batched, prefetched examples (see data_loader.h).
#include "train/data_loader.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>
#include <random>

#include "train/audio.h"

namespace mosaic::train {
namespace {

void Warn(const LoaderOptions& o, const std::string& line) {
  if (o.warn) {
    o.warn(line);
  } else {
    std::cerr << "mosaic: " << line << "\n";
  }
}

// One example read, decoded and turned into tensors (or why it could not be).
struct Prepared {
  Status status;
  torch::Tensor image, mel;
  std::vector<int64_t> ids;
  int64_t length = 0;
  std::string caption, name;
};

Prepared Prepare(const ExampleSource& source, const Tokenizer& tok, const LoaderOptions& o,
                 int64_t index) {
  Prepared p;
  StatusOr<Example> ex = source.Get(index);
  if (!ex.ok()) {
    p.status = ex.status();
    return p;
  }
  if (o.n_mels > 0 && ex->audio.samples.empty()) {
    p.status = InvalidArgument(ex->name + ": no audio samples (the model has an audio encoder)");
    return p;
  }
  p.image = ImageToTensor(ex->image, o.image_size);
  p.ids = tok.Encode(ex->caption, o.seq_len);
  p.length = tok.EncodedLength(ex->caption, o.seq_len);
  if (o.n_mels > 0) p.mel = LogMelSpectrogram(ex->audio, o.n_mels, o.frames);
  p.caption = std::move(ex->caption);
  p.name = std::move(ex->name);
  return p;
}

// Prepares `indices` with up to `workers` threads; results in the order of `indices`.
std::vector<Prepared> PrepareAll(const ExampleSource& source, const Tokenizer& tok,
                                 const LoaderOptions& o, const std::vector<int64_t>& indices) {
  std::vector<Prepared> out(indices.size());
  const int n = static_cast<int>(indices.size());
  const int workers = std::max(1, std::min(o.workers, n));
  auto work = [&](int first) {
    torch::NoGradGuard no_grad;
    for (int i = first; i < n; i += workers)
      out[i] = Prepare(source, tok, o, indices[i]);
  };
  if (workers == 1) {
    work(0);
  } else {
    std::vector<std::thread> threads;
    for (int w = 1; w < workers; ++w)
      threads.emplace_back(work, w);
    work(0);
    for (auto& t : threads)
      t.join();
  }
  return out;
}

struct BatchBuilder {
  std::vector<torch::Tensor> images, tokens, audio;
  std::vector<int64_t> lengths;
  std::vector<std::string> captions, names;

  int size() const { return static_cast<int>(images.size()); }
  void Add(Prepared& p) {
    images.push_back(std::move(p.image));
    tokens.push_back(torch::tensor(p.ids, torch::kInt64));
    lengths.push_back(p.length);
    if (p.mel.defined()) audio.push_back(std::move(p.mel));
    captions.push_back(std::move(p.caption));
    names.push_back(std::move(p.name));
  }
  Batch Finish() {
    Batch b;
    b.images = torch::stack(images);
    b.tokens = torch::stack(tokens);
    b.lengths = torch::tensor(lengths, torch::kInt64);
    if (!audio.empty()) b.audio = torch::stack(audio);
    b.captions = std::move(captions);
    b.names = std::move(names);
    return b;
  }
};

}  // namespace

torch::Tensor ImageToTensor(const Image& image, int size) {
  torch::NoGradGuard no_grad;
  auto t = torch::from_blob(const_cast<uint8_t*>(image.pixels.data()),
                            {image.height, image.width, 3}, torch::kUInt8)
               .permute({2, 0, 1})
               .to(torch::kFloat32)
               .div_(255.0);  // (3, H, W), a copy
  if (image.height != size || image.width != size) {
    const double scale = static_cast<double>(size) / std::min(image.height, image.width);
    const int64_t h = std::max<int64_t>(size, std::llround(image.height * scale));
    const int64_t w = std::max<int64_t>(size, std::llround(image.width * scale));
    namespace F = torch::nn::functional;
    t = F::interpolate(t.unsqueeze(0), F::InterpolateFuncOptions()
                                           .size(std::vector<int64_t>{h, w})
                                           .mode(torch::kBilinear)
                                           .align_corners(false)
                                           .antialias(true))
            .squeeze(0);
    t = t.narrow(1, (h - size) / 2, size).narrow(2, (w - size) / 2, size).contiguous();
  }
  return t.sub_(0.5).div_(0.5);
}

StatusOr<Batch> MakeBatch(const ExampleSource& source, const Tokenizer& tokenizer,
                          const LoaderOptions& options, const std::vector<int64_t>& indices) {
  BatchBuilder builder;
  int64_t skipped = 0;
  for (Prepared& p : PrepareAll(source, tokenizer, options, indices)) {
    if (!p.status.ok()) {
      if (options.on_bad_data == BadDataPolicy::kStop) return p.status;
      Warn(options, p.status.message() + " (skipped)");
      ++skipped;
      continue;
    }
    builder.Add(p);
  }
  if (builder.size() == 0) return InvalidArgument("no usable examples in the batch");
  Batch b = builder.Finish();
  b.skipped = skipped;
  return b;
}

std::vector<int64_t> DataLoader::EpochOrder(int64_t size, uint64_t seed, int64_t epoch,
                                            bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(size));
  std::iota(order.begin(), order.end(), 0);
  if (!shuffle) return order;
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(epoch), static_cast<uint32_t>(uint64_t(epoch) >> 32)};
  std::mt19937_64 rng(seq);
  // Fisher-Yates with the raw generator (std::shuffle's use of it is library-specific).
  for (int64_t i = size - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

DataLoader::DataLoader(std::shared_ptr<const ExampleSource> source,
                       std::shared_ptr<const Tokenizer> tokenizer, LoaderOptions options,
                       DataPosition start)
    : source_(std::move(source)),
      tokenizer_(std::move(tokenizer)),
      options_(std::move(options)),
      pos_(start) {
  options_.prefetch_batches = std::max(1, options_.prefetch_batches);
  thread_ = std::thread([this] { Run(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  not_full_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t DataLoader::NextIndex(int64_t n) {
  if (pos_.offset >= n) {
    pos_.epoch += 1;
    pos_.offset = 0;
  }
  if (order_epoch_ != pos_.epoch) {
    order_ = EpochOrder(n, options_.seed, pos_.epoch, options_.shuffle);
    order_epoch_ = pos_.epoch;
  }
  return order_[static_cast<size_t>(pos_.offset++)];
}

// Note [rank slices]: in a data-parallel run every rank's loader walks the same seeded order
// (same seed, same position) in steps of the global micro-batch (batch_size * shard_count) and
// keeps its own slice, so the ranks' batches are disjoint and their union is the one-process
// micro-batch. A bad example under --on-bad-data=skip is dropped from its rank's slice without
// a replacement (taking one from further on would overlap another rank's slice): that rank's
// batch is smaller for that step.
StatusOr<Batch> DataLoader::ProduceSlice() {
  const int64_t n = source_->size();
  const int64_t global = static_cast<int64_t>(options_.batch_size) * options_.shard_count;
  std::vector<int64_t> indices;
  for (int64_t k = 0; k < global; ++k) {
    const int64_t index = NextIndex(n);
    if (k / options_.batch_size == options_.shard_index) indices.push_back(index);
  }
  BatchBuilder builder;
  int64_t skipped = 0;
  for (Prepared& p : PrepareAll(*source_, *tokenizer_, options_, indices)) {
    if (!p.status.ok()) {
      if (options_.on_bad_data == BadDataPolicy::kStop) {
        return Status(p.status.code(), p.status.message() + " (stopping: --on-bad-data=stop)");
      }
      Warn(options_, p.status.message() + " (skipped)");
      ++skipped;
      continue;
    }
    builder.Add(p);
  }
  if (builder.size() == 0) {
    return InvalidArgument(source_->Describe() + ": no usable example in rank " +
                           std::to_string(options_.shard_index) + "'s slice of a batch");
  }
  Batch b = builder.Finish();
  b.next = pos_;
  b.skipped = skipped;
  return b;
}

StatusOr<Batch> DataLoader::Produce() {
  const int64_t n = source_->size();
  if (n <= 0) return InvalidArgument(source_->Describe() + ": no examples");
  if (options_.shard_count > 1) return ProduceSlice();
  BatchBuilder builder;
  int64_t skipped = 0, bad_in_a_row = 0;
  while (builder.size() < options_.batch_size) {
    // The next examples in order, as many as the batch still needs; the same indices are
    // taken whatever the number of workers, so the batches do not depend on it.
    std::vector<int64_t> indices;
    while (static_cast<int>(indices.size()) < options_.batch_size - builder.size()) {
      indices.push_back(NextIndex(n));
    }
    for (Prepared& p : PrepareAll(*source_, *tokenizer_, options_, indices)) {
      if (!p.status.ok()) {
        if (options_.on_bad_data == BadDataPolicy::kStop) {
          return Status(p.status.code(), p.status.message() + " (stopping: --on-bad-data=stop)");
        }
        Warn(options_, p.status.message() + " (skipped)");
        ++skipped;
        if (++bad_in_a_row >= n) {
          return InvalidArgument(source_->Describe() + ": no usable example in a whole epoch");
        }
        continue;
      }
      bad_in_a_row = 0;
      builder.Add(p);
    }
  }
  Batch b = builder.Finish();
  b.next = pos_;
  b.skipped = skipped;
  return b;
}

void DataLoader::Run() {
  torch::NoGradGuard no_grad;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      not_full_.wait(lock, [&] {
        return stop_ || static_cast<int>(queue_.size()) < options_.prefetch_batches;
      });
      if (stop_) return;
    }
    StatusOr<Batch> b = Produce();
    const bool ok = b.ok();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(b));
    }
    not_empty_.notify_one();
    if (!ok) return;  // the error is the last thing it produces
  }
}

StatusOr<Batch> DataLoader::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  if (failed_) return error_;
  not_empty_.wait(lock, [&] { return !queue_.empty(); });
  StatusOr<Batch> b = std::move(queue_.front());
  queue_.pop_front();
  if (!b.ok()) {
    failed_ = true;
    error_ = b.status();
  }
  lock.unlock();
  not_full_.notify_one();
  return b;
}

}  // namespace mosaic::train
