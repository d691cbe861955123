// JPEG and PNG codecs over libjpeg-turbo and libpng (see image_codec.h).
#include "train/image_codec.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include <jpeglib.h>
#include <png.h>

namespace mosaic::train {
namespace {

// Note [libjpeg errors]: libjpeg reports fatal errors through error_exit, which must not
// return. We longjmp back to the caller's setjmp. Everything with a destructor is created
// before setjmp so that the jump skips no destructor.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void JpegSilence(j_common_ptr, int) {}  // warnings (e.g. extraneous bytes) are not fatal

bool IsJpeg(const std::string& b) {
  return b.size() >= 3 && static_cast<uint8_t>(b[0]) == 0xFF &&
         static_cast<uint8_t>(b[1]) == 0xD8 && static_cast<uint8_t>(b[2]) == 0xFF;
}
bool IsPng(const std::string& b) {
  return b.size() >= 8 && png_sig_cmp(reinterpret_cast<png_const_bytep>(b.data()), 0, 8) == 0;
}

// Empty, or why an image of these dimensions is refused.
std::string TooLarge(uint64_t width, uint64_t height) {
  if (width * height <= static_cast<uint64_t>(kMaxImagePixels)) return "";
  return "image is " + std::to_string(width) + "x" + std::to_string(height) +
         " pixels, more than the limit of " + std::to_string(kMaxImagePixels);
}

// Decodes into `out`; returns an empty string on success, else libjpeg's message.
std::string DecodeJpegInto(const std::string& bytes, Image* out) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  std::memset(err.message, 0, sizeof(err.message));
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = JpegErrorExit;
  err.mgr.emit_message = JpegSilence;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return err.message;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (std::string big = TooLarge(cinfo.image_width, cinfo.image_height); !big.empty()) {
    jpeg_destroy_decompress(&cinfo);
    return big;
  }
  cinfo.out_color_space = JCS_RGB;  // grayscale and YCbCr both come out as RGB
  jpeg_start_decompress(&cinfo);
  if (cinfo.output_components != 3) {
    jpeg_destroy_decompress(&cinfo);
    return "unsupported JPEG color space";
  }
  out->width = static_cast<int>(cinfo.output_width);
  out->height = static_cast<int>(cinfo.output_height);
  out->pixels.resize(static_cast<size_t>(out->width) * out->height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->pixels.data() + static_cast<size_t>(cinfo.output_scanline) * out->width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return "";
}

}  // namespace

StatusOr<Image> DecodeImage(const std::string& bytes, const std::string& name) {
  if (bytes.empty()) return InvalidArgument(name + ": empty image file");
  Image image;
  if (IsJpeg(bytes)) {
    std::string error = DecodeJpegInto(bytes, &image);
    if (!error.empty()) return InvalidArgument(name + ": cannot decode JPEG: " + error);
  } else if (IsPng(bytes)) {
    // libpng's simplified API: no setjmp, conversions done by the library.
    png_image png;
    std::memset(&png, 0, sizeof(png));
    png.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) {
      std::string msg = png.message;
      png_image_free(&png);
      return InvalidArgument(name + ": cannot decode PNG: " + msg);
    }
    if (std::string big = TooLarge(png.width, png.height); !big.empty()) {
      png_image_free(&png);
      return InvalidArgument(name + ": cannot decode PNG: " + big);
    }
    png.format = PNG_FORMAT_RGB;
    image.width = static_cast<int>(png.width);
    image.height = static_cast<int>(png.height);
    image.pixels.resize(PNG_IMAGE_SIZE(png));
    if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
      std::string msg = png.message;
      png_image_free(&png);
      return InvalidArgument(name + ": cannot decode PNG: " + msg);
    }
  } else {
    return InvalidArgument(name + ": not a JPEG or PNG image (unrecognized signature)");
  }
  if (image.width <= 0 || image.height <= 0) {
    return InvalidArgument(name + ": image has no pixels");
  }
  return image;
}

StatusOr<std::string> EncodeJpeg(const Image& image, int quality) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return InvalidArgument("EncodeJpeg: image size does not match its pixels");
  }
  jpeg_compress_struct cinfo;
  JpegError err;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  std::string out;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = JpegErrorExit;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buffer);
    return Internal(std::string("EncodeJpeg: ") + err.message);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(image.pixels.data()) +
                   static_cast<size_t>(cinfo.next_scanline) * image.width * 3;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  out.assign(reinterpret_cast<const char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return out;
}

StatusOr<std::string> EncodePng(const Image& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return InvalidArgument("EncodePng: image size does not match its pixels");
  }
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  // First call measures, second writes.
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr)) {
    return Internal(std::string("EncodePng: ") + png.message);
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&png, out.data(), &size, 0, image.pixels.data(), 0, nullptr)) {
    return Internal(std::string("EncodePng: ") + png.message);
  }
  out.resize(size);
  return out;
}

}  // namespace mosaic::train
