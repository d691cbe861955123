#include "interop/hf_model.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "core/file_io.h"

namespace mosaic::interop {

namespace {

using Shape = std::vector<int64_t>;

// One Mosaic parameter and the HF tensors it is made of: the HF tensors, each of its HF shape,
// are concatenated along dim 0 and reshaped to the Mosaic shape (and split back on export).
struct TensorRule {
  std::string mosaic;
  Shape mosaic_shape;
  std::vector<std::string> hf;
  std::vector<Shape> hf_shapes;
  bool transpose = false;  // one 2-D tensor stored as (in, out): OpenCLIP's x @ proj
};

std::string ShapeText(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i)
    out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string ShapeText(const torch::Tensor& t) {
  return ShapeText(t.sizes().vec());
}

// HF tensors that are buffers, not weights, in older checkpoints: accepted and ignored.
bool IsIgnoredHfBuffer(const std::string& name) {
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends_with("embeddings.position_ids") || ends_with("rotary_emb.inv_freq");
}

const ModuleSpec* FindKind(const ModelSpec& spec, ModuleKind kind, int* count) {
  const ModuleSpec* found = nullptr;
  *count = 0;
  for (const ModuleSpec& m : spec.modules) {
    if (m.kind == kind) {
      if (!found) found = &m;
      ++*count;
    }
  }
  return found;
}

// The submodule name MultimodalModel registers (spec names have no dots, so it is the name).
std::string Sub(const std::string& module_name) {
  return module_name;
}

void AddLinear(std::vector<TensorRule>& rules, const std::string& mosaic, const std::string& hf,
               int64_t out, int64_t in, bool bias) {
  rules.push_back({mosaic + ".weight", {out, in}, {hf + ".weight"}, {{out, in}}});
  if (bias) rules.push_back({mosaic + ".bias", {out}, {hf + ".bias"}, {{out}}});
}

void AddLayerNorm(std::vector<TensorRule>& rules, const std::string& mosaic, const std::string& hf,
                  int64_t width) {
  rules.push_back({mosaic + ".weight", {width}, {hf + ".weight"}, {{width}}});
  rules.push_back({mosaic + ".bias", {width}, {hf + ".bias"}, {{width}}});
}

// CLIPEncoder layers (vision or text): pre-norm blocks with q/k/v/out biases and a GELU MLP.
void AddClipEncoder(std::vector<TensorRule>& rules, const ModuleSpec& m, const std::string& hf) {
  const int64_t C = m.width, H = m.mlp_dim;
  for (int i = 0; i < m.depth; ++i) {
    const std::string mb = Sub(m.name) + ".blocks.layers." + std::to_string(i);
    const std::string hb = hf + ".encoder.layers." + std::to_string(i);
    AddLayerNorm(rules, mb + ".ln1", hb + ".layer_norm1", C);
    rules.push_back({mb + ".attn.qkv.weight",
                     {3 * C, C},
                     {hb + ".self_attn.q_proj.weight", hb + ".self_attn.k_proj.weight",
                      hb + ".self_attn.v_proj.weight"},
                     {{C, C}, {C, C}, {C, C}}});
    rules.push_back({mb + ".attn.qkv.bias",
                     {3 * C},
                     {hb + ".self_attn.q_proj.bias", hb + ".self_attn.k_proj.bias",
                      hb + ".self_attn.v_proj.bias"},
                     {{C}, {C}, {C}}});
    AddLinear(rules, mb + ".attn.out", hb + ".self_attn.out_proj", C, C, true);
    AddLayerNorm(rules, mb + ".ln2", hb + ".layer_norm2", C);
    AddLinear(rules, mb + ".mlp.fc1", hb + ".mlp.fc1", H, C, true);
    AddLinear(rules, mb + ".mlp.fc2", hb + ".mlp.fc2", C, H, true);
  }
}

// CLIPVisionTransformer under `hf` (CLIPModel: "vision_model"; LLaVA: "vision_tower"), every
// layer and the post-layernorm included (LLaVA's towers hold them even when unused).
void AddClipVision(std::vector<TensorRule>& r, const ModuleSpec& v, const std::string& hf) {
  const int64_t C = v.width, ch = v.channels > 0 ? v.channels : 3, p = v.patch_size;
  const int64_t side = v.image_size / v.patch_size, tokens = side * side + 1;
  const std::string vn = Sub(v.name);
  r.push_back({vn + ".patch_embed.weight",
               {C, ch, p, p},
               {hf + ".embeddings.patch_embedding.weight"},
               {{C, ch, p, p}}});
  r.push_back({vn + ".class_token", {1, 1, C}, {hf + ".embeddings.class_embedding"}, {{C}}});
  r.push_back({vn + ".positions",
               {1, tokens, C},
               {hf + ".embeddings.position_embedding.weight"},
               {{tokens, C}}});
  AddLayerNorm(r, vn + ".ln_pre", hf + ".pre_layrnorm", C);
  AddClipEncoder(r, v, hf);
  AddLayerNorm(r, vn + ".ln_post", hf + ".post_layernorm", C);
}

StatusOr<std::vector<TensorRule>> ClipRules(const ModelSpec& spec) {
  int n;
  const ModuleSpec& v = *FindKind(spec, ModuleKind::kVit, &n);
  const ModuleSpec& t = *FindKind(spec, ModuleKind::kText, &n);
  const ModuleSpec& l = *FindKind(spec, ModuleKind::kLoss, &n);
  std::vector<TensorRule> r;
  AddClipVision(r, v, "vision_model");
  AddLinear(r, Sub(v.name) + ".proj", "visual_projection", v.output_dim, v.width, false);

  const int64_t D = t.width;
  const std::string tn = Sub(t.name);
  r.push_back({tn + ".token_embed.weight",
               {t.vocab_size, D},
               {"text_model.embeddings.token_embedding.weight"},
               {{t.vocab_size, D}}});
  r.push_back({tn + ".positions",
               {1, t.seq_len, D},
               {"text_model.embeddings.position_embedding.weight"},
               {{t.seq_len, D}}});
  AddClipEncoder(r, t, "text_model");
  AddLayerNorm(r, tn + ".ln_final", "text_model.final_layer_norm", D);
  AddLinear(r, tn + ".proj", "text_projection", t.output_dim, D, false);
  r.push_back({Sub(l.name) + ".logit_scale", {}, {"logit_scale"}, {{}}});
  return r;
}

// LlamaModel under `model` ("model" in LlamaForCausalLM, "language_model.model" in a LLaVA
// folder) and the head `lm_head` (none when tied).
void AddLlama(std::vector<TensorRule>& r, const ModuleSpec& m, const std::string& model,
              const std::string& lm_head) {
  const int64_t C = m.width, V = m.vocab_size, H = m.mlp_dim;
  const int64_t hd = m.width / m.heads, KV = (m.kv_heads > 0 ? m.kv_heads : m.heads) * hd;
  const std::string mn = Sub(m.name);
  r.push_back({mn + ".token_embed.weight", {V, C}, {model + ".embed_tokens.weight"}, {{V, C}}});
  for (int i = 0; i < m.depth; ++i) {
    const std::string mb = mn + ".blocks.layers." + std::to_string(i);
    const std::string hb = model + ".layers." + std::to_string(i);
    r.push_back({mb + ".rms1.weight", {C}, {hb + ".input_layernorm.weight"}, {{C}}});
    r.push_back({mb + ".attn.qkv.weight",
                 {C + 2 * KV, C},
                 {hb + ".self_attn.q_proj.weight", hb + ".self_attn.k_proj.weight",
                  hb + ".self_attn.v_proj.weight"},
                 {{C, C}, {KV, C}, {KV, C}}});
    AddLinear(r, mb + ".attn.out", hb + ".self_attn.o_proj", C, C, false);
    r.push_back({mb + ".rms2.weight", {C}, {hb + ".post_attention_layernorm.weight"}, {{C}}});
    r.push_back({mb + ".mlp.gate_up.weight",
                 {2 * H, C},
                 {hb + ".mlp.gate_proj.weight", hb + ".mlp.up_proj.weight"},
                 {{H, C}, {H, C}}});
    AddLinear(r, mb + ".mlp.down", hb + ".mlp.down_proj", C, H, false);
  }
  r.push_back({mn + ".norm.weight", {C}, {model + ".norm.weight"}, {{C}}});
  if (!m.tie_embeddings) AddLinear(r, mn + ".lm_head", lm_head, V, C, false);
}

StatusOr<std::vector<TensorRule>> LlamaRules(const ModelSpec& spec) {
  int n;
  std::vector<TensorRule> r;
  AddLlama(r, *FindKind(spec, ModuleKind::kLlm, &n), "model", "lm_head");
  return r;
}

// LlavaForConditionalGeneration, under the names transformers 5 writes (save_pretrained keeps
// the 4.x layout: vision_tower.*, multi_modal_projector.*, language_model.model.*,
// language_model.lm_head); other spellings are renamed to these first (LlavaCanonicalName).
StatusOr<std::vector<TensorRule>> LlavaRules(const ModelSpec& spec) {
  int n;
  const ModuleSpec& v = *FindKind(spec, ModuleKind::kVit, &n);
  const ModuleSpec& p = *FindKind(spec, ModuleKind::kProjector, &n);
  std::vector<TensorRule> r;
  AddClipVision(r, v, "vision_tower");
  AddLinear(r, Sub(p.name) + ".fc1", "multi_modal_projector.linear_1", p.hidden_dim, p.in_dim,
            true);
  AddLinear(r, Sub(p.name) + ".fc2", "multi_modal_projector.linear_2", p.out_dim, p.hidden_dim,
            true);
  AddLlama(r, *FindKind(spec, ModuleKind::kLlm, &n), "language_model.model",
           "language_model.lm_head");
  return r;
}

StatusOr<std::vector<TensorRule>> Rules(const ModelSpec& spec) {
  MOSAIC_ASSIGN_OR_RETURN(HfArchitecture arch, HfArchitectureOf(spec));
  switch (arch) {
    case HfArchitecture::kClip:
      return ClipRules(spec);
    case HfArchitecture::kLlama:
      return LlamaRules(spec);
    case HfArchitecture::kLlava:
      return LlavaRules(spec);
  }
  return Internal("unknown HF architecture");
}

const char* HfClassName(HfArchitecture arch) {
  switch (arch) {
    case HfArchitecture::kClip:
      return "CLIPModel";
    case HfArchitecture::kLlama:
      return "LlamaForCausalLM";
    case HfArchitecture::kLlava:
      return "LlavaForConditionalGeneration";
  }
  return "?";
}

// A LLaVA tensor name in the layout LlavaRules uses. transformers 5 names its parameters
// model.vision_tower.*, model.multi_modal_projector.*, model.language_model.*, lm_head.*, and
// llava-hf checkpoints wrap the tower as vision_tower.vision_model.*.
std::string LlavaCanonicalName(const std::string& name) {
  static const std::pair<const char*, const char*> kRenames[] = {
      {"model.vision_tower.vision_model.", "vision_tower."},
      {"model.vision_tower.", "vision_tower."},
      {"vision_tower.vision_model.", "vision_tower."},
      {"model.multi_modal_projector.", "multi_modal_projector."},
      {"model.language_model.", "language_model.model."},
      {"lm_head.", "language_model.lm_head."},
  };
  for (const auto& [from, to] : kRenames) {
    const std::string f = from;
    if (name.compare(0, f.size(), f) == 0) return to + name.substr(f.size());
  }
  return name;
}

// --- config.json -> spec --------------------------------------------------------------------

// Reads config values with errors naming "<source>: <key path>".
class ConfigReader {
 public:
  ConfigReader(const Json& j, std::string path) : j_(j), path_(std::move(path)) {}
  std::string Where(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  StatusOr<int> Int(const std::string& key) const {
    if (!j_.contains(key) || !j_[key].is_number_integer() || j_[key].get<int64_t>() <= 0 ||
        j_[key].get<int64_t>() > (1 << 30))
      return InvalidArgument(Where(key) + ": expected a positive integer");
    return j_[key].get<int>();
  }
  StatusOr<int> IntOr(const std::string& key, int fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_number_integer()) return InvalidArgument(Where(key) + ": expected an integer");
    return j_[key].get<int>();
  }
  StatusOr<double> NumberOr(const std::string& key, double fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_number()) return InvalidArgument(Where(key) + ": expected a number");
    return j_[key].get<double>();
  }
  StatusOr<std::string> StringOr(const std::string& key, const std::string& fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_string()) return InvalidArgument(Where(key) + ": expected a string");
    return j_[key].get<std::string>();
  }
  StatusOr<bool> BoolOr(const std::string& key, bool fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) return fallback;
    if (!j_[key].is_boolean()) return InvalidArgument(Where(key) + ": expected true or false");
    return j_[key].get<bool>();
  }
  StatusOr<ConfigReader> Object(const std::string& key) const {
    if (!j_.contains(key) || !j_[key].is_object())
      return InvalidArgument(Where(key) + ": expected an object");
    return ConfigReader(j_[key], Where(key));
  }

 private:
  const Json& j_;
  std::string path_;
};

