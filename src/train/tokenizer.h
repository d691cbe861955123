// Text to token ids through a sentencepiece model (Debian's libsentencepiece) or, given a folder
// with vocab.json + merges.txt (a Hugging Face CLIP folder), CLIP's byte-level BPE
// (interop/clip_tokenizer.h), padded to the text module's sequence length; and training such a model from a corpus (how
// configs/tokenizers/shapes.model was made: `mosaic-tokenizer-train`, docs/training.md).
//
//   MOSAIC_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Load("configs/tokenizers/shapes.model"));
//   std::vector<int64_t> ids = tok.Encode("a red circle at the top left", /*seq_len=*/16);
//   // [bos, ..., eos, pad, pad, ...]; ids[i] == tok.pad_id() past the end
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace sentencepiece {
class SentencePieceProcessor;
}
namespace mosaic::interop {
class ClipTokenizer;
}

namespace mosaic::train {

// Where a sentencepiece model with a dummy prefix ("▁" before the text, Llama's setting) and a
// text that already starts with a space (or "▁") part ways:
//  - kTransformers (default): as transformers' LlamaTokenizer (Metaspace, prepend_scheme
//    "first"): no prefix is added to such a text, so " a" and "a" both give "▁a".
//  - kSentencepiece: as libsentencepiece and Meta's reference: the prefix is always added,
//    " a" gives "▁", "▁a".
// The two agree on every other text, and on every text for a model that strips leading white
// space (remove_extra_whitespaces, as TrainTokenizer's models do); CLIP folders ignore the rule.
enum class DummyPrefix { kTransformers, kSentencepiece };

class Tokenizer {
 public:
  // A sentencepiece model file, or a folder holding CLIP's vocab.json + merges.txt.
  static StatusOr<Tokenizer> Load(const std::string& model_path,
                                  DummyPrefix rule = DummyPrefix::kTransformers);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // [bos] pieces [eos] then pad up to `seq_len`; a long text is cut so that eos stays last.
  std::vector<int64_t> Encode(const std::string& text, int seq_len) const;
  // Number of non-pad ids Encode would produce (bos + pieces + eos, at most seq_len).
  int EncodedLength(const std::string& text, int seq_len) const;
  std::string Decode(const std::vector<int64_t>& ids) const;

  int vocab_size() const;
  int pad_id() const { return pad_id_; }
  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  const std::string& path() const { return path_; }

 private:
  Tokenizer();
  // sentencepiece's pieces for `text` (no bos/eos), under the rule Load was given.
  std::vector<int> Pieces(const std::string& text) const;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  // The same model without its dummy prefix: set when the rule is kTransformers and the model
  // keeps leading white space.
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_no_prefix_;
  std::shared_ptr<const interop::ClipTokenizer> clip_;  // set for a CLIP BPE folder
  std::string path_;
  int pad_id_ = 0, bos_id_ = 1, eos_id_ = 2;
};

struct TokenizerTrainOptions {
  int vocab_size = 128;
  std::string model_type = "bpe";  // sentencepiece's: unigram, bpe, word, char
};

// Trains a sentencepiece model on `sentences` and writes it atomically to `model_path`.
// Ids: pad 0, unk 1, bos 2, eos 3. Deterministic for the same sentences and options.
Status TrainTokenizer(const std::vector<std::string>& sentences,
                      const TokenizerTrainOptions& options, const std::string& model_path);

}  // namespace mosaic::train
