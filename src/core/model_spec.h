// ModelSpec: a multimodal model as Mosaic sees it: its modules (encoders, projector, LLM, loss),
// the data edges between them, and the batch it trains on. Loaded from configs/models/*.json.
//
//   {
//     "name": "clip-b16", "batch_size": 32, "micro_batches": 1, "precision": "bf16",
//     "modules": [
//       {"name": "vision", "kind": "vit", "width": 768, "depth": 12, "heads": 12,
//        "image_size": 224, "patch_size": 16, "output_dim": 512},
//       {"name": "text", "kind": "text", "width": 512, "depth": 12, "heads": 8,
//        "seq_len": 77, "vocab_size": 49408, "output_dim": 512},
//       {"name": "loss", "kind": "loss", "loss": "contrastive"}],
//     "edges": [["vision", "loss"], ["text", "loss"]]
//   }
//
// ParseModelSpec validates everything (fields, divisibility, dimensions across edges, cycles,
// every module reaching a loss) and reports each violation with its JSON path.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/json_reader.h"
#include "core/status.h"

namespace mosaic {

enum class ModuleKind { kVit, kText, kLlm, kProjector, kAudio, kLoss };
enum class Precision { kFp32, kBf16, kFp16 };
// kCls: the class token (vit, audio) or, for text, the last (end-of-text) token, written
// "last" in JSON; kMean: mean over tokens; kNone: every token goes on (to a projector/LLM).
enum class Pooling { kCls, kMean, kNone };
enum class ProjectorKind { kLinear, kMlp2 };
enum class LossKind { kContrastive, kNextToken };
// MLP activation of vit/text/audio blocks. kGeluTanh is Mosaic's default (Note [bias+GELU
// epilogue] in models/blocks.h); kQuickGelu (x * sigmoid(1.702 x)) and kGelu (exact, erf) are what
// pretrained CLIP checkpoints use (Hugging Face `hidden_act` "quick_gelu" / "gelu").
enum class Activation { kGeluTanh, kQuickGelu, kGelu };
// Where a text tower with pool "last" pools: kLastReal, the last real token (the mask's last
// true position, Mosaic's default); kArgmaxId, the token with the highest id (OpenAI CLIP, whose
// end-of-text token is the last id; HF CLIPTextModel when eos_token_id == 2); kFirstEos, the first
// token equal to eos_token_id (HF CLIPTextModel otherwise).
enum class TextPoolAt { kLastReal, kArgmaxId, kFirstEos };

const char* ToString(ModuleKind k);
const char* ToString(Precision p);
const char* ToString(Pooling p);
const char* ToString(ProjectorKind p);
const char* ToString(LossKind l);
const char* ToString(Activation a);
const char* ToString(TextPoolAt p);
int BytesPerElement(Precision p);  // storage size of one activation element

// One module. Fields that do not apply to the module's kind stay 0 and are not saved.
struct ModuleSpec {
  std::string name;
  ModuleKind kind = ModuleKind::kVit;

  // Transformer stacks (vit, text, llm, audio).
  int width = 0;       // model dimension
  int depth = 0;       // number of blocks
  int heads = 0;       // attention heads; must divide width
  int mlp_dim = 0;     // MLP hidden size; default 4*width (GELU) or SwiGLU's for llm
  int output_dim = 0;  // projection after pooling (0: none, features have `width`)
  Pooling pool = Pooling::kCls;
  // Options that pretrained checkpoints need (src/interop); the defaults are Mosaic's own
  // architecture, and ToJson writes them only when they differ from the default.
  Activation activation = Activation::kGeluTanh;  // vit, text, audio, projector (mlp2)
  double norm_eps = 0;  // LayerNorm (vit, text: default 1e-5) or RMSNorm (llm: default 1e-6) eps

