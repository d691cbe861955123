// The 32-byte header in front of every checkpoint (layout in checkpoint.h), without torch: the
// part of a checkpoint that is parsed before anything is trusted, so that it can be fuzzed in
// the sanitizer build (tests/fuzz, fuzz_checkpoint_header), which has no libtorch.
//
//   std::string file = CheckpointHeader(payload) + payload;
//   Status s = VerifyCheckpointBytes(file, "runs/a/step-00000100.ckpt");  // OK: payload at 32
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace mosaic::train {

constexpr uint32_t kCheckpointVersion = 1;
constexpr size_t kCheckpointHeaderSize = 32;

// Magic, version, CRC-32 and size of `payload`.
std::string CheckpointHeader(const std::string& payload);

// The header check (size, magic, version, payload size, checksum) on a whole file in memory:
// OK, or InvalidArgument prefixed with `name` saying why the file is refused. On OK the
// payload is bytes[kCheckpointHeaderSize, bytes.size()).
Status VerifyCheckpointBytes(const std::string& bytes, const std::string& name);

}  // namespace mosaic::train