StatusOr<Activation> ParseHfActivation(const ConfigReader& r, const std::string& key) {
  MOSAIC_ASSIGN_OR_RETURN(std::string act, r.StringOr(key, "quick_gelu"));
  if (act == "quick_gelu") return Activation::kQuickGelu;
  if (act == "gelu") return Activation::kGelu;
  if (act == "gelu_pytorch_tanh" || act == "gelu_new") return Activation::kGeluTanh;
  return InvalidArgument(r.Where(key) + ": activation \"" + act +
                         "\" is not supported (quick_gelu, gelu, gelu_pytorch_tanh)");
}

// A CLIPVisionConfig's tower (no projection, pool and feature choice left to the caller).
StatusOr<ModuleSpec> ClipVisionSpec(const ConfigReader& vc) {
  ModuleSpec v;
  v.name = "vision";
  v.kind = ModuleKind::kVit;
  MOSAIC_ASSIGN_OR_RETURN(v.width, vc.Int("hidden_size"));
  MOSAIC_ASSIGN_OR_RETURN(v.depth, vc.Int("num_hidden_layers"));
  MOSAIC_ASSIGN_OR_RETURN(v.heads, vc.Int("num_attention_heads"));
  MOSAIC_ASSIGN_OR_RETURN(v.mlp_dim, vc.Int("intermediate_size"));
  MOSAIC_ASSIGN_OR_RETURN(v.image_size, vc.Int("image_size"));
  MOSAIC_ASSIGN_OR_RETURN(v.patch_size, vc.Int("patch_size"));
  MOSAIC_ASSIGN_OR_RETURN(v.channels, vc.IntOr("num_channels", 3));
  MOSAIC_ASSIGN_OR_RETURN(v.activation, ParseHfActivation(vc, "hidden_act"));
  MOSAIC_ASSIGN_OR_RETURN(v.norm_eps, vc.NumberOr("layer_norm_eps", 1e-5));
  v.patch_bias = false;
  return v;
}

