// Shuffled, batched, prefetched examples (see data_loader.h).
#include "train/data_loader.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>
#include <random>

namespace mosaic::train {
namespace {

void Warn(const LoaderOptions& o, const std::string& line) {
  if (o.warn) {
    o.warn(line);
  } else {
    std::cerr << "mosaic: " << line << "\n";
  }
}

// Decoded example -> tensors, appended to the batch under construction.
struct BatchBuilder {
  std::vector<torch::Tensor> images, tokens, audio;
  std::vector<int64_t> lengths;
  std::vector<std::string> captions, names;

  void Add(const Example& ex, const Tokenizer& tok, const LoaderOptions& o) {
    images.push_back(ImageToTensor(ex.image, o.image_size));
    std::vector<int64_t> ids = tok.Encode(ex.caption, o.seq_len);
    tokens.push_back(torch::tensor(ids, torch::kInt64));
    lengths.push_back(tok.EncodedLength(ex.caption, o.seq_len));
    if (o.n_mels > 0) audio.push_back(LogMelSpectrogram(ex.audio, o.n_mels, o.frames));
    captions.push_back(ex.caption);
    names.push_back(ex.name);
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

// Checks that an example can be used beyond decoding (audio wanted but absent).
Status CheckExample(const Example& ex, const LoaderOptions& o) {
  if (o.n_mels > 0 && ex.audio.samples.empty()) {
    return InvalidArgument(ex.name + ": no audio samples (the model has an audio encoder)");
  }
  return Status::Ok();
}

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
  for (int64_t i : indices) {
    StatusOr<Example> ex = source.Get(i);
    Status s = ex.ok() ? CheckExample(*ex, options) : ex.status();
    if (!s.ok()) {
      if (options.on_bad_data == BadDataPolicy::kStop) return s;
      Warn(options, s.message() + " (skipped)");
      ++skipped;
      continue;
    }
    builder.Add(*ex, tokenizer, options);
  }
  if (builder.images.empty()) return InvalidArgument("no usable examples in the batch");
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

StatusOr<Batch> DataLoader::Produce() {
  const int64_t n = source_->size();
  if (n <= 0) return InvalidArgument(source_->Describe() + ": no examples");
  BatchBuilder builder;
  int64_t skipped = 0, bad_in_a_row = 0;
  while (static_cast<int>(builder.images.size()) < options_.batch_size) {
    if (pos_.offset >= n) {
      pos_.epoch += 1;
      pos_.offset = 0;
    }
    if (order_epoch_ != pos_.epoch) {
      order_ = EpochOrder(n, options_.seed, pos_.epoch, options_.shuffle);
      order_epoch_ = pos_.epoch;
    }
    const int64_t index = order_[static_cast<size_t>(pos_.offset)];
    pos_.offset += 1;
    StatusOr<Example> ex = source_->Get(index);
    Status s = ex.ok() ? CheckExample(*ex, options_) : ex.status();
    if (!s.ok()) {
      if (options_.on_bad_data == BadDataPolicy::kStop) {
        return Status(s.code(), s.message() + " (stopping: --on-bad-data=stop)");
      }
      Warn(options_, s.message() + " (skipped)");
      ++skipped;
      if (++bad_in_a_row >= n) {
        return InvalidArgument(source_->Describe() + ": no usable example in a whole epoch");
      }
      continue;
    }
    bad_in_a_row = 0;
    builder.Add(*ex, *tokenizer_, options_);
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
