// The generated, learnable data set behind the demo and the tests: pictures of one colored
// shape (circle, square, triangle, cross) of some size at one of nine places on a noisy
// background, captions that say exactly that, and a tone whose pitch names the color.
// Example `index` of seed `seed` is always the same picture, caption and tone.
//
//   ShapesOptions opt;  opt.image_size = 32;
//   ShapeExample ex = GenerateShape(/*seed=*/1, /*index=*/7, opt);
//   ex.caption  // "a small red circle at the top left"
//   ex.image    // 32x32 RGB
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/audio_codec.h"
#include "train/image_codec.h"

namespace mosaic::train {

struct ShapesOptions {
  int image_size = 32;
  int audio_frames = 0;  // 0: no audio; else a tone long enough for this many 10 ms frames
  int sample_rate = 16000;
};

struct ShapeExample {
  std::string name;  // "shapes-<seed>-<index>"
  Image image;
  std::string caption;
  Audio audio;  // empty unless audio_frames > 0
};

ShapeExample GenerateShape(uint64_t seed, int64_t index, const ShapesOptions& options);

// Every caption GenerateShape can write, in a fixed order: the corpus the shapes tokenizer
// is trained on.
std::vector<std::string> AllShapeCaptions();

// The words the captions are made of, for documentation and tests.
const std::vector<std::string>& ShapeColorNames();
const std::vector<std::string>& ShapeKindNames();

}  // namespace mosaic::train