StatusOr<ModelSpec> ClipSpec(const ConfigReader& c) {
  MOSAIC_ASSIGN_OR_RETURN(ConfigReader tc, c.Object("text_config"));
  MOSAIC_ASSIGN_OR_RETURN(ConfigReader vc, c.Object("vision_config"));
  MOSAIC_ASSIGN_OR_RETURN(int proj, c.IntOr("projection_dim", 512));
  MOSAIC_ASSIGN_OR_RETURN(ModuleSpec v, ClipVisionSpec(vc));
  v.output_dim = proj;
  v.pool = Pooling::kCls;
  ModuleSpec t;
  t.name = "text";
  t.kind = ModuleKind::kText;
  MOSAIC_ASSIGN_OR_RETURN(t.width, tc.Int("hidden_size"));
  MOSAIC_ASSIGN_OR_RETURN(t.depth, tc.Int("num_hidden_layers"));
  MOSAIC_ASSIGN_OR_RETURN(t.heads, tc.Int("num_attention_heads"));
  MOSAIC_ASSIGN_OR_RETURN(t.mlp_dim, tc.Int("intermediate_size"));
  MOSAIC_ASSIGN_OR_RETURN(t.seq_len, tc.Int("max_position_embeddings"));
  MOSAIC_ASSIGN_OR_RETURN(t.vocab_size, tc.Int("vocab_size"));
  MOSAIC_ASSIGN_OR_RETURN(t.activation, ParseHfActivation(tc, "hidden_act"));
  MOSAIC_ASSIGN_OR_RETURN(t.norm_eps, tc.NumberOr("layer_norm_eps", 1e-5));
  MOSAIC_ASSIGN_OR_RETURN(int eos, tc.IntOr("eos_token_id", 49407));
  t.output_dim = proj;
  t.causal = true;
  t.pool = Pooling::kCls;
  // HF CLIPTextTransformer: eos_token_id 2 (configs before transformers PR #24773) pools at the
  // highest id, any other at the first eos_token_id.
  t.pool_at = eos == 2 ? TextPoolAt::kArgmaxId : TextPoolAt::kFirstEos;
  t.eos_token_id = eos == 2 ? -1 : eos;
  ModuleSpec l;
  l.name = "loss";
  l.kind = ModuleKind::kLoss;
  l.loss = LossKind::kContrastive;
  ModelSpec spec;
  spec.name = "hf-clip";
  spec.modules = {v, t, l};
  spec.edges = {{"vision", "loss"}, {"text", "loss"}};
  return spec;
}

StatusOr<ModelSpec> LlamaSpec(const ConfigReader& c) {
  ModuleSpec m;
  m.name = "llm";
  m.kind = ModuleKind::kLlm;
  MOSAIC_ASSIGN_OR_RETURN(m.width, c.Int("hidden_size"));
  MOSAIC_ASSIGN_OR_RETURN(m.depth, c.Int("num_hidden_layers"));
  MOSAIC_ASSIGN_OR_RETURN(m.heads, c.Int("num_attention_heads"));
  MOSAIC_ASSIGN_OR_RETURN(m.kv_heads, c.IntOr("num_key_value_heads", m.heads));
  MOSAIC_ASSIGN_OR_RETURN(m.mlp_dim, c.Int("intermediate_size"));
  MOSAIC_ASSIGN_OR_RETURN(m.seq_len, c.Int("max_position_embeddings"));
  MOSAIC_ASSIGN_OR_RETURN(m.vocab_size, c.Int("vocab_size"));
  MOSAIC_ASSIGN_OR_RETURN(m.norm_eps, c.NumberOr("rms_norm_eps", 1e-6));
  MOSAIC_ASSIGN_OR_RETURN(m.tie_embeddings, c.BoolOr("tie_word_embeddings", false));
  MOSAIC_ASSIGN_OR_RETURN(int head_dim, c.IntOr("head_dim", m.width / m.heads));
  if (head_dim * m.heads != m.width)
    return InvalidArgument(c.Where("head_dim") + ": " + std::to_string(head_dim) +
                           " x num_attention_heads must equal hidden_size (Mosaic has no "
                           "separate head size)");
  MOSAIC_ASSIGN_OR_RETURN(std::string act, c.StringOr("hidden_act", "silu"));
  if (act != "silu") return InvalidArgument(c.Where("hidden_act") + ": only \"silu\" is supported");
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    MOSAIC_ASSIGN_OR_RETURN(bool bias, c.BoolOr(key, false));
    if (bias) return InvalidArgument(c.Where(key) + ": biases are not supported");
  }
  // transformers 5 keeps rope_theta under rope_parameters; 4.x at the top level.
  MOSAIC_ASSIGN_OR_RETURN(m.rope_theta, c.NumberOr("rope_theta", 10000.0));
  auto params = c.Object("rope_parameters");
  if (params.ok()) {
    MOSAIC_ASSIGN_OR_RETURN(m.rope_theta, params->NumberOr("rope_theta", m.rope_theta));
    MOSAIC_ASSIGN_OR_RETURN(std::string type, params->StringOr("rope_type", "default"));
    if (type != "default")
      return InvalidArgument(params->Where("rope_type") + ": \"" + type +
                             "\" scaling is not supported (only \"default\")");
  }
  auto scaling = c.Object("rope_scaling");
  if (scaling.ok()) {
    MOSAIC_ASSIGN_OR_RETURN(std::string type, scaling->StringOr("rope_type", "default"));
    if (type != "default")
      return InvalidArgument(c.Where("rope_scaling") + ": rope scaling is not supported");
  }
  m.pool = Pooling::kNone;
  m.causal = true;
  ModuleSpec l;
  l.name = "loss";
  l.kind = ModuleKind::kLoss;
  l.loss = LossKind::kNextToken;
  ModelSpec spec;
  spec.name = "hf-llama";
  spec.modules = {m, l};
  spec.edges = {{"llm", "loss"}};
  return spec;
}

// LlavaForConditionalGeneration: a CLIP vision tower whose hidden state `vision_feature_layer`
// (class token dropped) goes through linear -> act -> linear into a Llama decoder as a prefix.
StatusOr<ModelSpec> LlavaSpec(const ConfigReader& c) {
  MOSAIC_ASSIGN_OR_RETURN(ConfigReader vc, c.Object("vision_config"));
  MOSAIC_ASSIGN_OR_RETURN(ConfigReader tc, c.Object("text_config"));
  MOSAIC_ASSIGN_OR_RETURN(std::string vtype, vc.StringOr("model_type", ""));
  if (vtype != "clip_vision_model")
    return InvalidArgument(vc.Where("model_type") + ": \"" + vtype +
                           "\" is not supported (only a CLIP tower, clip_vision_model)");
  MOSAIC_ASSIGN_OR_RETURN(std::string ttype, tc.StringOr("model_type", "llama"));
  if (ttype != "llama")
    return InvalidArgument(tc.Where("model_type") + ": \"" + ttype +
                           "\" is not supported (only llama)");
  // The vision tower: CLIP's, without the projection, outputting the chosen hidden state.
  MOSAIC_ASSIGN_OR_RETURN(ModuleSpec v, ClipVisionSpec(vc));
  v.pool = Pooling::kNone;
  MOSAIC_ASSIGN_OR_RETURN(v.feature_layer, c.IntOr("vision_feature_layer", -2));
  if (v.feature_layer == 0 || v.feature_layer > v.depth || v.feature_layer < -v.depth)
    return InvalidArgument(c.Where("vision_feature_layer") + ": " +
                           std::to_string(v.feature_layer) + " is not a layer in [-" +
                           std::to_string(v.depth) + ", -1] or [1, " + std::to_string(v.depth) +
                           "] (lists of layers are not supported)");
  MOSAIC_ASSIGN_OR_RETURN(std::string select,
                          c.StringOr("vision_feature_select_strategy", "default"));
  if (select != "default")
    return InvalidArgument(c.Where("vision_feature_select_strategy") + ": \"" + select +
                           "\" is not supported (only \"default\": the class token dropped)");
  v.drop_cls = true;
  MOSAIC_ASSIGN_OR_RETURN(ModelSpec llama, LlamaSpec(tc));
  ModuleSpec m = llama.modules.at(0);
  ModuleSpec p;
  p.name = "projector";
  p.kind = ModuleKind::kProjector;
  p.projector = ProjectorKind::kMlp2;
  p.pool = Pooling::kNone;
  p.in_dim = v.width;
  p.hidden_dim = m.width;
  p.out_dim = m.width;
  MOSAIC_ASSIGN_OR_RETURN(std::string act, c.StringOr("projector_hidden_act", "gelu"));
  if (act == "gelu") {
    p.activation = Activation::kGelu;
  } else if (act == "gelu_pytorch_tanh" || act == "gelu_new") {
    p.activation = Activation::kGeluTanh;
  } else {
    return InvalidArgument(c.Where("projector_hidden_act") + ": \"" + act +
                           "\" is not supported (gelu, gelu_pytorch_tanh)");
  }
  MOSAIC_ASSIGN_OR_RETURN(bool bias, c.BoolOr("multimodal_projector_bias", true));
  if (!bias)
    return InvalidArgument(c.Where("multimodal_projector_bias") +
                           ": a projector without biases is not supported");
  MOSAIC_ASSIGN_OR_RETURN(bool tie, c.BoolOr("tie_word_embeddings", m.tie_embeddings));
  m.tie_embeddings = tie;
  ModelSpec spec;
  spec.name = "hf-llava";
  spec.modules = {v, p, m, llama.modules.at(1)};
  spec.edges = {{"vision", "projector"}, {"projector", "llm"}, {"llm", "loss"}};
  return spec;
}

