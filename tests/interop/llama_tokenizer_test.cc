// Llama's sentencepiece tokenizer (train::Tokenizer over libsentencepiece) against transformers'
// LlamaTokenizer on the varied corpus of make_tokenizer_reference.py, which trains a small model
// with Llama's settings (byte fallback, split digits, dummy prefix) and records HF's ids.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/file_io.h"
#include "train/tokenizer.h"

namespace mosaic {
namespace {

struct Case {
  std::string text;
  std::vector<int64_t> hf_ids;  // transformers' ids, no bos/eos
};

std::vector<Case> LoadCases(const std::string& dir) {
  auto expected = LoadJsonFile(dir + "/expected.json");
  EXPECT_TRUE(expected.ok()) << expected.status().message();
  std::vector<Case> cases;
  if (!expected.ok()) return cases;
  for (const auto& c : (*expected)["cases"]) {
    cases.push_back({c["text"].get<std::string>(), c["ids"].get<std::vector<int64_t>>()});
  }
  return cases;
}

// The pieces between bos and eos.
std::vector<int64_t> Pieces(const train::Tokenizer& tok, const std::string& text) {
  const int n = tok.EncodedLength(text, 1 << 20);
  std::vector<int64_t> ids = tok.Encode(text, n);  // [bos] pieces [eos]
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_EQ(ids.back(), tok.eos_id());
  return std::vector<int64_t>(ids.begin() + 1, ids.end() - 1);
}

bool StartsWithSpace(const std::string& text) {
  return !text.empty() && (text[0] == ' ' || text.rfind("\xe2\x96\x81", 0) == 0);
}

const std::string kDir = std::string(MOSAIC_INTEROP_REFERENCE_DIR) + "/llama-tokenizer";

TEST(LlamaTokenizer, MatchesTransformersTokenForToken) {
  auto tok = train::Tokenizer::Load(kDir + "/tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  const std::vector<Case> cases = LoadCases(kDir);
  int leading_space = 0;
  for (const Case& c : cases) {
    EXPECT_EQ(Pieces(*tok, c.text), c.hf_ids) << "text: " << c.text;
    leading_space += StartsWithSpace(c.text);
  }
  EXPECT_GE(cases.size(), 25u);
  EXPECT_GE(leading_space, 5);  // the corpus exercises the dummy-prefix rule
}

TEST(LlamaTokenizer, SentencepieceRuleAlwaysAddsTheDummyPrefix) {
  auto tok = train::Tokenizer::Load(kDir + "/tokenizer.model", train::DummyPrefix::kSentencepiece);
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  int differ = 0;
  for (const Case& c : LoadCases(kDir)) {
    const std::vector<int64_t> pieces = Pieces(*tok, c.text);
    if (!StartsWithSpace(c.text)) {
      EXPECT_EQ(pieces, c.hf_ids) << "text: " << c.text;
      continue;
    }
    // libsentencepiece adds "▁" before a text that starts with one too: one more piece ("▁")
    // at the front, the rest identical (the model has no "▁▁" piece).
    ASSERT_EQ(pieces.size(), c.hf_ids.size() + 1) << "text: " << c.text;
    EXPECT_EQ(std::vector<int64_t>(pieces.begin() + 1, pieces.end()), c.hf_ids) << c.text;
    ++differ;
  }
  EXPECT_GE(differ, 5);
}

}  // namespace
}  // namespace mosaic
