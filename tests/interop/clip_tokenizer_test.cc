// CLIP's byte-level BPE against transformers' CLIPTokenizer, token for token, on a varied corpus
// (unicode, white space, contractions, special tokens, long inputs): expected.json is written by
// make_tokenizer_reference.py (the interop_make_tokenizer_reference fixture), from a vocab and
// merges it builds locally.
#include "interop/clip_tokenizer.h"

#include <gtest/gtest.h>

#include <string>

#include "core/file_io.h"

namespace mosaic::interop {
namespace {

std::string Dir() {
  return std::string(MOSAIC_INTEROP_REFERENCE_DIR) + "/clip-tokenizer";
}

TEST(ClipTokenizer, MatchesTransformersTokenForToken) {
  auto tok = ClipTokenizer::LoadFolder(Dir());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  auto expected = LoadJsonFile(Dir() + "/expected.json");
  ASSERT_TRUE(expected.ok()) << expected.status().message();
  const int seq_len = (*expected)["seq_len"].get<int>();
  int cases = 0, tokens = 0;
  for (const auto& c : (*expected)["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(tok->EncodeIds(text), want) << "text: " << text;
    EXPECT_EQ(tok->Encode(text, seq_len),
              c["ids_" + std::to_string(seq_len)].get<std::vector<int64_t>>())
        << "text: " << text;
    ++cases;
    tokens += static_cast<int>(want.size());
  }
  EXPECT_GE(cases, 20);
  EXPECT_GT(tokens, 500);  // the long input really is long
  std::printf("%d texts, %d tokens identical\n", cases, tokens);
}

TEST(ClipTokenizer, PiecesFollowClipsPattern) {
  auto tok = ClipTokenizer::LoadFolder(Dir());
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ(tok->Pieces("I'm  HERE!!'s 42\tcaf\u00e9"),
            (std::vector<std::string>{"i", "'m", "here", "!!'", "s", "4", "2", "caf\u00e9"}));
  EXPECT_EQ(tok->Encode("", 4),
            (std::vector<int64_t>{tok->bos_id(), tok->eos_id(), tok->pad_id(), tok->pad_id()}));
}

TEST(ClipTokenizer, BadFilesAreClearErrors) {
  const std::string dir = "/tmp/mosaic_clip_tok_bad";
  ASSERT_TRUE(WriteFileAtomic(dir + ".vocab.json", R"({"a": 0})").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + ".merges.txt", "#version: 0.2\na b\n").ok());
  auto no_special = ClipTokenizer::Load(dir + ".vocab.json", dir + ".merges.txt");
  ASSERT_FALSE(no_special.ok());
  EXPECT_EQ(no_special.status().message(), dir + ".vocab.json: the vocab has no <|startoftext|>");
  ASSERT_TRUE(
      WriteFileAtomic(dir + ".vocab.json", R"({"<|startoftext|>": 0, "<|endoftext|>": 1})").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + ".merges.txt", "#version: 0.2\na b\nabc\n").ok());
  auto bad_merge = ClipTokenizer::Load(dir + ".vocab.json", dir + ".merges.txt");
  ASSERT_FALSE(bad_merge.ok());
  EXPECT_EQ(bad_merge.status().message(),
            dir + ".merges.txt: line 3: expected two symbols separated by one space");
}

}  // namespace
}  // namespace mosaic::interop