std::string JoinPath(const std::string& folder, const std::string& name) {
  if (folder.empty() || folder.back() == '/') return folder + name;
  return folder + "/" + name;
}

}  // namespace

StatusOr<ModelSpec> SpecFromHfConfig(const Json& config, const std::string& source) {
  if (!config.is_object()) return InvalidArgument(source + ": expected a JSON object");
  ConfigReader c(config, "");
  auto with_source = [&](StatusOr<ModelSpec> s) -> StatusOr<ModelSpec> {
    if (!s.ok()) return s.status().WithPrefix(source);
    ModelSpec spec = std::move(s).value();
    spec.batch_size = 8;
    spec.micro_batches = 1;
    spec.precision = Precision::kFp32;
    spec.description = "imported from " + source;
    // Run the spec through Mosaic's own validation, so that limits hold as for any spec file.
    auto checked = ParseModelSpec(ToJson(spec));
    if (!checked.ok()) return checked.status().WithPrefix(source + ": the Mosaic spec");
    return checked;
  };
  auto model_type = c.StringOr("model_type", "");
  if (!model_type.ok()) return model_type.status().WithPrefix(source);
  if (*model_type == "clip") return with_source(ClipSpec(c));
  if (*model_type == "llama") return with_source(LlamaSpec(c));
  if (*model_type == "llava") return with_source(LlavaSpec(c));
  if (*model_type == "whisper")
    return InvalidArgument(source +
                           ": a Whisper folder holds an audio encoder, not a whole model: give "
                           "--model SPEC with an audio module for it to fill (docs/interop.md)");
  return InvalidArgument(source + ": model_type: \"" + *model_type +
                         "\" is not supported (clip, llama, llava; whisper into an audio module)");
}

StatusOr<HfArchitecture> HfArchitectureOf(const ModelSpec& spec) {
  int vits, texts, llms, losses, projectors;
  const ModuleSpec* v = FindKind(spec, ModuleKind::kVit, &vits);
  const ModuleSpec* t = FindKind(spec, ModuleKind::kText, &texts);
  const ModuleSpec* lm = FindKind(spec, ModuleKind::kLlm, &llms);
  const ModuleSpec* p = FindKind(spec, ModuleKind::kProjector, &projectors);
  const ModuleSpec* l = FindKind(spec, ModuleKind::kLoss, &losses);
  const std::string who = "model \"" + spec.name + "\"";
  if (vits == 1 && texts == 1 && losses == 1 && spec.modules.size() == 3 &&
      l->loss == LossKind::kContrastive) {
    if (v->pool != Pooling::kCls)
      return InvalidArgument(who + ": module \"" + v->name + "\": CLIPModel pools the class token");
    if (v->patch_bias)
      return InvalidArgument(who + ": module \"" + v->name +
                             "\": CLIPModel's patch embedding has no bias (patch_bias false)");
    if (t->pool != Pooling::kCls || t->pool_at == TextPoolAt::kLastReal || !t->causal)
      return InvalidArgument(who + ": module \"" + t->name +
                             "\": CLIPModel's text tower is causal and pools at the end-of-text "
                             "token (pool \"argmax\" or \"eos\")");
    if (v->output_dim <= 0 || v->output_dim != t->output_dim)
      return InvalidArgument(who + ": CLIPModel needs both towers projected to one output_dim");
    return HfArchitecture::kClip;
  }
  if (llms == 1 && losses == 1 && spec.modules.size() == 2 && l->loss == LossKind::kNextToken)
    return HfArchitecture::kLlama;
  if (vits == 1 && projectors == 1 && llms == 1 && losses == 1 && spec.modules.size() == 4 &&
      l->loss == LossKind::kNextToken && spec.InputsOf(p->name) == std::vector{v->name} &&
      spec.InputsOf(lm->name) == std::vector{p->name}) {
    const std::string vw = who + ": module \"" + v->name + "\": ";
    if (v->pool != Pooling::kNone || !v->drop_cls)
      return InvalidArgument(vw +
                             "LLaVA's tower outputs the patch tokens, the class token dropped "
                             "(pool \"none\", drop_cls true)");
    if (v->feature_layer == 0 || v->output_dim > 0)
      return InvalidArgument(vw +
                             "LLaVA's tower outputs an encoder hidden state, without the "
                             "final LayerNorm or a projection (feature_layer, no output_dim)");
    if (v->patch_bias)
      return InvalidArgument(vw + "CLIP's patch embedding has no bias (patch_bias false)");
    if (p->projector != ProjectorKind::kMlp2 || p->activation == Activation::kQuickGelu)
      return InvalidArgument(who + ": module \"" + p->name +
                             "\": LLaVA's projector is mlp2 with activation gelu or gelu_tanh");
    return HfArchitecture::kLlava;
  }
  return InvalidArgument(who +
                         ": no Hugging Face architecture matches (CLIPModel: vit + text + "
                         "contrastive loss; LlamaForCausalLM: llm + next-token loss; "
                         "LlavaForConditionalGeneration: vit -> projector -> llm + next-token "
                         "loss)");
}

