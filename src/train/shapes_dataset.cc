// Procedural shapes data set (see shapes_dataset.h).
#include "train/shapes_dataset.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace mosaic::train {
namespace {

struct Color {
  const char* name;
  uint8_t r, g, b;
  double tone_hz;  // pitch of the tone that goes with this color
};
const Color kColors[] = {
    {"red", 220, 40, 40, 330.0},      {"green", 40, 200, 60, 495.0},
    {"blue", 50, 80, 230, 742.0},     {"yellow", 230, 220, 50, 1113.0},
    {"purple", 160, 60, 200, 1670.0}, {"white", 235, 235, 235, 2505.0},
};
const char* kShapes[] = {"circle", "square", "triangle", "cross"};
const char* kSizes[] = {"small", "large"};
const char* kRows[] = {"top", "middle", "bottom"};
const char* kCols[] = {"left", "center", "right"};
constexpr int kNumColors = 6, kNumShapes = 4, kNumSizes = 2;

std::string Caption(int size, int color, int shape, int row, int col) {
  std::string where = (row == 1 && col == 1)
                          ? "in the center"
                          : std::string("at the ") + kRows[row] + " " + kCols[col];
  return std::string("a ") + kSizes[size] + " " + kColors[color].name + " " + kShapes[shape] + " " +
         where;
}

// Whether the point (u, v), relative to the shape's center in units of its half size, is
// inside the shape.
bool Inside(int shape, double u, double v) {
  switch (shape) {
    case 0:  // circle
      return u * u + v * v <= 1.0;
    case 1:  // square
      return std::abs(u) <= 0.85 && std::abs(v) <= 0.85;
    case 2:  // triangle, apex up: v in [-1, 1] downwards, half width grows with v
      return v >= -1.0 && v <= 0.8 && std::abs(u) <= (v + 1.0) * 0.5556;
    default:  // cross
      return (std::abs(u) <= 0.33 && std::abs(v) <= 1.0) ||
             (std::abs(v) <= 0.33 && std::abs(u) <= 1.0);
  }
}

// A generator seeded from (seed, index) alone, so example i does not depend on others.
std::mt19937_64 ExampleRng(uint64_t seed, int64_t index) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(index), static_cast<uint32_t>(uint64_t(index) >> 32),
                    0x5a17u};
  return std::mt19937_64(seq);
}

// Uniform in [0, 1) from the raw generator (std distributions differ between libraries).
double Uniform(std::mt19937_64& rng) {
  return (rng() >> 11) * (1.0 / 9007199254740992.0);
}
int Pick(std::mt19937_64& rng, int n) {
  return static_cast<int>(rng() % static_cast<uint64_t>(n));
}

}  // namespace

const std::vector<std::string>& ShapeColorNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Color& c : kColors)
      v.push_back(c.name);
    return v;
  }();
  return names;
}

const std::vector<std::string>& ShapeKindNames() {
  static const std::vector<std::string> names(std::begin(kShapes), std::end(kShapes));
  return names;
}

std::vector<std::string> AllShapeCaptions() {
  std::vector<std::string> out;
  for (int size = 0; size < kNumSizes; ++size)
    for (int color = 0; color < kNumColors; ++color)
      for (int shape = 0; shape < kNumShapes; ++shape)
        for (int row = 0; row < 3; ++row)
          for (int col = 0; col < 3; ++col)
            out.push_back(Caption(size, color, shape, row, col));
  return out;
}

ShapeExample GenerateShape(uint64_t seed, int64_t index, const ShapesOptions& options) {
  std::mt19937_64 rng = ExampleRng(seed, index);
  const int size = Pick(rng, kNumSizes), color = Pick(rng, kNumColors);
  const int shape = Pick(rng, kNumShapes), row = Pick(rng, 3), col = Pick(rng, 3);
  const int S = options.image_size;

  ShapeExample ex;
  ex.name = "shapes-" + std::to_string(seed) + "-" + std::to_string(index);
  ex.caption = Caption(size, color, shape, row, col);

  // Geometry in pixels: the cell center jittered a little, the half size jittered too.
  const double half = S * (size == 0 ? 0.10 : 0.16) * (0.9 + 0.2 * Uniform(rng));
  const double cx = S * (col * 2 + 1) / 6.0 + S * 0.05 * (Uniform(rng) - 0.5);
  const double cy = S * (row * 2 + 1) / 6.0 + S * 0.05 * (Uniform(rng) - 0.5);
  const int bg = 20 + Pick(rng, 40);
  const Color& c = kColors[color];
  const double shade = 0.85 + 0.3 * Uniform(rng);

  ex.image = Image(S, S);
  for (int y = 0; y < S; ++y) {
    for (int x = 0; x < S; ++x) {
      // 2x2 supersampling for soft edges.
      int hits = 0;
      for (int sy = 0; sy < 2; ++sy)
        for (int sx = 0; sx < 2; ++sx)
          hits +=
              Inside(shape, (x + 0.25 + 0.5 * sx - cx) / half, (y + 0.25 + 0.5 * sy - cy) / half);
      const double a = hits / 4.0;
      const uint8_t rgb[3] = {c.r, c.g, c.b};
      for (int ch = 0; ch < 3; ++ch) {
        double noise = (Uniform(rng) - 0.5) * 24.0;
        double v = (1 - a) * bg + a * std::min(255.0, rgb[ch] * shade) + noise;
        ex.image.at(y, x, ch) = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
      }
    }
  }

  if (options.audio_frames > 0) {
    ex.audio.sample_rate = options.sample_rate;
    const int n = SamplesForFrames(options.audio_frames, options.sample_rate);
    ex.audio.samples.resize(n);
    const double hz = c.tone_hz * (0.97 + 0.06 * Uniform(rng));
    const double phase = 2 * M_PI * Uniform(rng);
    const double loud = 0.3 + 0.4 * Uniform(rng);
    for (int i = 0; i < n; ++i) {
      double t = static_cast<double>(i) / options.sample_rate;
      double noise = (Uniform(rng) - 0.5) * 0.05;
      ex.audio.samples[i] = static_cast<float>(loud * std::sin(2 * M_PI * hz * t + phase) + noise);
    }
  }
  return ex;
}

}  // namespace mosaic::train
