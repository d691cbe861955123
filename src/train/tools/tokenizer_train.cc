// mosaic-tokenizer-train: trains the sentencepiece model for the generated shapes captions.
// This is how configs/tokenizers/shapes.model was made (the corpus is every caption the
// generator can write, in a fixed order, so the result is the same on every run):
//
//   build/src/train/mosaic-tokenizer-train -o configs/tokenizers/shapes.model --vocab-size 128
#include <algorithm>
#include <iostream>

#include <CLI/CLI.hpp>

#include "train/shapes_dataset.h"
#include "train/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{"Train the sentencepiece tokenizer of the generated shapes captions"};
  std::string out = "configs/tokenizers/shapes.model";
  mosaic::train::TokenizerTrainOptions options;
  app.add_option("-o,--output", out, "where to write the model")->capture_default_str();
  app.add_option("--vocab-size", options.vocab_size, "pieces in the vocabulary")
      ->capture_default_str()
      ->check(CLI::Range(8, 100000));
  app.add_option("--model-type", options.model_type, "sentencepiece model type")
      ->capture_default_str()
      ->check(CLI::IsMember({"unigram", "bpe", "word", "char"}));
  CLI11_PARSE(app, argc, argv);
  mosaic::Status s = mosaic::train::TrainTokenizer(mosaic::train::AllShapeCaptions(), options, out);
  if (!s.ok()) {
    std::cerr << "mosaic-tokenizer-train: " << s.message() << "\n";
    return 2;
  }
  auto tok = mosaic::train::Tokenizer::Load(out);
  if (!tok.ok()) {
    std::cerr << "mosaic-tokenizer-train: " << tok.status().message() << "\n";
    return 1;
  }
  size_t longest = 0;
  for (const std::string& caption : mosaic::train::AllShapeCaptions()) {
    longest = std::max<size_t>(longest, tok->EncodedLength(caption, 1 << 20));
  }
  std::cout << "wrote " << out << " (" << tok->vocab_size() << " pieces; the longest caption is "
            << longest << " tokens with bos and eos)\n";
  return 0;
}
