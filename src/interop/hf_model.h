// Hugging Face `transformers` model folders (config.json + safetensors, sharded or not) in and
// out of Mosaic: CLIPModel (vision + text towers + contrastive loss), LlamaForCausalLM (llm +
// next-token loss) and LlavaForConditionalGeneration (CLIP tower -> mlp2 projector -> Llama,
// the image as the LLM's prefix).
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

#include "core/json_reader.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "interop/safetensors.h"
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

}  // namespace mosaic::interop