namespace {

// Applies `rules` to a whole state dict; `format` names the source in the extra-tensor error.
StatusOr<TensorMap> ToMosaic(const std::vector<TensorRule>& rules, const TensorMap& hf,
                             const std::string& format) {
  TensorMap out;
  std::set<std::string> used;
  for (const TensorRule& r : rules) {
    std::vector<torch::Tensor> parts;
    std::vector<size_t> zero_parts;
    for (size_t i = 0; i < r.hf.size(); ++i) {
      if (r.hf[i].empty()) {  // rows no HF tensor holds (Whisper's k bias): zeros
        zero_parts.push_back(parts.size());
        parts.emplace_back();
        continue;
      }
      auto it = hf.find(r.hf[i]);
      if (it == hf.end())
        return InvalidArgument("missing tensor \"" + r.hf[i] + "\" (shape " +
                               ShapeText(r.hf_shapes[i]) + ")");
      if (it->second.sizes().vec() != r.hf_shapes[i])
        return InvalidArgument("tensor \"" + r.hf[i] + "\" has shape " + ShapeText(it->second) +
                               ", the config implies " + ShapeText(r.hf_shapes[i]));
      used.insert(r.hf[i]);
      torch::Tensor t = r.transpose ? it->second.t() : it->second;
      parts.push_back(t.reshape({t.dim() == 0 ? 1 : t.size(0), -1}));
    }
    for (size_t k : zero_parts) {
      const Shape& shape = r.hf_shapes[k];
      const torch::Tensor& like = parts[k == 0 ? 1 : 0];
      parts[k] = torch::zeros(shape, like.options()).reshape({shape.empty() ? 1 : shape[0], -1});
    }
    torch::Tensor joined = parts.size() == 1 ? parts[0] : torch::cat(parts, 0);
    out.emplace(r.mosaic, joined.reshape(r.mosaic_shape).contiguous());
  }
  for (const auto& [name, t] : hf) {
    if (!used.count(name) && !IsIgnoredHfBuffer(name))
      return InvalidArgument("extra tensor \"" + name + "\" (shape " + ShapeText(t) +
                             ") has no place in the " + format + " the config describes");
  }
  return out;
}

StatusOr<TensorMap> FromMosaic(const std::vector<TensorRule>& rules, const TensorMap& mosaic) {
  TensorMap out;
  std::set<std::string> used;
  for (const TensorRule& r : rules) {
    auto it = mosaic.find(r.mosaic);
    if (it == mosaic.end()) return InvalidArgument("missing Mosaic tensor \"" + r.mosaic + "\"");
    if (it->second.sizes().vec() != r.mosaic_shape)
      return InvalidArgument("Mosaic tensor \"" + r.mosaic + "\" has shape " +
                             ShapeText(it->second) + ", expected " + ShapeText(r.mosaic_shape));
    used.insert(r.mosaic);
    if (r.transpose) {
      out.emplace(r.hf[0], it->second.t().contiguous());
      continue;
    }
    torch::Tensor flat = it->second.reshape({-1});
    int64_t offset = 0;
    for (size_t i = 0; i < r.hf.size(); ++i) {
      int64_t n = 1;
      for (int64_t d : r.hf_shapes[i])
        n *= d;
      torch::Tensor part = flat.narrow(0, offset, n);
      offset += n;
      if (r.hf[i].empty()) {  // rows no HF tensor holds: they must be zero to be dropped
        if (part.count_nonzero().item<int64_t>() != 0)
          return InvalidArgument("Mosaic tensor \"" + r.mosaic + "\": elements " +
                                 std::to_string(offset - n) + ".." + std::to_string(offset - 1) +
                                 " have no counterpart and are not zero");
        continue;
      }
      out.emplace(r.hf[i], part.reshape(r.hf_shapes[i]).contiguous());
    }
  }
  for (const auto& [name, t] : mosaic)
    if (!used.count(name))
      return InvalidArgument("Mosaic tensor \"" + name + "\" has no counterpart");
  return out;
}

// OpenCLIP's names for CLIP (open_clip.model.CLIP state_dict): resblocks with a fused
// in_proj, c_fc/c_proj MLPs, and the projections stored as (width, output_dim) matrices.
void AddOpenClipTower(std::vector<TensorRule>& r, const ModuleSpec& m, const std::string& prefix) {
  const int64_t C = m.width, H = m.mlp_dim;
  for (int i = 0; i < m.depth; ++i) {
    const std::string mb = Sub(m.name) + ".blocks.layers." + std::to_string(i);
    const std::string ob = prefix + "transformer.resblocks." + std::to_string(i);
    AddLayerNorm(r, mb + ".ln1", ob + ".ln_1", C);
    r.push_back({mb + ".attn.qkv.weight", {3 * C, C}, {ob + ".attn.in_proj_weight"}, {{3 * C, C}}});
    r.push_back({mb + ".attn.qkv.bias", {3 * C}, {ob + ".attn.in_proj_bias"}, {{3 * C}}});
    AddLinear(r, mb + ".attn.out", ob + ".attn.out_proj", C, C, true);
    AddLayerNorm(r, mb + ".ln2", ob + ".ln_2", C);
    AddLinear(r, mb + ".mlp.fc1", ob + ".mlp.c_fc", H, C, true);
    AddLinear(r, mb + ".mlp.fc2", ob + ".mlp.c_proj", C, H, true);
  }
}

StatusOr<std::vector<TensorRule>> OpenClipRules(const ModelSpec& spec) {
  MOSAIC_ASSIGN_OR_RETURN(HfArchitecture arch, HfArchitectureOf(spec));
  if (arch != HfArchitecture::kClip)
    return InvalidArgument("model \"" + spec.name + "\": OpenCLIP checkpoints hold CLIP models");
  int n;
  const ModuleSpec& v = *FindKind(spec, ModuleKind::kVit, &n);
  const ModuleSpec& t = *FindKind(spec, ModuleKind::kText, &n);
  const ModuleSpec& l = *FindKind(spec, ModuleKind::kLoss, &n);
  std::vector<TensorRule> r;
  const int64_t C = v.width, ch = v.channels > 0 ? v.channels : 3, p = v.patch_size;
  const int64_t side = v.image_size / v.patch_size, tokens = side * side + 1;
  const std::string vn = Sub(v.name), tn = Sub(t.name);
  r.push_back(
      {vn + ".patch_embed.weight", {C, ch, p, p}, {"visual.conv1.weight"}, {{C, ch, p, p}}});
  r.push_back({vn + ".class_token", {1, 1, C}, {"visual.class_embedding"}, {{C}}});
  r.push_back({vn + ".positions", {1, tokens, C}, {"visual.positional_embedding"}, {{tokens, C}}});
  AddLayerNorm(r, vn + ".ln_pre", "visual.ln_pre", C);
  AddOpenClipTower(r, v, "visual.");
  AddLayerNorm(r, vn + ".ln_post", "visual.ln_post", C);
  r.push_back({vn + ".proj.weight", {v.output_dim, C}, {"visual.proj"}, {{C, v.output_dim}}, true});
  const int64_t D = t.width;
  r.push_back({tn + ".token_embed.weight",
               {t.vocab_size, D},
               {"token_embedding.weight"},
               {{t.vocab_size, D}}});
  r.push_back({tn + ".positions", {1, t.seq_len, D}, {"positional_embedding"}, {{t.seq_len, D}}});
  AddOpenClipTower(r, t, "");
  AddLayerNorm(r, tn + ".ln_final", "ln_final", D);
  r.push_back(
      {tn + ".proj.weight", {t.output_dim, D}, {"text_projection"}, {{D, t.output_dim}}, true});
  r.push_back({Sub(l.name) + ".logit_scale", {}, {"logit_scale"}, {{}}});
  return r;
}

Status CopyIntoModel(const TensorMap& mosaic, const std::string& source,
                     models::MultimodalModelImpl& model) {
  torch::NoGradGuard no_grad;
  std::set<std::string> seen;
  for (auto& p : model.named_parameters(/*recurse=*/true)) {
    auto it = mosaic.find(p.key());
    if (it == mosaic.end())
      return Internal(source + ": no weight maps onto Mosaic parameter \"" + p.key() + "\"");
    if (it->second.sizes() != p.value().sizes())
      return Internal(source + ": Mosaic parameter \"" + p.key() + "\" is " + ShapeText(p.value()) +
                      ", its weights " + ShapeText(it->second));
    p.value().copy_(it->second);
    seen.insert(p.key());
  }
  for (const auto& [name, t] : mosaic)
    if (!seen.count(name))
      return Internal(source + ": weights for \"" + name + "\", which the model lacks");
  return Status::Ok();
}

}  // namespace

StatusOr<TensorMap> HfToMosaic(const ModelSpec& spec, const TensorMap& hf) {
  MOSAIC_ASSIGN_OR_RETURN(std::vector<TensorRule> rules, Rules(spec));
  MOSAIC_ASSIGN_OR_RETURN(HfArchitecture arch, HfArchitectureOf(spec));
  if (arch != HfArchitecture::kLlava) return ToMosaic(rules, hf, HfClassName(arch));
  TensorMap renamed;
  for (const auto& [name, t] : hf) {
    const std::string canonical = LlavaCanonicalName(name);
    if (!renamed.emplace(canonical, t).second)
      return InvalidArgument("tensor \"" + name + "\" appears twice (also as \"" + canonical +
                             "\")");
  }
  return ToMosaic(rules, renamed, HfClassName(arch));
}

StatusOr<TensorMap> MosaicToHf(const ModelSpec& spec, const TensorMap& mosaic) {
  MOSAIC_ASSIGN_OR_RETURN(std::vector<TensorRule> rules, Rules(spec));
  return FromMosaic(rules, mosaic);
}

StatusOr<TensorMap> OpenClipToMosaic(const ModelSpec& spec, const TensorMap& open_clip) {
  MOSAIC_ASSIGN_OR_RETURN(std::vector<TensorRule> rules, OpenClipRules(spec));
  return ToMosaic(rules, open_clip, "OpenCLIP model");
}

