// Image files in and out: JPEG through libjpeg-turbo, PNG through libpng, always as 8-bit RGB.
// Used by the data readers (decode what users bring) and by tests and tools that write real
// image files.
//
//   MOSAIC_ASSIGN_OR_RETURN(Image img, DecodeImage(bytes, "shard.tar:cat.jpg"));
//   img.at(y, x, 0);  // red channel of pixel (x, y)
//   MOSAIC_ASSIGN_OR_RETURN(std::string png, EncodePng(img));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace mosaic::train {

// 8-bit RGB, rows top to bottom, pixels interleaved: pixels[(y * width + x) * 3 + c].
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int w, int h) : width(w), height(h), pixels(static_cast<size_t>(w) * h * 3, 0) {}
  uint8_t& at(int y, int x, int c) { return pixels[(static_cast<size_t>(y) * width + x) * 3 + c]; }
  uint8_t at(int y, int x, int c) const {
    return pixels[(static_cast<size_t>(y) * width + x) * 3 + c];
  }
};

// Images larger than this are refused before any pixel memory is allocated: a damaged or
// hostile header can claim 65500 x 65500 pixels (12 GB of RGB) in a few bytes.
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;  // 8192 x 8192, 192 MiB of RGB

// Decodes a JPEG or PNG (recognized by its signature, not its name). Grayscale, palette,
// 16-bit and alpha images are converted to 8-bit RGB. `name` prefixes every error.
StatusOr<Image> DecodeImage(const std::string& bytes, const std::string& name);

StatusOr<std::string> EncodeJpeg(const Image& image, int quality = 92);
StatusOr<std::string> EncodePng(const Image& image);

}  // namespace mosaic::train
