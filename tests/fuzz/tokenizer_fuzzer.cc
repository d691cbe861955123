// libFuzzer target for tokenizer input: any bytes (invalid UTF-8, NULs, huge words) as a
// caption, encoded with the shipped shapes.model at a sequence length taken from the first
// byte. Every encoding has exactly seq_len ids, all inside the vocabulary, bos first (when it
// fits) and EncodedLength real ids; Decode takes them back without crashing.
//
//   build-asan/tests/fuzz/fuzz_tokenizer -max_total_time=60 tests/fuzz/corpus/tokenizer
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "train/tokenizer.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "fuzz invariant broken: %s\n", what);
  abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const mosaic::train::Tokenizer tok = [] {
    auto t = mosaic::train::Tokenizer::Load(MOSAIC_SOURCE_DIR "/configs/tokenizers/shapes.model");
    if (!t.ok()) Fail("cannot load shapes.model");
    return std::move(*t);
  }();
  if (size == 0) return 0;
  const int seq_len = 1 + data[0] % 64;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<int64_t> ids = tok.Encode(text, seq_len);
  if (static_cast<int>(ids.size()) != seq_len) Fail("wrong length");
  for (int64_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) Fail("id outside the vocabulary");
  }
  if (tok.bos_id() >= 0 && ids[0] != tok.bos_id()) Fail("bos not first");
  const int real = tok.EncodedLength(text, seq_len);
  if (real < 1 || real > seq_len) Fail("EncodedLength out of range");
  for (int i = real; i < seq_len; ++i) {
    if (ids[i] != tok.pad_id()) Fail("not padded after EncodedLength ids");
  }
  if (tok.eos_id() >= 0 && seq_len >= 2 && ids[real - 1] != tok.eos_id()) Fail("eos not last");
  (void)tok.Decode(ids);
  return 0;
}