StatusOr<TensorMap> MosaicToOpenClip(const ModelSpec& spec, const TensorMap& mosaic) {
  MOSAIC_ASSIGN_OR_RETURN(std::vector<TensorRule> rules, OpenClipRules(spec));
  return FromMosaic(rules, mosaic);
}

Status LoadOpenClipWeights(const std::string& path, models::MultimodalModelImpl& model) {
  MOSAIC_ASSIGN_OR_RETURN(TensorMap tensors, ReadSafetensors(path));
  auto mosaic = OpenClipToMosaic(model.spec(), tensors);
  if (!mosaic.ok()) return mosaic.status().WithPrefix(path);
  return CopyIntoModel(*mosaic, path, model);
}

StatusOr<Json> HfConfigFromSpec(const ModelSpec& spec) {
  MOSAIC_ASSIGN_OR_RETURN(HfArchitecture arch, HfArchitectureOf(spec));
  auto act = [](Activation a) {
    return a == Activation::kQuickGelu ? "quick_gelu"
           : a == Activation::kGelu    ? "gelu"
                                       : "gelu_pytorch_tanh";
  };
  auto eps = [](const ModuleSpec& m, double fallback) {
    return m.norm_eps > 0 ? m.norm_eps : fallback;
  };
  int n;
  auto vision_config = [&](const ModuleSpec& v) {
    return Json{
        {"model_type", "clip_vision_model"}, {"hidden_size", v.width},
        {"intermediate_size", v.mlp_dim},    {"num_hidden_layers", v.depth},
        {"num_attention_heads", v.heads},    {"image_size", v.image_size},
        {"patch_size", v.patch_size},        {"num_channels", v.channels > 0 ? v.channels : 3},
        {"hidden_act", act(v.activation)},   {"layer_norm_eps", eps(v, 1e-5)}};
  };
  auto llama_config = [&](const ModuleSpec& m) {
    const double theta = m.rope_theta > 0 ? m.rope_theta : 10000.0;
    return Json{{"model_type", "llama"},
                {"vocab_size", m.vocab_size},
                {"hidden_size", m.width},
                {"intermediate_size", m.mlp_dim},
                {"num_hidden_layers", m.depth},
                {"num_attention_heads", m.heads},
                {"num_key_value_heads", m.kv_heads > 0 ? m.kv_heads : m.heads},
                {"head_dim", m.width / m.heads},
                {"max_position_embeddings", m.seq_len},
                {"rms_norm_eps", eps(m, 1e-6)},
                {"rope_theta", theta},
                {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", theta}}},
                {"hidden_act", "silu"},
                {"attention_bias", false},
                {"mlp_bias", false},
                {"tie_word_embeddings", m.tie_embeddings}};
  };
  if (arch == HfArchitecture::kLlava) {
    const ModuleSpec& v = *FindKind(spec, ModuleKind::kVit, &n);
    const ModuleSpec& p = *FindKind(spec, ModuleKind::kProjector, &n);
    const ModuleSpec& m = *FindKind(spec, ModuleKind::kLlm, &n);
    // image_token_index: Mosaic feeds the image as a prefix, so no token id stands for it; the
    // exported config keeps transformers' default (32000), which a caller with a smaller
    // vocabulary must set to an id of its own before running HF on placeholder ids.
    return Json{
        {"architectures", {"LlavaForConditionalGeneration"}},
        {"model_type", "llava"},
        {"vision_config", vision_config(v)},
        {"text_config", llama_config(m)},
        {"projector_hidden_act", p.activation == Activation::kGelu ? "gelu" : "gelu_pytorch_tanh"},
        {"multimodal_projector_bias", true},
        {"vision_feature_layer", v.feature_layer},
        {"vision_feature_select_strategy", "default"},
        {"tie_word_embeddings", m.tie_embeddings}};
  }
  if (arch == HfArchitecture::kClip) {
    const ModuleSpec& v = *FindKind(spec, ModuleKind::kVit, &n);
    const ModuleSpec& t = *FindKind(spec, ModuleKind::kText, &n);
    Json text = {{"model_type", "clip_text_model"},
                 {"vocab_size", t.vocab_size},
                 {"hidden_size", t.width},
                 {"intermediate_size", t.mlp_dim},
                 {"num_hidden_layers", t.depth},
                 {"num_attention_heads", t.heads},
                 {"max_position_embeddings", t.seq_len},
                 {"hidden_act", act(t.activation)},
                 {"layer_norm_eps", eps(t, 1e-5)},
                 {"projection_dim", t.output_dim},
                 {"eos_token_id", t.pool_at == TextPoolAt::kArgmaxId ? 2 : t.eos_token_id}};
    Json vision = vision_config(v);
    vision["projection_dim"] = v.output_dim;
    return Json{{"architectures", {"CLIPModel"}},
                {"model_type", "clip"},
                {"projection_dim", v.output_dim},
                {"logit_scale_init_value", 2.6592},
                {"text_config", text},
                {"vision_config", vision}};
  }
  Json llama = llama_config(*FindKind(spec, ModuleKind::kLlm, &n));
  llama["architectures"] = {"LlamaForCausalLM"};
  return llama;
}

TensorMap MosaicParameters(const models::MultimodalModelImpl& model) {
  TensorMap out;
  for (const auto& p : model.named_parameters(/*recurse=*/true))
    out.emplace(p.key(), p.value().detach().to(torch::kCPU));
  return out;
}

Status LoadHfWeights(const std::string& folder, models::MultimodalModelImpl& model) {
  MOSAIC_ASSIGN_OR_RETURN(TensorMap hf, ReadModelWeights(folder));
  auto mosaic = HfToMosaic(model.spec(), hf);
  if (!mosaic.ok()) return mosaic.status().WithPrefix(folder);
  return CopyIntoModel(*mosaic, folder, model);
}

StatusOr<ModelSpec> LoadHfSpec(const std::string& folder) {
  const std::string config_path = JoinPath(folder, "config.json");
  MOSAIC_ASSIGN_OR_RETURN(Json config, LoadJsonFile(config_path));
  return SpecFromHfConfig(config, config_path);
}

StatusOr<HfImport> ImportHfModel(const std::string& folder, torch::Device device) {
  HfImport out;
  MOSAIC_ASSIGN_OR_RETURN(out.spec, LoadHfSpec(folder));
  MOSAIC_ASSIGN_OR_RETURN(out.model, models::BuildMultimodalModel(out.spec, torch::kCPU));
  MOSAIC_RETURN_IF_ERROR(LoadHfWeights(folder, *out.model));
  out.model->to(device);
  return out;
}

Status ExportHfModel(const models::MultimodalModelImpl& model, const std::string& folder,
                     torch::ScalarType dtype, int64_t max_shard_bytes) {
  if (dtype != torch::kFloat && dtype != torch::kBFloat16 && dtype != torch::kHalf)
    return InvalidArgument("export dtype must be float32, bfloat16 or float16");
  MOSAIC_ASSIGN_OR_RETURN(Json config, HfConfigFromSpec(model.spec()));
  MOSAIC_ASSIGN_OR_RETURN(TensorMap hf, MosaicToHf(model.spec(), MosaicParameters(model)));
  for (auto& [name, t] : hf)
    t = t.to(dtype);
  config["dtype"] = dtype == torch::kFloat      ? "float32"
                    : dtype == torch::kBFloat16 ? "bfloat16"
                                                : "float16";
  config["torch_dtype"] = config["dtype"];
  if (::mkdir(folder.c_str(), 0755) != 0 && errno != EEXIST)
    return IoError(folder + ": cannot create (" + std::strerror(errno) + ")");
  MOSAIC_RETURN_IF_ERROR(WriteModelWeights(folder, hf, max_shard_bytes));
  return WriteJsonFile(JoinPath(folder, "config.json"), config);
}

// --- Whisper's audio encoder ------------------------------------------------------------------

namespace {

// Whisper's encoder tensors under `p` onto an audio module's parameters (names relative to the
// module: "conv1.weight", "blocks.layers.0.attn.qkv.bias", ...).
std::vector<TensorRule> WhisperRules(const ModuleSpec& a, const std::string& p) {
  const int64_t C = a.width, H = a.mlp_dim, M = a.n_mels, T = a.frames / 2;
  std::vector<TensorRule> r;
  r.push_back({"conv1.weight", {C, M, 3}, {p + "conv1.weight"}, {{C, M, 3}}});
  r.push_back({"conv1.bias", {C}, {p + "conv1.bias"}, {{C}}});
  r.push_back({"conv2.weight", {C, C, 3}, {p + "conv2.weight"}, {{C, C, 3}}});
  r.push_back({"conv2.bias", {C}, {p + "conv2.bias"}, {{C}}});
  r.push_back({"positions", {1, T, C}, {p + "embed_positions.weight"}, {{T, C}}});
  for (int i = 0; i < a.depth; ++i) {
    const std::string mb = "blocks.layers." + std::to_string(i);
    const std::string hb = p + "layers." + std::to_string(i);
    AddLayerNorm(r, mb + ".ln1", hb + ".self_attn_layer_norm", C);
    r.push_back({mb + ".attn.qkv.weight",
                 {3 * C, C},
                 {hb + ".self_attn.q_proj.weight", hb + ".self_attn.k_proj.weight",
                  hb + ".self_attn.v_proj.weight"},
                 {{C, C}, {C, C}, {C, C}}});
    // k_proj has no bias: its rows of Mosaic's fused bias are zeros (key_bias false keeps them).
    r.push_back({mb + ".attn.qkv.bias",
                 {3 * C},
                 {hb + ".self_attn.q_proj.bias", "", hb + ".self_attn.v_proj.bias"},
                 {{C}, {C}, {C}}});
    AddLinear(r, mb + ".attn.out", hb + ".self_attn.out_proj", C, C, true);
    AddLayerNorm(r, mb + ".ln2", hb + ".final_layer_norm", C);
    AddLinear(r, mb + ".mlp.fc1", hb + ".fc1", H, C, true);
    AddLinear(r, mb + ".mlp.fc2", hb + ".fc2", C, H, true);
  }
  AddLayerNorm(r, "ln_post", p + "layer_norm", C);
  return r;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Where a folder's encoder tensors are, and which other tensors it may hold (not used).
struct WhisperLayout {
  std::string prefix;
  std::vector<std::string> unused;  // name prefixes of the decoder / classification head
};

StatusOr<WhisperLayout> DetectWhisperLayout(const TensorMap& hf) {
  bool model_encoder = false, encoder = false;
  for (const auto& [name, t] : hf) {
    model_encoder |= StartsWith(name, "model.encoder.");
    encoder |= StartsWith(name, "encoder.");
  }
  if (model_encoder && encoder)
    return InvalidArgument(
        "tensors under both \"model.encoder.\" and \"encoder.\": two Whisper encoders");
  // WhisperForConditionalGeneration: model.encoder.*, model.decoder.*, proj_out (tied: absent).
  if (model_encoder) return WhisperLayout{"model.encoder.", {"model.decoder.", "proj_out."}};
  // WhisperModel: encoder.*, decoder.*; WhisperForAudioClassification: encoder.*, projector.*,
  // classifier.*, layer_weights.
  if (encoder)
    return WhisperLayout{"encoder.", {"decoder.", "projector.", "classifier.", "layer_weights"}};
  return WhisperLayout{"", {}};  // WhisperEncoder saved on its own
}

}  // namespace

StatusOr<ModuleSpec> WhisperAudioSpec(const Json& config, const std::string& source) {
  if (!config.is_object()) return InvalidArgument(source + ": expected a JSON object");
  ConfigReader c(config, "");
  auto build = [&]() -> StatusOr<ModuleSpec> {
    MOSAIC_ASSIGN_OR_RETURN(std::string type, c.StringOr("model_type", ""));
    if (type != "whisper")
      return InvalidArgument("model_type: \"" + type + "\" is not a Whisper config (whisper)");
    ModuleSpec a;
    a.name = "audio";
    a.kind = ModuleKind::kAudio;
    MOSAIC_ASSIGN_OR_RETURN(a.width, c.Int("d_model"));
    MOSAIC_ASSIGN_OR_RETURN(a.depth, c.Int("encoder_layers"));
    MOSAIC_ASSIGN_OR_RETURN(a.heads, c.Int("encoder_attention_heads"));
    MOSAIC_ASSIGN_OR_RETURN(a.mlp_dim, c.Int("encoder_ffn_dim"));
    MOSAIC_ASSIGN_OR_RETURN(a.n_mels, c.Int("num_mel_bins"));
    MOSAIC_ASSIGN_OR_RETURN(int positions, c.Int("max_source_positions"));
    a.frames = 2 * positions;  // the stride-2 conv halves the frames onto the positions
    MOSAIC_ASSIGN_OR_RETURN(std::string act, c.StringOr("activation_function", "gelu"));
    if (act != "gelu")
      return InvalidArgument(c.Where("activation_function") + ": \"" + act +
                             "\" is not supported (only \"gelu\", which Whisper's conv front "
                             "end uses too)");
    a.activation = Activation::kGelu;
    a.norm_eps = 1e-5;  // nn.LayerNorm's default: WhisperConfig has no eps
    a.key_bias = false;
    a.freeze_positions = true;
    a.norm_before_pool = true;
    a.pool = Pooling::kNone;  // WhisperEncoder's output: last_hidden_state
    return a;
  };
  auto a = build();
  if (!a.ok()) return a.status().WithPrefix(source);
  return a;
}

Status WhisperFits(const ModuleSpec& a) {
  const std::string who = "module \"" + a.name + "\": ";
  if (a.kind != ModuleKind::kAudio)
    return InvalidArgument(who + "Whisper's encoder is an audio module, not " + ToString(a.kind));
  std::vector<std::string> need;
  if (a.activation != Activation::kGelu) need.push_back("\"activation\": \"gelu\"");
  if (a.key_bias) need.push_back("\"key_bias\": false");
  if (!a.freeze_positions) need.push_back("\"freeze_positions\": true");
  if (a.pool != Pooling::kNone && !a.norm_before_pool) need.push_back("\"norm_before_pool\": true");
  if (a.norm_eps > 0 && a.norm_eps != 1e-5) need.push_back("\"norm_eps\": 1e-5");
  if (!need.empty()) {
    std::string list;
    for (size_t i = 0; i < need.size(); ++i)
      list += (i ? ", " : "") + need[i];
    return InvalidArgument(who + "Whisper's encoder needs " + list);
  }
  return Status::Ok();
}

StatusOr<TensorMap> WhisperToMosaic(const ModuleSpec& audio, const TensorMap& hf, int64_t* unused) {
  MOSAIC_ASSIGN_OR_RETURN(WhisperLayout layout, DetectWhisperLayout(hf));
  TensorMap encoder;
  int64_t skipped = 0;
  for (const auto& [name, t] : hf) {
    bool skip = false;
    for (const std::string& u : layout.unused)
      skip |= StartsWith(name, u);
    if (skip) {
      ++skipped;
    } else {
      encoder.emplace(name, t);
    }
  }
  if (unused) *unused = skipped;
  return ToMosaic(WhisperRules(audio, layout.prefix), encoder, "Whisper encoder");
}

StatusOr<TensorMap> MosaicToWhisper(const ModuleSpec& audio, const TensorMap& mosaic) {
  MOSAIC_RETURN_IF_ERROR(WhisperFits(audio));
  TensorMap encoder = mosaic;
  encoder.erase("proj.weight");
  return FromMosaic(WhisperRules(audio, ""), encoder);
}

Json WhisperConfigFromSpec(const ModuleSpec& a) {
  // WhisperEncoder reads the encoder fields; the decoder ones are WhisperConfig's defaults
  // (there is no decoder in the folder).
  return Json{{"architectures", {"WhisperEncoder"}},
              {"model_type", "whisper"},
              {"d_model", a.width},
              {"encoder_layers", a.depth},
              {"encoder_attention_heads", a.heads},
              {"encoder_ffn_dim", a.mlp_dim},
              {"num_mel_bins", a.n_mels},
              {"max_source_positions", a.frames / 2},
              {"activation_function", "gelu"},
              {"dropout", 0.0},
              {"attention_dropout", 0.0},
              {"activation_dropout", 0.0},
              {"encoder_layerdrop", 0.0}};
}

namespace {

TensorMap ModuleParameters(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    out.emplace(p.key(), p.value().detach().to(torch::kCPU));
  return out;
}

// Copies `mosaic` (names relative to `module`) into it; its parameters without a tensor are
// listed in *left (they keep their values).
Status CopyIntoModule(const TensorMap& mosaic, const std::string& source, torch::nn::Module& module,
                      std::vector<std::string>* left) {
  torch::NoGradGuard no_grad;
  std::set<std::string> seen;
  for (auto& p : module.named_parameters(/*recurse=*/true)) {
    auto it = mosaic.find(p.key());
    if (it == mosaic.end()) {
      left->push_back(p.key());
      continue;
    }
    if (it->second.sizes() != p.value().sizes())
      return Internal(source + ": parameter \"" + p.key() + "\" is " + ShapeText(p.value()) +
                      ", its weights " + ShapeText(it->second));
    p.value().copy_(it->second);
    seen.insert(p.key());
  }
  for (const auto& [name, t] : mosaic)
    if (!seen.count(name))
      return Internal(source + ": weights for \"" + name + "\", which the module lacks");
  return Status::Ok();
}

StatusOr<Json> LoadFolderConfig(const std::string& folder) {
  return LoadJsonFile(JoinPath(folder, "config.json"));
}

}  // namespace

StatusOr<WhisperImport> ImportWhisperEncoder(const std::string& folder, torch::Device device) {
  const std::string config_path = JoinPath(folder, "config.json");
  MOSAIC_ASSIGN_OR_RETURN(Json config, LoadJsonFile(config_path));
  WhisperImport out;
  MOSAIC_ASSIGN_OR_RETURN(out.spec, WhisperAudioSpec(config, config_path));
  MOSAIC_ASSIGN_OR_RETURN(TensorMap hf, ReadModelWeights(folder));
  auto mosaic = WhisperToMosaic(out.spec, hf, &out.unused_tensors);
  if (!mosaic.ok()) return mosaic.status().WithPrefix(folder);
  out.encoder = models::AudioEncoder(out.spec);
  std::vector<std::string> left;
  MOSAIC_RETURN_IF_ERROR(CopyIntoModule(*mosaic, folder, *out.encoder, &left));
  if (!left.empty()) return Internal(folder + ": no weight for \"" + left.front() + "\"");
  out.encoder->to(device);
  return out;
}

Status ExportWhisperEncoder(const models::AudioEncoderImpl& encoder, const std::string& folder,
                            torch::ScalarType dtype) {
  if (dtype != torch::kFloat && dtype != torch::kBFloat16 && dtype != torch::kHalf)
    return InvalidArgument("export dtype must be float32, bfloat16 or float16");
  MOSAIC_ASSIGN_OR_RETURN(TensorMap hf, MosaicToWhisper(encoder.spec(), ModuleParameters(encoder)));
  Json config = WhisperConfigFromSpec(encoder.spec());
  for (auto& [name, t] : hf)
    t = t.to(dtype);
  config["dtype"] = dtype == torch::kFloat      ? "float32"
                    : dtype == torch::kBFloat16 ? "bfloat16"
                                                : "float16";
  config["torch_dtype"] = config["dtype"];
  if (::mkdir(folder.c_str(), 0755) != 0 && errno != EEXIST)
    return IoError(folder + ": cannot create (" + std::strerror(errno) + ")");
  MOSAIC_RETURN_IF_ERROR(WriteModelWeights(folder, hf, 0));
  return WriteJsonFile(JoinPath(folder, "config.json"), config);
}

StatusOr<const ModuleSpec*> WhisperTarget(const ModelSpec& spec) {
  std::vector<const ModuleSpec*> audio;
  for (const ModuleSpec& m : spec.modules)
    if (m.kind == ModuleKind::kAudio) audio.push_back(&m);
  if (audio.size() == 1) return audio[0];
  for (const ModuleSpec* m : audio)
    if (m->name == "audio") return m;
  return InvalidArgument("model \"" + spec.name + "\": " +
                         (audio.empty() ? std::string("has no audio module for Whisper's encoder")
                                        : std::to_string(audio.size()) +
                                              " audio modules and none named \"audio\": which "
                                              "one does Whisper's encoder fill?"));
}

std::string HfInitReport::Summary() const {
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i)
      s += (i ? ", " : "") + v[i];
    return s;
  };
  std::string s = "loaded " + join(loaded);
  if (!random.empty()) s += "; randomly initialised: " + join(random);
  if (unused_tensors > 0)
    s += "; " + std::to_string(unused_tensors) + " tensors of the folder not used (" + unused_what +
         ")";
  return s;
}

