// Audio in and out: WAV (and any format libsndfile reads) decoded to mono float samples, WAV
// written for tests and tools, and the log-mel features the audio encoder consumes.
//
//   MOSAIC_ASSIGN_OR_RETURN(Audio a, DecodeAudio(bytes, "clip.wav"));
//   torch::Tensor mel = LogMelSpectrogram(a, /*n_mels=*/80, /*frames=*/100);  // (80, 100)
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/status.h"

namespace mosaic::train {

struct Audio {
  int sample_rate = 0;
  std::vector<float> samples;  // mono, in [-1, 1]; multi-channel input is averaged
};

// Decodes a WAV/FLAC/OGG... held in memory through libsndfile's virtual I/O.
StatusOr<Audio> DecodeAudio(const std::string& bytes, const std::string& name);
// 16-bit PCM WAV.
StatusOr<std::string> EncodeWav(const Audio& audio);

// Log-mel features, Whisper-style: 25 ms Hann windows every 10 ms at the audio's own rate,
// an HTK mel filter bank from 0 Hz to Nyquist, log10 clamped to 8 decades under the maximum,
// scaled to about [-1, 1]. Cropped or zero-padded to exactly `frames` frames.
torch::Tensor LogMelSpectrogram(const Audio& audio, int n_mels, int frames);  // (n_mels, frames)

// Samples needed for `frames` frames at `sample_rate` (10 ms hop).
int SamplesForFrames(int frames, int sample_rate);

}  // namespace mosaic::train
