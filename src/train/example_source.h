// Where training examples come from: the pairs a user brings (a folder or tar shards in the
// WebDataset layout: NAME.jpg|jpeg|png + NAME.txt [+ NAME.wav], files of one example sharing
// NAME) or the generated shapes data set. A source lists its examples when opened and decodes
// one on demand, naming the file in every error so that broken data can be found and fixed.
//
//   DataSourceOptions opt;  opt.on_bad_data = BadDataPolicy::kSkip;
//   MOSAIC_ASSIGN_OR_RETURN(auto src, OpenDataSource("data/shard-000.tar", opt));
//   StatusOr<Example> ex = src->Get(0);  // "data/shard-000.tar:cat.jpg: cannot decode JPEG: ..."
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "train/audio_codec.h"
#include "train/image_codec.h"
#include "train/shapes_dataset.h"

namespace mosaic::train {

// What to do with an example that cannot be used (unreadable image, missing caption, empty
// shard): report it with its file name and go on, or report it and stop.
enum class BadDataPolicy { kSkip, kStop };
StatusOr<BadDataPolicy> ParseBadDataPolicy(const std::string& s);  // "skip" | "stop"

struct Example {
  std::string name;  // where it came from: "dir/NAME" or "shard.tar:NAME"
  Image image;
  std::string caption;
  Audio audio;  // empty when the source has none or audio was not asked for
};

class ExampleSource {
 public:
  virtual ~ExampleSource() = default;
  virtual int64_t size() const = 0;
  // Reads and decodes example `index` (0 <= index < size()). One caller at a time.
  virtual StatusOr<Example> Get(int64_t index) const = 0;
  // For logs: "data/shard-000.tar (1000 examples)".
  virtual std::string Describe() const = 0;
};

struct DataSourceOptions {
  BadDataPolicy on_bad_data = BadDataPolicy::kStop;
  bool want_audio = false;  // every example must then have NAME.wav
  // Receives one line per problem skipped while opening (kSkip); defaults to stderr.
  std::function<void(const std::string&)> warn;
};

// Opens a folder of example files, a tar shard (.tar, .tar.gz...: anything libarchive reads),
// or a folder of tar shards. Fails when nothing usable is found, when a path does not exist,
// and with kStop on the first broken shard.
StatusOr<std::unique_ptr<ExampleSource>> OpenDataSource(const std::string& path,
                                                        const DataSourceOptions& options);

// The shapes data set: `size` examples of seed `seed`.
std::unique_ptr<ExampleSource> MakeShapesSource(uint64_t seed, int64_t size,
                                                const ShapesOptions& options);

// Writes examples as a tar shard in the WebDataset layout (NAME.png|jpg, NAME.txt, NAME.wav
// when the example has audio), atomically. For tests, tools and exporting the shapes set.
struct ShardFile {
  std::string name;  // path inside the archive
  std::string bytes;
};
Status WriteTarShard(const std::string& path, const std::vector<ShardFile>& files);

}  // namespace mosaic::train
