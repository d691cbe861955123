// WAV/FLAC/OGG... in and out over libsndfile (see audio_codec.h).
#include "train/audio_codec.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include <sndfile.h>

namespace mosaic::train {
namespace {

// libsndfile virtual I/O over a memory buffer (read) or a growing string (write).
struct MemoryFile {
  std::string* data = nullptr;
  sf_count_t pos = 0;
};

sf_count_t VioLength(void* user) {
  return static_cast<sf_count_t>(static_cast<MemoryFile*>(user)->data->size());
}
sf_count_t VioSeek(sf_count_t offset, int whence, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? f->pos : VioLength(user);
  sf_count_t pos = base + offset;
  if (pos < 0) return -1;
  f->pos = pos;
  return pos;
}
sf_count_t VioRead(void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  sf_count_t size = VioLength(user);
  sf_count_t n = std::max<sf_count_t>(0, std::min(count, size - f->pos));
  if (n > 0) std::memcpy(ptr, f->data->data() + f->pos, static_cast<size_t>(n));
  f->pos += n;
  return n;
}
sf_count_t VioWrite(const void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  size_t end = static_cast<size_t>(f->pos + count);
  if (f->data->size() < end) f->data->resize(end);
  std::memcpy(f->data->data() + f->pos, ptr, static_cast<size_t>(count));
  f->pos += count;
  return count;
}
sf_count_t VioTell(void* user) {
  return static_cast<MemoryFile*>(user)->pos;
}

SF_VIRTUAL_IO MemoryVio() {
  SF_VIRTUAL_IO vio;
  vio.get_filelen = VioLength;
  vio.seek = VioSeek;
  vio.read = VioRead;
  vio.write = VioWrite;
  vio.tell = VioTell;
  return vio;
}

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

}  // namespace

StatusOr<Audio> DecodeAudio(const std::string& bytes, const std::string& name) {
  if (bytes.empty()) return InvalidArgument(name + ": empty audio file");
  std::string copy = bytes;  // the virtual I/O wants a mutable buffer
  MemoryFile file{&copy, 0};
  SF_VIRTUAL_IO vio = MemoryVio();
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  SndfilePtr snd(sf_open_virtual(&vio, SFM_READ, &info, &file));
  if (!snd) return InvalidArgument(name + ": cannot decode audio: " + sf_strerror(nullptr));
  if (info.channels <= 0 || info.samplerate <= 0) {
    return InvalidArgument(name + ": audio has no channels or no sample rate");
  }
  std::vector<float> interleaved(static_cast<size_t>(info.frames) * info.channels);
  sf_count_t got = sf_readf_float(snd.get(), interleaved.data(), info.frames);
  if (got != info.frames) {
    return InvalidArgument(name + ": audio is truncated (" + std::to_string(got) + " of " +
                           std::to_string(info.frames) + " frames)");
  }
  Audio audio;
  audio.sample_rate = info.samplerate;
  audio.samples.resize(static_cast<size_t>(info.frames));
  for (sf_count_t i = 0; i < info.frames; ++i) {
    float sum = 0;
    for (int c = 0; c < info.channels; ++c)
      sum += interleaved[i * info.channels + c];
    audio.samples[i] = sum / info.channels;
  }
  return audio;
}

StatusOr<std::string> EncodeWav(const Audio& audio) {
  if (audio.sample_rate <= 0) return InvalidArgument("EncodeWav: sample rate must be positive");
  std::string out;
  MemoryFile file{&out, 0};
  SF_VIRTUAL_IO vio = MemoryVio();
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = audio.sample_rate;
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  {
    SndfilePtr snd(sf_open_virtual(&vio, SFM_WRITE, &info, &file));
    if (!snd) return Internal(std::string("EncodeWav: ") + sf_strerror(nullptr));
    sf_count_t n = static_cast<sf_count_t>(audio.samples.size());
    if (sf_writef_float(snd.get(), audio.samples.data(), n) != n) {
      return Internal(std::string("EncodeWav: ") + sf_strerror(snd.get()));
    }
  }  // closing writes the final header sizes
  return out;
}

int SamplesForFrames(int frames, int sample_rate) {
  const int hop = sample_rate / 100;
  return frames * hop;
}

}  // namespace mosaic::train
