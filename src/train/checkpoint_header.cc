// Checkpoint header encode and check (see checkpoint_header.h; layout in checkpoint.h).
#include "train/checkpoint_header.h"

#include <zlib.h>

#include <cstdio>
#include <cstring>

namespace mosaic::train {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'S', 'A', 'I', 'C', 'K', 'P'};

void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i)
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
uint64_t GetLe(const std::string& in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  return v;
}
uint32_t Crc32(const char* data, size_t size) {
  return static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(data), size));
}

}  // namespace

std::string CheckpointHeader(const std::string& payload) {
  std::string header;
  header.reserve(kCheckpointHeaderSize);
  header.append(kMagic, sizeof(kMagic));
  PutLe(&header, kCheckpointVersion, 4);
  PutLe(&header, Crc32(payload.data(), payload.size()), 4);
  PutLe(&header, payload.size(), 8);
  PutLe(&header, 0, 8);
  return header;
}

Status VerifyCheckpointBytes(const std::string& bytes, const std::string& name) {
  if (bytes.size() < kCheckpointHeaderSize) {
    return InvalidArgument(name + ": truncated checkpoint (" + std::to_string(bytes.size()) +
                           " bytes, shorter than its " + std::to_string(kCheckpointHeaderSize) +
                           "-byte header)");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return InvalidArgument(name + ": not a Mosaic checkpoint (bad magic)");
  }
  const uint32_t version = static_cast<uint32_t>(GetLe(bytes, 8, 4));
  if (version != kCheckpointVersion) {
    return InvalidArgument(name + ": checkpoint format version " + std::to_string(version) +
                           ", this build reads version " + std::to_string(kCheckpointVersion));
  }
  const uint32_t stored_crc = static_cast<uint32_t>(GetLe(bytes, 12, 4));
  const uint64_t size = GetLe(bytes, 16, 8);
  const uint64_t have = bytes.size() - kCheckpointHeaderSize;
  if (have != size) {
    return InvalidArgument(name + ": " + (have < size ? "truncated" : "corrupt") +
                           " checkpoint (header says " + std::to_string(size) +
                           " payload bytes, file has " + std::to_string(have) + ")");
  }
  const uint32_t crc = Crc32(bytes.data() + kCheckpointHeaderSize, size);
  if (crc != stored_crc) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "checksum mismatch: stored %08x, computed %08x", stored_crc,
                  crc);
    return InvalidArgument(name + ": corrupt checkpoint (" + buf + ")");
  }
  return Status::Ok();
}

}  // namespace mosaic::train
