// libFuzzer target for data shards: any bytes as a tar shard (plain or compressed: whatever
// libarchive reads) opened as `mosaic train --data` would, under both --on-bad-data policies,
// with and without audio, and every example in it decoded (JPEG, PNG, WAV...). Each open and
// each example gives an Example or an error naming the shard, never a crash, hang or
// sanitizer report.
//
//   build-asan/tests/fuzz/fuzz_data_shard -max_total_time=60 tests/fuzz/corpus/data_shard
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "train/example_source.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "fuzz invariant broken: %s\n", what);
  abort();
}

// The shard file the inputs are written to (OpenDataSource reads paths), under TMPDIR
// (run_fuzzer.sh points it at its scratch folder: libFuzzer may end without running atexit).
const std::string& ShardPath() {
  static const std::string path = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string p = std::string(tmp && *tmp ? tmp : "/tmp") + "/mosaic_fuzz_shard_" +
                    std::to_string(::getpid()) + ".tar";
    std::atexit([] { ::unlink(ShardPath().c_str()); });
    return p;
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = ShardPath();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  const uint8_t flags = size > 0 ? data[size - 1] : 0;  // the policy and audio from the bytes
  mosaic::train::DataSourceOptions options;
  options.on_bad_data =
      flags & 1 ? mosaic::train::BadDataPolicy::kSkip : mosaic::train::BadDataPolicy::kStop;
  options.want_audio = flags & 2;
  options.warn = [](const std::string& line) {
    if (line.empty()) Fail("empty warning");
  };
  auto source = mosaic::train::OpenDataSource(path, options);
  if (!source.ok()) {
    if (source.status().message().rfind(path, 0) != 0) Fail("open error does not name the shard");
    return 0;
  }
  const int64_t n = (*source)->size();
  if (n <= 0) Fail("opened an empty shard");
  for (int64_t i = 0; i < n && i < 16; ++i) {
    auto ex = (*source)->Get(i);
    if (!ex.ok()) {
      if (ex.status().message().find(path) == std::string::npos) Fail("error without the shard");
      continue;
    }
    if (ex->caption.empty()) Fail("empty caption accepted");
    if (ex->image.width <= 0 || ex->image.height <= 0 ||
        ex->image.pixels.size() != static_cast<size_t>(ex->image.width) * ex->image.height * 3) {
      Fail("image size does not match its pixels");
    }
    if (options.want_audio && ex->audio.sample_rate <= 0) Fail("audio without a sample rate");
  }
  return 0;
}
