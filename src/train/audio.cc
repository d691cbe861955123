// Log-mel features over torch::stft (see audio.h).
#include "train/audio.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace mosaic::train {
namespace {

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
