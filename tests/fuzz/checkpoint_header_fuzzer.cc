// libFuzzer target for the checkpoint header (src/train/checkpoint_header.h), the part of a
// checkpoint parsed before anything in it is trusted. Any bytes: OK or a clear error, never a
// crash. And two properties on every input: the input taken as a payload behind a fresh
// header verifies; with one byte of its magic, version, checksum, size or payload changed it
// does not.
//
//   build-asan/tests/fuzz/fuzz_checkpoint_header -max_total_time=60
//   tests/fuzz/corpus/checkpoint_header
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "train/checkpoint_header.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "fuzz invariant broken: %s\n", what);
  abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using mosaic::train::kCheckpointHeaderSize;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  mosaic::Status s = mosaic::train::VerifyCheckpointBytes(bytes, "input");
  if (!s.ok() && s.message().rfind("input: ", 0) != 0) Fail("error does not name the file");
  if (s.ok() &&
      bytes.substr(0, 24) !=
          mosaic::train::CheckpointHeader(bytes.substr(kCheckpointHeaderSize)).substr(0, 24)) {
    Fail("accepted a header that differs from the payload's own");
  }

  std::string file = mosaic::train::CheckpointHeader(bytes) + bytes;
  if (!mosaic::train::VerifyCheckpointBytes(file, "fresh").ok()) Fail("fresh file refused");
  // One changed byte, anywhere but the reserved field (bytes 24..31, not checked).
  size_t at = size == 0 ? 0 : (data[0] * 131u + size) % (24 + size);
  if (at >= 24) at += 8;
  file[at] = static_cast<char>(file[at] ^ (1 + (size % 255)));
  if (mosaic::train::VerifyCheckpointBytes(file, "damaged").ok()) Fail("damaged file accepted");
  return 0;
}
