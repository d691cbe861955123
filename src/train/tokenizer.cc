// Tokenizer over sentencepiece (see tokenizer.h).
#include "train/tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <sys/stat.h>

#include "core/file_io.h"
#include "interop/clip_tokenizer.h"

namespace mosaic::train {
namespace {

class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& s) : s_(s) {}
  bool done() const override { return i_ >= s_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return s_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& s_;
  size_t i_ = 0;
};

}  // namespace

Tokenizer::Tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

StatusOr<Tokenizer> Tokenizer::Load(const std::string& model_path, DummyPrefix rule) {
  Tokenizer tok;
  struct stat st;
  if (::stat(model_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    MOSAIC_ASSIGN_OR_RETURN(interop::ClipTokenizer clip,
                            interop::ClipTokenizer::LoadFolder(model_path));
    tok.clip_ = std::make_shared<const interop::ClipTokenizer>(std::move(clip));
    tok.path_ = model_path;
    tok.pad_id_ = static_cast<int>(tok.clip_->pad_id());
    tok.bos_id_ = static_cast<int>(tok.clip_->bos_id());
    tok.eos_id_ = static_cast<int>(tok.clip_->eos_id());
    return tok;
  }
  auto bytes = ReadTextFile(model_path);
  if (!bytes.ok()) return bytes.status();
  auto s = tok.sp_->LoadFromSerializedProto(*bytes);
  if (!s.ok()) {
    return InvalidArgument(model_path + ": not a sentencepiece model (" + s.ToString() + ")");
  }
  // The rules part ways only for a model that keeps leading white space (Llama's
  // remove_extra_whitespaces=false); one that strips it (what TrainTokenizer makes, e.g.
  // configs/tokenizers/shapes.model) encodes " a" as "a" under either rule, and the copy without
  // the prefix would lose the "▁" there. The probe tells the two apart without the model proto.
  std::vector<int> spaced, plain;
  if (rule == DummyPrefix::kTransformers) {
    tok.sp_->Encode(" a", &spaced).IgnoreError();
    tok.sp_->Encode("a", &plain).IgnoreError();
  }
  if (spaced != plain) {
    // NormalizerSpec is ModelProto's field 3 and add_dummy_prefix is its field 3 (a bool);
    // protobuf merges a repeated embedded message into the first, so appending
    // {normalizer_spec: {add_dummy_prefix: false}} overrides that one flag and nothing else.
    static constexpr char kNoDummyPrefix[] = {0x1a, 0x02, 0x18, 0x00};
    tok.sp_no_prefix_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
    auto s2 = tok.sp_no_prefix_->LoadFromSerializedProto(
        *bytes + std::string(kNoDummyPrefix, sizeof(kNoDummyPrefix)));
    if (!s2.ok()) return Internal(model_path + ": reloading without the dummy prefix failed (" +
                                  s2.ToString() + ")");
  }
  tok.path_ = model_path;
  // A model trained without a pad piece pads with unk; without bos/eos those are left out.
  tok.pad_id_ = tok.sp_->pad_id() >= 0 ? tok.sp_->pad_id() : tok.sp_->unk_id();
  tok.bos_id_ = tok.sp_->bos_id();
  tok.eos_id_ = tok.sp_->eos_id();
  return tok;
}

std::vector<int> Tokenizer::Pieces(const std::string& text) const {
  // transformers' Metaspace replaces spaces by "▁" and then prepends one only when the text
  // does not already start with it.
  const bool starts_with_space =
      !text.empty() && (text[0] == ' ' || text.rfind("\xe2\x96\x81", 0) == 0);
  const auto& sp = sp_no_prefix_ && starts_with_space ? sp_no_prefix_ : sp_;
  std::vector<int> pieces;
  sp->Encode(text, &pieces).IgnoreError();  // Encode fails only on an unloaded model
  return pieces;
}

std::vector<int64_t> Tokenizer::Encode(const std::string& text, int seq_len) const {
  if (clip_) return clip_->Encode(text, seq_len);
  const std::vector<int> pieces = Pieces(text);
  std::vector<int64_t> ids;
  ids.reserve(seq_len);
  if (bos_id_ >= 0) ids.push_back(bos_id_);
  const int reserve_eos = eos_id_ >= 0 ? 1 : 0;
  for (int p : pieces) {
    if (static_cast<int>(ids.size()) + reserve_eos >= seq_len) break;
    ids.push_back(p);
  }
  if (eos_id_ >= 0) ids.push_back(eos_id_);
  ids.resize(std::min<size_t>(ids.size(), seq_len));
  ids.resize(seq_len, pad_id_);
  return ids;
}

int Tokenizer::EncodedLength(const std::string& text, int seq_len) const {
  if (clip_) return std::min(static_cast<int>(clip_->EncodeIds(text).size()) + 2, seq_len);
  const std::vector<int> pieces = Pieces(text);
  int n = static_cast<int>(pieces.size()) + (bos_id_ >= 0) + (eos_id_ >= 0);
  return std::min(n, seq_len);
}

std::string Tokenizer::Decode(const std::vector<int64_t>& ids) const {
  if (clip_) return clip_->Decode(ids);
  std::vector<int> keep;
  for (int64_t id : ids) {
    if (id != pad_id_ && id != bos_id_ && id != eos_id_) keep.push_back(static_cast<int>(id));
  }
  std::string text;
  sp_->Decode(keep, &text).IgnoreError();
  return text;
}

int Tokenizer::vocab_size() const {
  if (clip_) return static_cast<int>(clip_->vocab_size());
  return sp_->GetPieceSize();
}

Status TrainTokenizer(const std::vector<std::string>& sentences,
                      const TokenizerTrainOptions& options, const std::string& model_path) {
  if (sentences.empty()) return InvalidArgument("TrainTokenizer: no sentences");
  VectorSentenceIterator it(sentences);
  std::string proto;
  std::unordered_map<std::string, std::string> args = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"hard_vocab_limit", "false"},
      {"character_coverage", "1.0"},
      {"num_threads", "1"},
      {"pad_id", "0"},
      {"unk_id", "1"},
      {"bos_id", "2"},
      {"eos_id", "3"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"minloglevel", "2"},
      {"normalization_rule_name", "identity"},  // no 200 KB NFKC table in the model
  };
  auto s = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  if (!s.ok()) return InvalidArgument("sentencepiece training failed: " + s.ToString());
  return WriteFileAtomic(model_path, proto);
}

}  // namespace mosaic::train
