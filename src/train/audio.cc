// Audio codecs over libsndfile and log-mel features over torch::stft (see audio.h).
#include "train/audio.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

double HzToMel(double hz) {
  return 2595.0 * std::log10(1.0 + hz / 700.0);
}
double MelToHz(double mel) {
  return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0);
}

// (n_mels, n_fft/2+1) triangular filters, HTK scale.
torch::Tensor MelFilterBank(int n_mels, int n_fft, int sample_rate) {
  const int bins = n_fft / 2 + 1;
  const double mel_max = HzToMel(sample_rate / 2.0);
  std::vector<double> hz(n_mels + 2);
  for (int i = 0; i < n_mels + 2; ++i)
    hz[i] = MelToHz(mel_max * i / (n_mels + 1));
  auto fb = torch::zeros({n_mels, bins});
  auto a = fb.accessor<float, 2>();
  for (int m = 0; m < n_mels; ++m) {
    for (int k = 0; k < bins; ++k) {
      double f = static_cast<double>(k) * sample_rate / n_fft;
      double up = (f - hz[m]) / (hz[m + 1] - hz[m]);
      double down = (hz[m + 2] - f) / (hz[m + 2] - hz[m + 1]);
      a[m][k] = static_cast<float>(std::max(0.0, std::min(up, down)));
    }
  }
  return fb;
}

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

torch::Tensor LogMelSpectrogram(const Audio& audio, int n_mels, int frames) {
  torch::NoGradGuard no_grad;
  const int rate = std::max(audio.sample_rate, 1);
  const int hop = std::max(rate / 100, 1);  // 10 ms
  const int win = std::max(rate / 40, 2);   // 25 ms
  int n_fft = 1;
  while (n_fft < win)
    n_fft *= 2;
  // Exactly frames * hop samples, so stft (centered) gives frames + 1 frames; drop the last.
  auto wave = torch::zeros({static_cast<int64_t>(frames) * hop});
  const int64_t n = std::min<int64_t>(wave.size(0), static_cast<int64_t>(audio.samples.size()));
  if (n > 0) {
    std::memcpy(wave.data_ptr<float>(), audio.samples.data(), static_cast<size_t>(n) * 4);
  }
  auto window = torch::hann_window(win);
  auto spec = torch::stft(wave, n_fft, hop, win, window, /*center=*/true, "reflect",
                          /*normalized=*/false, /*onesided=*/true, /*return_complex=*/true);
  auto power = spec.abs().pow(2).narrow(1, 0, frames);                  // (n_fft/2+1, frames)
  auto mel = torch::matmul(MelFilterBank(n_mels, n_fft, rate), power);  // (n_mels, frames)
  auto log_mel = torch::clamp_min(mel, 1e-10).log10();
  log_mel = torch::maximum(log_mel, log_mel.max() - 8.0);
  return (log_mel + 4.0) / 4.0;
}

}  // namespace mosaic::train
