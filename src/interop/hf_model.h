// Hugging Face `transformers` model folders (config.json + safetensors, sharded or not) in and
// out of Mosaic: CLIPModel (vision + text towers + contrastive loss), LlamaForCausalLM (llm +
// next-token loss) and LlavaForConditionalGeneration (CLIP tower -> mlp2 projector -> Llama,
// the image as the LLM's prefix), and Whisper's audio encoder (WhisperModel,
// WhisperForConditionalGeneration, WhisperForAudioClassification or WhisperEncoder folders) into
// a Mosaic audio module.
//
//   MOSAIC_ASSIGN_OR_RETURN(HfImport hf, ImportHfModel("clip-folder", torch::kCPU));
//   ModelOutput out = hf.model->forward(batch);                 // Mosaic computes what HF does
//   MOSAIC_RETURN_IF_ERROR(ExportHfModel(*hf.model, "out-folder"));  // CLIPModel.from_pretrained
//
// Every HF tensor maps onto one Mosaic parameter (q/k/v projections and SwiGLU's gate/up are
// concatenated along dim 0 into Mosaic's fused GEMMs; positions and class token gain leading
// dims); a missing, extra or mis-shaped tensor is InvalidArgument naming it. Mapping back splits
// the same way, so HF -> Mosaic -> HF is bit-identical. The architectural options HF checkpoints
// need (activation, norm eps, patch-conv bias, text pooling, tied embeddings) are ModuleSpec
// fields (core/model_spec.h); docs/interop.md lists the mapping.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/json_reader.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "interop/safetensors.h"
#include "models/audio.h"
#include "models/multimodal_model.h"

