// `mosaic export`: writes a Mosaic training checkpoint as a Hugging Face folder (config.json +
// model.safetensors) that transformers loads (CLIPModel, LlamaForCausalLM, LLaVA), an OpenCLIP
// state dict, or the model's audio module as a WhisperEncoder folder (docs/interop.md).
//
//   mosaic train --init hf/clip --steps 500 --checkpoint-dir runs/a
//   mosaic export --model hf/clip --checkpoint runs/a/step-00000500.ckpt -o finetuned/
//   python -c 'import transformers; transformers.CLIPModel.from_pretrained("finetuned")'
#include <sys/stat.h>

#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "interop/hf_model.h"
#include "interop/safetensors.h"
#include "models/multimodal_model.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace mosaic::cli {
namespace {

struct ExportFlags {
  std::string model;
  std::string checkpoint;
  std::string out;
  std::string format = "hf";
  std::string dtype = "fp32";
  std::string configs = "configs";
};

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Status Export(const ExportFlags& f) {
  // The model: an HF folder's config.json, or a spec file / zoo name.
  ModelSpec spec;
  if (IsDirectory(f.model)) {
    MOSAIC_ASSIGN_OR_RETURN(spec, interop::LoadHfSpec(f.model));
  } else {
    MOSAIC_ASSIGN_OR_RETURN(spec, LoadModelSpec(train::ResolveModelPath(f.model, f.configs)));
  }
  const ModuleSpec* audio = nullptr;
  if (f.format == "whisper") {
    // The audio module alone, as transformers' WhisperEncoder.
    MOSAIC_ASSIGN_OR_RETURN(audio, interop::WhisperTarget(spec));
    MOSAIC_RETURN_IF_ERROR(interop::WhisperFits(*audio));
  } else {
    MOSAIC_ASSIGN_OR_RETURN(interop::HfArchitecture arch, interop::HfArchitectureOf(spec));
    if (f.format == "open_clip" && arch != interop::HfArchitecture::kClip)
      return InvalidArgument("--format open_clip: the model is not a CLIP model");
  }
  const torch::ScalarType dtype = f.dtype == "bf16"   ? torch::kBFloat16
                                  : f.dtype == "fp16" ? torch::kHalf
                                                      : torch::kFloat;
  // A missing or damaged checkpoint is refused before a possibly large model is built.
  MOSAIC_RETURN_IF_ERROR(train::VerifyCheckpointFile(f.checkpoint));
  MOSAIC_ASSIGN_OR_RETURN(models::MultimodalModel model,
                          models::BuildMultimodalModel(spec, torch::kCPU));
  // The checkpoint holds the optimizer too; its moments are read and dropped.
  MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::AdamW> optimizer,
                          train::MakeAdamW(model->named_parameters(), train::AdamWConfig{}));
  train::TrainState state;
  state.model_name = spec.name;  // a checkpoint of another model is refused
  MOSAIC_RETURN_IF_ERROR(train::LoadCheckpoint(f.checkpoint, *model, *optimizer, &state));
  if (f.format == "open_clip") {
    MOSAIC_ASSIGN_OR_RETURN(interop::TensorMap t,
                            interop::MosaicToOpenClip(spec, interop::MosaicParameters(*model)));
    for (auto& [name, tensor] : t)
      tensor = tensor.to(dtype);
    MOSAIC_RETURN_IF_ERROR(interop::WriteSafetensors(f.out, t));
  } else if (f.format == "whisper") {
    auto encoder = std::dynamic_pointer_cast<models::AudioEncoderImpl>(
        model->module(model->IndexOf(audio->name)));
    if (!encoder) return Internal("module \"" + audio->name + "\" is not an audio encoder");
    MOSAIC_RETURN_IF_ERROR(interop::ExportWhisperEncoder(*encoder, f.out, dtype));
  } else {
    MOSAIC_RETURN_IF_ERROR(interop::ExportHfModel(*model, f.out, dtype));
  }
  std::cout << "wrote " << f.out << " ("
            << (f.format == "hf"        ? "Hugging Face folder"
                : f.format == "whisper" ? "WhisperEncoder folder of module " + audio->name
                                        : std::string("OpenCLIP"))
            << ", " << model->ParameterCount() << " parameters, step " << state.step << ")\n";
  return Status::Ok();
}

}  // namespace

void AddExportCommand(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "export", "Write a training checkpoint as a Hugging Face folder or OpenCLIP weights");
  auto f = std::make_shared<ExportFlags>();
  sub->add_option("--model,-m", f->model,
                  "The checkpoint's model: spec file, zoo name, or the HF folder it was "
                  "initialized from (--init)")
      ->required();
  sub->add_option("--checkpoint", f->checkpoint, "A checkpoint of `mosaic train` (step-N.ckpt)")
      ->required();
  sub->add_option("-o,--out", f->out,
                  "Output: a folder (hf: config.json + model.safetensors) or a .safetensors file "
                  "(open_clip)")
      ->required();
  sub->add_option("--format", f->format,
                  "hf (transformers), open_clip, or whisper (the audio module as transformers' "
                  "WhisperEncoder)")
      ->check(CLI::IsMember({"hf", "open_clip", "whisper"}))
      ->capture_default_str();
  sub->add_option("--dtype", f->dtype, "Weights dtype: fp32, bf16 or fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  sub->add_option("--configs", f->configs, "Where zoo names are looked up")
      ->envname("MOSAIC_CONFIGS")
      ->capture_default_str();
  SetCommand(sub, [f] {
    Status s = Export(*f);
    return s.ok() ? kExitOk : ReportError("export", s);
  });
}

}  // namespace mosaic::cli