StatusOr<HfInitReport> InitFromHf(const std::string& folder, models::MultimodalModelImpl& model) {
  HfInitReport report;
  // Without a readable config.json the folder is read as the spec's own architecture.
  StatusOr<Json> read = LoadFolderConfig(folder);
  const Json config = read.ok() ? *read : Json();
  const bool whisper =
      config.is_object() && config.contains("model_type") && config["model_type"] == "whisper";
  if (!whisper) {
    MOSAIC_RETURN_IF_ERROR(LoadHfWeights(folder, model));
    for (const ModuleSpec& m : model.spec().modules)
      if (m.has_parameters()) report.loaded.push_back(m.name);
    return report;
  }
  const std::string config_path = JoinPath(folder, "config.json");
  MOSAIC_ASSIGN_OR_RETURN(ModuleSpec from_config, WhisperAudioSpec(config, config_path));
  auto target = WhisperTarget(model.spec());
  if (!target.ok()) return target.status().WithPrefix(folder);
  const ModuleSpec& a = **target;
  Status fits = WhisperFits(a);
  if (!fits.ok()) return fits.WithPrefix(folder);
  const std::pair<const char*, std::pair<int, int>> sizes[] = {
      {"width (d_model)", {a.width, from_config.width}},
      {"depth (encoder_layers)", {a.depth, from_config.depth}},
      {"heads (encoder_attention_heads)", {a.heads, from_config.heads}},
      {"mlp_dim (encoder_ffn_dim)", {a.mlp_dim, from_config.mlp_dim}},
      {"n_mels (num_mel_bins)", {a.n_mels, from_config.n_mels}},
      {"frames (2 x max_source_positions)", {a.frames, from_config.frames}}};
  for (const auto& [what, v] : sizes) {
    if (v.first != v.second)
      return InvalidArgument(folder + ": module \"" + a.name + "\": " + what + " is " +
                             std::to_string(v.first) + ", the Whisper config's is " +
                             std::to_string(v.second));
  }
  MOSAIC_ASSIGN_OR_RETURN(TensorMap hf, ReadModelWeights(folder));
  auto mosaic = WhisperToMosaic(a, hf, &report.unused_tensors);
  if (!mosaic.ok()) return mosaic.status().WithPrefix(folder);
  auto module = model.module(model.IndexOf(a.name));
  std::vector<std::string> left;
  MOSAIC_RETURN_IF_ERROR(CopyIntoModule(*mosaic, folder, *module, &left));
  report.loaded.push_back(a.name + " (Whisper encoder)");
  for (const ModuleSpec& m : model.spec().modules)
    if (m.name != a.name && m.has_parameters()) report.random.push_back(m.name);
  for (const std::string& p : left)
    report.random.push_back(a.name + "." + p);
  report.unused_what = "decoder / classification head";
  return report;
}

}  // namespace mosaic::interop