namespace mosaic::interop {

enum class HfArchitecture { kClip, kLlama, kLlava };

// The Mosaic spec of an HF config.json (CLIPModel, LlamaForCausalLM or LLaVA; others are
// InvalidArgument naming the config key). batch_size is a placeholder (8) the caller may change;
// precision is fp32. `source` names the file in errors.
StatusOr<ModelSpec> SpecFromHfConfig(const Json& config, const std::string& source);

// Which HF architecture `spec` maps onto, or InvalidArgument saying what does not fit
// (e.g. a vit with a patch-conv bias, which CLIPModel has no tensor for).
StatusOr<HfArchitecture> HfArchitectureOf(const ModelSpec& spec);

// Renames (and fuses/splits) whole state dicts: HF names -> Mosaic parameter names (as in
// MultimodalModel::named_parameters) and back. Every HF tensor must be used exactly once and
// have the shape the spec implies.
StatusOr<TensorMap> HfToMosaic(const ModelSpec& spec, const TensorMap& hf);
StatusOr<TensorMap> MosaicToHf(const ModelSpec& spec, const TensorMap& mosaic);

// OpenCLIP state dicts (open_clip.model.CLIP: visual.transformer.resblocks.*, in_proj_weight,
// c_fc/c_proj, visual.proj / text_projection as (width, output_dim)) for a CLIP spec (OpenCLIP
// has no config.json: the spec says quick_gelu or gelu, and text pool "argmax").
StatusOr<TensorMap> OpenClipToMosaic(const ModelSpec& spec, const TensorMap& open_clip);
StatusOr<TensorMap> MosaicToOpenClip(const ModelSpec& spec, const TensorMap& mosaic);
// Copies an OpenCLIP checkpoint in safetensors (open_clip_model.safetensors) into `model`.
Status LoadOpenClipWeights(const std::string& path, models::MultimodalModelImpl& model);

// The config.json `transformers` needs to build the same model.
StatusOr<Json> HfConfigFromSpec(const ModelSpec& spec);

// SpecFromHfConfig of folder/config.json.
StatusOr<ModelSpec> LoadHfSpec(const std::string& folder);

struct HfImport {
  ModelSpec spec;
  models::MultimodalModel model{nullptr};
};

// Reads folder/config.json and the weights, builds the model on `device` and copies every
// tensor in (converted to the parameter's fp32).
StatusOr<HfImport> ImportHfModel(const std::string& folder, torch::Device device);
// Copies the HF weights of `folder` into an already-built model whose spec must match them.
Status LoadHfWeights(const std::string& folder, models::MultimodalModelImpl& model);

// The model's parameters, by Mosaic name, on the CPU.
TensorMap MosaicParameters(const models::MultimodalModelImpl& model);

// Writes folder/config.json and folder/model.safetensors (or shards above max_shard_bytes > 0)
// with the weights in `dtype` (F32, BF16 or F16). The folder is created if missing.
Status ExportHfModel(const models::MultimodalModelImpl& model, const std::string& folder,
                     torch::ScalarType dtype = torch::kFloat, int64_t max_shard_bytes = 0);

// --- Whisper's audio encoder ------------------------------------------------------------------
// A Whisper folder fills one audio module of a Mosaic model (the decoder, or a classification
// head, is not read); its encoder is Mosaic's audio module with the options activation "gelu",
// key_bias false, freeze_positions true, norm_before_pool true (docs/interop.md).

// The audio module (named "audio", pool "none": Whisper's last_hidden_state) of a Whisper
// config.json (model_type "whisper"); errors name `source` and the key.
StatusOr<ModuleSpec> WhisperAudioSpec(const Json& config, const std::string& source);
// Ok when `audio` computes what Whisper's encoder computes, else InvalidArgument listing the
// options to set. An output projection (output_dim) is allowed: it is outside Whisper's encoder
// (randomly initialised on import, not written on export).
Status WhisperFits(const ModuleSpec& audio);
// Whisper tensors (under model.encoder., encoder. or no prefix) -> the audio module's parameters,
// named relative to the module ("conv1.weight"). Decoder / classification-head tensors are
// skipped and counted in *unused; missing, extra or mis-shaped encoder tensors are errors naming
// them.
StatusOr<TensorMap> WhisperToMosaic(const ModuleSpec& audio, const TensorMap& hf,
                                    int64_t* unused = nullptr);
// The module's parameters -> WhisperEncoder's names (no prefix); the k-bias rows must be zero;
// the output projection (proj.weight), which Whisper has no place for, is left out.
StatusOr<TensorMap> MosaicToWhisper(const ModuleSpec& audio, const TensorMap& mosaic);
// config.json for WhisperEncoder.from_pretrained.
Json WhisperConfigFromSpec(const ModuleSpec& audio);

struct WhisperImport {
  ModuleSpec spec;
  models::AudioEncoder encoder{nullptr};
  int64_t unused_tensors = 0;  // decoder / head tensors of the folder, not read
};
// The encoder of a Whisper folder as a standalone Mosaic audio module.
StatusOr<WhisperImport> ImportWhisperEncoder(const std::string& folder, torch::Device device);
// Writes a folder transformers' WhisperEncoder.from_pretrained loads (every tensor, no decoder).
Status ExportWhisperEncoder(const models::AudioEncoderImpl& encoder, const std::string& folder,
                            torch::ScalarType dtype = torch::kFloat);
// The audio module a Whisper folder fills in `spec`: the only one, or the one named "audio".
StatusOr<const ModuleSpec*> WhisperTarget(const ModelSpec& spec);

// What `mosaic train --init FOLDER` filled.
struct HfInitReport {
  std::vector<std::string> loaded;  // modules
  std::vector<std::string> random;  // modules (or module.parameter) left as initialised
  int64_t unused_tensors = 0;       // tensors of the folder not read
  std::string unused_what;
  std::string Summary() const;
};
// LoadHfWeights for CLIP / Llama / LLaVA folders (every module); for a Whisper folder, the
// model's audio module (WhisperTarget), whose sizes and options must fit the config, while the
// other modules keep their initialisation.
StatusOr<HfInitReport> InitFromHf(const std::string& folder, models::MultimodalModelImpl& model);

}  // namespace mosaic::interop
