// Audio for the audio encoder: the files (audio_codec.h: DecodeAudio, EncodeWav) and the
// log-mel features it consumes.
//
//   MOSAIC_ASSIGN_OR_RETURN(Audio a, DecodeAudio(bytes, "clip.wav"));
//   torch::Tensor mel = LogMelSpectrogram(a, /*n_mels=*/80, /*frames=*/100);  // (80, 100)
#pragma once

#include <torch/torch.h>

#include "train/audio_codec.h"

namespace mosaic::train {

// Log-mel features, Whisper-style: 25 ms Hann windows every 10 ms at the audio's own rate,
// an HTK mel filter bank from 0 Hz to Nyquist, log10 clamped to 8 decades under the maximum,
// scaled to about [-1, 1]. Cropped or zero-padded to exactly `frames` frames.
torch::Tensor LogMelSpectrogram(const Audio& audio, int n_mels, int frames);  // (n_mels, frames)

}  // namespace mosaic::train
