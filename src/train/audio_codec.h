// Audio files in and out, without torch: WAV (and any format libsndfile reads) decoded to mono
// float samples, WAV written for tests and tools. The log-mel features are in audio.h. Kept
// apart so that the data readers build without libtorch (the data-shard fuzzer, tests/fuzz).
//
//   MOSAIC_ASSIGN_OR_RETURN(Audio a, DecodeAudio(bytes, "clip.wav"));
//   MOSAIC_ASSIGN_OR_RETURN(std::string wav, EncodeWav(a));
#pragma once

#include <string>
#include <vector>

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

// Samples needed for `frames` frames at `sample_rate` (10 ms hop).
int SamplesForFrames(int frames, int sample_rate);

}  // namespace mosaic::train