  // vit
  int image_size = 0;  // square input, pixels
  int patch_size = 0;  // must divide image_size
  int channels = 0;    // default 3
  bool patch_bias = true;  // a bias on the patch-embedding conv (CLIP checkpoints have none)
  // Which hidden state the tower outputs, numbered as Hugging Face's `hidden_states`: 0 (the
  // default) is the last block's output followed by the final LayerNorm (and proj); k in
  // [1, depth] is the output of block k, and -k is hidden state depth + 1 - k (-1: the last
  // block, -2: the one before it, LLaVA's `vision_feature_layer` default), both without the final
  // LayerNorm and proj. 0 of HF's numbering (the embeddings) cannot be asked for.
  int feature_layer = 0;
  // pool "none" only: a class token is prepended, as with pool "cls", and dropped from the
  // output, which keeps only the patch tokens (LLaVA's `vision_feature_select_strategy`
  // "default" on a CLIP tower).
  bool drop_cls = false;

  // text, llm
  int seq_len = 0;  // text tokens per sample
  int vocab_size = 0;
  bool causal = false;  // text: causal mask (CLIP) or bidirectional; llm: always causal
  int kv_heads = 0;     // llm: grouped-query attention heads; must divide heads
  double rope_theta = 0;
  TextPoolAt pool_at = TextPoolAt::kLastReal;  // text with pool "last"
  int eos_token_id = -1;                       // text, pool_at kFirstEos
  bool tie_embeddings = false;                 // llm: the LM head shares the token embedding

  // audio: log-mel frames in, a stride-2 conv front end halves them
  int n_mels = 0;
  int frames = 0;
  // Options of Whisper's encoder (src/interop; defaults: Mosaic's own audio encoder). The
  // activation applies to the conv front end and the MLP.
  bool key_bias = true;           // false: attention has no k bias (held at zero, never trained)
  bool freeze_positions = false;  // true: the position table is not trained (no gradient)
  bool norm_before_pool = false;  // true: the final LayerNorm on every position, then the mean
                                  // (Whisper); false: the mean, then the LayerNorm

  // projector
  ProjectorKind projector = ProjectorKind::kMlp2;
  int in_dim = 0;
  int hidden_dim = 0;
  int out_dim = 0;

  // loss
  LossKind loss = LossKind::kContrastive;

  bool is_transformer() const {
    return kind == ModuleKind::kVit || kind == ModuleKind::kText || kind == ModuleKind::kLlm ||
           kind == ModuleKind::kAudio;
  }
  bool is_loss() const { return kind == ModuleKind::kLoss; }
  // Whether the module owns trainable parameters (a next-token loss has none; a contrastive
  // loss has its temperature).
  bool has_parameters() const { return !(is_loss() && loss == LossKind::kNextToken); }
  // Size of each output feature vector: output_dim, else width (out_dim for projectors).
  int feature_dim() const;
  // Tokens per sample at the output: 1 when pooled, else the sequence it carries.
  int output_tokens() const;
  // Tokens per sample inside the transformer stack (patches + class token, text, frames/2).
  int sequence_tokens() const;
};

struct ModelSpec {
  std::string name;
  std::string description;
  int batch_size = 0;     // samples per optimizer step
  int micro_batches = 1;  // the batch is split into this many equal micro-batches
  Precision precision = Precision::kBf16;
  std::vector<ModuleSpec> modules;
  std::vector<std::pair<std::string, std::string>> edges;  // (producer, consumer)

  int micro_batch_size() const { return batch_size / micro_batches; }
  // Index of the module called `name`, or -1.
  int IndexOf(const std::string& name) const;
  const ModuleSpec* Find(const std::string& name) const;
  // Names of the modules feeding / fed by module `name`, in edge order.
  std::vector<std::string> InputsOf(const std::string& name) const;
  std::vector<std::string> ConsumersOf(const std::string& name) const;
  // Module names in a topological order of the edges (ties by declaration order).
  std::vector<std::string> TopologicalOrder() const;
};

// Parses and validates; every violation is one line "<json path>: <what was expected>".
StatusOr<ModelSpec> ParseModelSpec(const Json& doc);
StatusOr<ModelSpec> LoadModelSpec(const std::string& path);
Json ToJson(const ModelSpec& spec);

}  // namespace mosaic
