// CLIP's byte-level BPE tokenizer (vocab.json + merges.txt), token for token what transformers'
// CLIPTokenizer computes (checked in tests/interop/clip_tokenizer_test.cc):
//  1. the special tokens <|startoftext|> / <|endoftext|> are cut out of the raw text;
//  2. the rest is normalized: NFC, every run of Unicode white space -> one space, lowercase
//     (per code point, as Rust's char::to_lowercase);
//  3. pre-tokenized by CLIP's pattern 's|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
//     (white space between pieces is dropped), then by GPT-2's pattern (ByteLevel's use_regex),
//     which only splits lowercased "<|endoftext|>" text into "<|", "endoftext", "|>";
//  4. each piece's UTF-8 bytes mapped to GPT-2's printable byte alphabet, "</w>" appended to its
//     last symbol, and merged by BPE (lowest merges.txt rank first);
//  5. [bos] ids [eos], cut so that eos stays last, padded with the pad id (<|endoftext|>).
//
//   MOSAIC_ASSIGN_OR_RETURN(ClipTokenizer tok, ClipTokenizer::LoadFolder("hf-clip-folder"));
//   std::vector<int64_t> ids = tok.Encode("A photo of a cat", /*seq_len=*/77);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"

namespace mosaic::interop {

class ClipTokenizer {
 public:
  // vocab.json: {"token": id, ...}; merges.txt: "a b" per line (a "#version" first line is
  // skipped). The vocab must hold <|startoftext|> and <|endoftext|>.
  static StatusOr<ClipTokenizer> Load(const std::string& vocab_path,
                                      const std::string& merges_path);
  // folder/vocab.json + folder/merges.txt (a Hugging Face CLIP folder).
  static StatusOr<ClipTokenizer> LoadFolder(const std::string& folder);

  // The BPE ids of `text` without bos/eos (special tokens in the text become their ids).
  std::vector<int64_t> EncodeIds(const std::string& text) const;
  // [bos] ids [eos] cut to seq_len (eos kept last), padded to seq_len with pad_id.
  std::vector<int64_t> Encode(const std::string& text, int seq_len) const;
  // Text back from ids (HF's decode): specials dropped, "</w>" -> " ", bytes restored, trimmed.
  std::string Decode(const std::vector<int64_t>& ids) const;
  // The pre-tokenized pieces of `text` (after normalization), for tests and debugging.
  std::vector<std::string> Pieces(const std::string& text) const;

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return eos_id_; }
  int64_t unk_id() const { return eos_id_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }

 private:
  ClipTokenizer() = default;
  void Bpe(const std::string& piece, std::vector<int64_t>* out) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<int64_t, std::string> tokens_;  // id -> token
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::vector<std::string> byte_symbol_;  // 256 entries: GPT-2's bytes_to_unicode, UTF-8
  int64_t bos_id_ = -1, eos_id_ = -1;
};

}  // namespace mosaic::interop
