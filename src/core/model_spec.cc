#include "core/model_spec.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "core/file_io.h"

namespace mosaic {

const char* ToString(ModuleKind k) {
  switch (k) {
    case ModuleKind::kVit:
      return "vit";
    case ModuleKind::kText:
      return "text";
    case ModuleKind::kLlm:
      return "llm";
    case ModuleKind::kProjector:
      return "projector";
    case ModuleKind::kAudio:
      return "audio";
    case ModuleKind::kLoss:
      return "loss";
  }
  return "?";
}
const char* ToString(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
  }
  return "?";
}
const char* ToString(Pooling p) {
  switch (p) {
    case Pooling::kCls:
      return "cls";
    case Pooling::kMean:
      return "mean";
    case Pooling::kNone:
      return "none";
  }
  return "?";
}
const char* ToString(ProjectorKind p) {
  return p == ProjectorKind::kLinear ? "linear" : "mlp2";
}
const char* ToString(LossKind l) {
  return l == LossKind::kContrastive ? "contrastive" : "next_token";
}
const char* ToString(Activation a) {
  switch (a) {
    case Activation::kGeluTanh:
      return "gelu_tanh";
    case Activation::kQuickGelu:
      return "quick_gelu";
    case Activation::kGelu:
      return "gelu";
  }
  return "?";
}
const char* ToString(TextPoolAt p) {
  switch (p) {
    case TextPoolAt::kLastReal:
      return "last";
    case TextPoolAt::kArgmaxId:
      return "argmax";
    case TextPoolAt::kFirstEos:
      return "eos";
  }
  return "?";
}
int BytesPerElement(Precision p) {
  return p == Precision::kFp32 ? 4 : 2;
}

int ModuleSpec::feature_dim() const {
  if (kind == ModuleKind::kProjector) return out_dim;
  if (kind == ModuleKind::kLoss) return 0;
  return output_dim > 0 ? output_dim : width;
}

int ModuleSpec::sequence_tokens() const {
  switch (kind) {
    case ModuleKind::kVit: {
      if (patch_size <= 0) return 0;
      int side = image_size / patch_size;
      return side * side + (pool == Pooling::kCls || drop_cls ? 1 : 0);
    }
    case ModuleKind::kText:
    case ModuleKind::kLlm:
      return seq_len;
    case ModuleKind::kAudio:
      return frames / 2;
    default:
      return 0;
  }
}

int ModuleSpec::output_tokens() const {
  if (kind == ModuleKind::kLoss) return 0;
  if (kind == ModuleKind::kProjector) return 0;  // as many as its input; see ModelSpec
  if (pool != Pooling::kNone) return 1;
  if (kind == ModuleKind::kVit) {
    int side = patch_size > 0 ? image_size / patch_size : 0;
    return side * side;  // patch tokens only, no class token
  }
  return sequence_tokens();
}

int ModelSpec::IndexOf(const std::string& n) const {
  for (size_t i = 0; i < modules.size(); ++i)
    if (modules[i].name == n) return static_cast<int>(i);
  return -1;
}

const ModuleSpec* ModelSpec::Find(const std::string& n) const {
  int i = IndexOf(n);
  return i < 0 ? nullptr : &modules[i];
}

std::vector<std::string> ModelSpec::InputsOf(const std::string& n) const {
  std::vector<std::string> out;
  for (const auto& [from, to] : edges)
    if (to == n) out.push_back(from);
  return out;
}

std::vector<std::string> ModelSpec::ConsumersOf(const std::string& n) const {
  std::vector<std::string> out;
  for (const auto& [from, to] : edges)
    if (from == n) out.push_back(to);
  return out;
}

std::vector<std::string> ModelSpec::TopologicalOrder() const {
  // Kahn's algorithm, always taking the ready module declared first.
  std::vector<int> indegree(modules.size(), 0);
  for (const auto& e : edges) {
    int to = IndexOf(e.second);
    if (to >= 0 && IndexOf(e.first) >= 0) ++indegree[to];
  }
  std::vector<std::string> order;
  std::vector<bool> done(modules.size(), false);
  for (size_t round = 0; round < modules.size(); ++round) {
    int pick = -1;
    for (size_t i = 0; i < modules.size(); ++i) {
      if (!done[i] && indegree[i] == 0) {
        pick = static_cast<int>(i);
        break;
      }
    }
    if (pick < 0) break;  // a cycle: callers validate first
    done[pick] = true;
    order.push_back(modules[pick].name);
    for (const auto& e : edges) {
      if (e.first == modules[pick].name) {
        int to = IndexOf(e.second);
        if (to >= 0) --indegree[to];
      }
    }
  }
  return order;
}

namespace {

ModuleKind ParseKind(const std::string& s) {
  if (s == "text") return ModuleKind::kText;
  if (s == "llm") return ModuleKind::kLlm;
  if (s == "projector") return ModuleKind::kProjector;
  if (s == "audio") return ModuleKind::kAudio;
  if (s == "loss") return ModuleKind::kLoss;
  return ModuleKind::kVit;
}

Pooling ParsePooling(const std::string& s) {
  if (s == "mean") return Pooling::kMean;
  if (s == "none") return Pooling::kNone;
  return Pooling::kCls;
}

// Bounds on sizes: far above any real model, low enough that every size product Mosaic forms
// in int (tokens, 8 * width / 3, ...) cannot overflow. Found by fuzzing.
constexpr int kMaxSize = 1 << 20;        // widths, depths, heads, sequence lengths, pixels
constexpr int kMaxVocab = 1 << 24;       // vocabulary, batch
constexpr int64_t kMaxTokens = 1 << 20;  // tokens per sample inside one module

bool ExpectAtMost(const JsonReader& r, const char* key, int value, int max) {
  if (value <= max) return true;
  r.Error(key, std::to_string(value) + " is too large (at most " + std::to_string(max) + ")");
  return false;
}

// Reads a positive integer member; records an error when it is absent, not an integer, <= 0 or
// above `max`, and then leaves 0 so that later checks (which test `> 0`) skip it.
void PositiveInt(const JsonReader& r, const char* key, int* out, int max = kMaxSize) {
  if (!(r.Required(key, out) && r.ExpectPositive(key, *out) && ExpectAtMost(r, key, *out, max)))
    *out = 0;
}
void OptionalPositiveInt(const JsonReader& r, const char* key, int* out, int fallback) {
  if (!r.Optional(key, out, fallback)) {
    *out = 0;
  } else if (r.Has(key) && !(r.ExpectPositive(key, *out) && ExpectAtMost(r, key, *out, kMaxSize))) {
    *out = 0;
  }
}

void ReadActivation(const JsonReader& r, ModuleSpec& m) {
  std::string act;
  if (r.Optional("activation", &act, "gelu_tanh") &&
      r.ExpectOneOf("activation", act, {"gelu_tanh", "quick_gelu", "gelu"})) {
    m.activation = act == "gelu_tanh"    ? Activation::kGeluTanh
                   : act == "quick_gelu" ? Activation::kQuickGelu
                                         : Activation::kGelu;
  }
}

void ReadTransformer(const JsonReader& r, ModuleSpec& m) {
  PositiveInt(r, "width", &m.width);
  PositiveInt(r, "depth", &m.depth);
  PositiveInt(r, "heads", &m.heads);
  if (m.width > 0 && m.heads > 0 && m.width % m.heads != 0) {
    r.Error("heads", std::to_string(m.heads) + " does not divide width " + std::to_string(m.width));
  }
  OptionalPositiveInt(r, "mlp_dim", &m.mlp_dim, 0);
  if (!r.Has("mlp_dim") && m.width > 0) {
    // GELU MLPs use 4x; SwiGLU (llm) uses 2/3 of 4x rounded up to a multiple of 256 (Llama).
    m.mlp_dim = m.kind == ModuleKind::kLlm ? ((8 * m.width / 3 + 255) / 256) * 256 : 4 * m.width;
  }
  if (r.Has("output_dim")) {
    if (!(r.Required("output_dim", &m.output_dim) &&
          r.ExpectNonNegative("output_dim", m.output_dim) &&
          ExpectAtMost(r, "output_dim", m.output_dim, kMaxSize)))
      m.output_dim = 0;
  }
  const double default_eps = m.kind == ModuleKind::kLlm ? 1e-6 : 1e-5;
  if (r.Optional("norm_eps", &m.norm_eps, default_eps) && !(m.norm_eps > 0 && m.norm_eps < 1)) {
    r.Error("norm_eps", "must be in (0, 1)");
  }
  if (m.kind == ModuleKind::kVit || m.kind == ModuleKind::kText || m.kind == ModuleKind::kAudio)
    ReadActivation(r, m);
  std::string pool;
  const char* default_pool = m.kind == ModuleKind::kVit ? "cls" : "mean";
  if (m.kind == ModuleKind::kText) default_pool = "last";
  if (m.kind == ModuleKind::kLlm) default_pool = "none";
  if (r.Optional("pool", &pool, default_pool)) {
    if (m.kind == ModuleKind::kText) {
      // text pools at the end-of-text token, as CLIP does (found as the last real token, the
      // highest token id or the first eos_token_id), or by mean.
      if (r.ExpectOneOf("pool", pool, {"last", "argmax", "eos", "mean", "none"})) {
        const bool at_token = pool == "last" || pool == "argmax" || pool == "eos";
        m.pool = at_token ? Pooling::kCls : ParsePooling(pool);
        m.pool_at = pool == "argmax" ? TextPoolAt::kArgmaxId
                    : pool == "eos"  ? TextPoolAt::kFirstEos
                                     : TextPoolAt::kLastReal;
      }
    } else if (m.kind == ModuleKind::kLlm) {
      if (pool != "none") r.Error("pool", "an llm does not pool; use \"none\"");
      m.pool = Pooling::kNone;
    } else if (r.ExpectOneOf("pool", pool, {"cls", "mean", "none"})) {
      m.pool = ParsePooling(pool);
    }
  }
}

void ReadModule(const JsonReader& r, ModuleSpec& m) {
  if (!r.ExpectObject()) return;
  if (r.Required("name", &m.name) && m.name.empty()) r.Error("name", "must not be empty");
  if (m.name.find('.') != std::string::npos)
    r.Error("name", "\"" + m.name + "\" must not contain '.' (task ids use it)");
  std::string kind;
  if (!r.Required("kind", &kind) ||
      !r.ExpectOneOf("kind", kind, {"vit", "text", "llm", "projector", "audio", "loss"})) {
    return;
  }
  m.kind = ParseKind(kind);
  switch (m.kind) {
    case ModuleKind::kVit:
      ReadTransformer(r, m);
      PositiveInt(r, "image_size", &m.image_size);
      PositiveInt(r, "patch_size", &m.patch_size);
      OptionalPositiveInt(r, "channels", &m.channels, 3);
      r.Optional("patch_bias", &m.patch_bias, true);
      if (r.Optional("feature_layer", &m.feature_layer, 0) && m.depth > 0 &&
          (m.feature_layer > m.depth || m.feature_layer < -m.depth)) {
        r.Error("feature_layer", std::to_string(m.feature_layer) + " is not in [-" +
                                     std::to_string(m.depth) + ", " + std::to_string(m.depth) +
                                     "] (depth " + std::to_string(m.depth) + ")");
      }
      if (m.feature_layer != 0 && m.output_dim > 0)
        r.Error("output_dim", "not applied with feature_layer (an inner hidden state is output)");
      if (r.Optional("drop_cls", &m.drop_cls, false) && m.drop_cls && m.pool != Pooling::kNone)
        r.Error("drop_cls", "only with pool \"none\"");
      if (m.image_size > 0 && m.patch_size > 0) {
        const int64_t side = m.image_size / m.patch_size;
        if (side * side > kMaxTokens) {
          r.Error("patch_size", "image_size / patch_size = " + std::to_string(side) + " gives " +
                                    std::to_string(side * side) + " patches, more than " +
                                    std::to_string(kMaxTokens));
        }
      }
      if (m.image_size > 0 && m.patch_size > 0 && m.image_size % m.patch_size != 0) {
        r.Error("patch_size", std::to_string(m.patch_size) + " does not divide image_size " +
                                  std::to_string(m.image_size));
      }
      r.RejectUnknownKeys({"name", "kind", "width", "depth", "heads", "mlp_dim", "output_dim",
                           "pool", "image_size", "patch_size", "channels", "patch_bias",
                           "activation", "norm_eps", "feature_layer", "drop_cls"});
      break;
    case ModuleKind::kText:
      ReadTransformer(r, m);
      PositiveInt(r, "seq_len", &m.seq_len);
      PositiveInt(r, "vocab_size", &m.vocab_size, kMaxVocab);
      r.Optional("causal", &m.causal, true);
      if (m.pool_at == TextPoolAt::kFirstEos) {
        if (r.Required("eos_token_id", &m.eos_token_id) && m.eos_token_id < 0) {
          r.Error("eos_token_id", "must be >= 0");
        } else if (m.vocab_size > 0 && m.eos_token_id >= m.vocab_size) {
          r.Error("eos_token_id", std::to_string(m.eos_token_id) + " is not below vocab_size " +
                                      std::to_string(m.vocab_size));
        }
      } else if (r.Has("eos_token_id")) {
        r.Error("eos_token_id", "only with pool \"eos\"");
      }
      r.RejectUnknownKeys({"name", "kind", "width", "depth", "heads", "mlp_dim", "output_dim",
                           "pool", "seq_len", "vocab_size", "causal", "activation", "norm_eps",
                           "eos_token_id"});
      break;
    case ModuleKind::kLlm:
      ReadTransformer(r, m);
      PositiveInt(r, "seq_len", &m.seq_len);
      PositiveInt(r, "vocab_size", &m.vocab_size, kMaxVocab);
      m.causal = true;
      OptionalPositiveInt(r, "kv_heads", &m.kv_heads, m.heads);
      if (m.heads > 0 && m.kv_heads > 0 && m.heads % m.kv_heads != 0) {
        r.Error("kv_heads",
                std::to_string(m.kv_heads) + " does not divide heads " + std::to_string(m.heads));
      }
      if (m.width > 0 && m.heads > 0 && m.width % m.heads == 0 && (m.width / m.heads) % 2 != 0) {
        r.Error("heads", "head size " + std::to_string(m.width / m.heads) +
                             " must be even for rotary positions");
      }
      if (r.Optional("rope_theta", &m.rope_theta, 10000.0))
        r.ExpectPositive("rope_theta", m.rope_theta);
      if (m.output_dim != 0) r.Error("output_dim", "an llm has no output projection");
      r.Optional("tie_embeddings", &m.tie_embeddings, false);
      r.RejectUnknownKeys({"name", "kind", "width", "depth", "heads", "mlp_dim", "pool", "seq_len",
                           "vocab_size", "kv_heads", "rope_theta", "norm_eps", "tie_embeddings"});
      break;
    case ModuleKind::kAudio:
      ReadTransformer(r, m);
      PositiveInt(r, "n_mels", &m.n_mels);
      PositiveInt(r, "frames", &m.frames);
      if (m.frames > 0 && m.frames % 2 != 0) {
        r.Error("frames",
                std::to_string(m.frames) + " must be even (the stride-2 conv front end halves it)");
      }
      r.Optional("key_bias", &m.key_bias, true);
      r.Optional("freeze_positions", &m.freeze_positions, false);
      r.Optional("norm_before_pool", &m.norm_before_pool, false);
      r.RejectUnknownKeys({"name", "kind", "width", "depth", "heads", "mlp_dim", "output_dim",
                           "pool", "n_mels", "frames", "norm_eps", "activation", "key_bias",
                           "freeze_positions", "norm_before_pool"});
      break;
    case ModuleKind::kProjector: {
      std::string p;
      if (r.Optional("projector", &p, "mlp2") && r.ExpectOneOf("projector", p, {"linear", "mlp2"}))
        m.projector = p == "linear" ? ProjectorKind::kLinear : ProjectorKind::kMlp2;
      PositiveInt(r, "in_dim", &m.in_dim);
      PositiveInt(r, "out_dim", &m.out_dim);
      OptionalPositiveInt(r, "hidden_dim", &m.hidden_dim,
                          m.projector == ProjectorKind::kMlp2 ? m.out_dim : 0);
      if (m.projector == ProjectorKind::kLinear && r.Has("hidden_dim"))
        r.Error("hidden_dim", "a linear projector has no hidden layer");
      if (m.projector == ProjectorKind::kMlp2) {
        ReadActivation(r, m);
      } else if (r.Has("activation")) {
        r.Error("activation", "a linear projector has no activation");
      }
      m.pool = Pooling::kNone;
      r.RejectUnknownKeys(
          {"name", "kind", "projector", "in_dim", "hidden_dim", "out_dim", "activation"});
      break;
    }
    case ModuleKind::kLoss: {
      std::string l;
      if (r.Required("loss", &l) && r.ExpectOneOf("loss", l, {"contrastive", "next_token"}))
        m.loss = l == "contrastive" ? LossKind::kContrastive : LossKind::kNextToken;
      r.RejectUnknownKeys({"name", "kind", "loss"});
      break;
    }
  }
}

// Cross-module checks: edges name modules, no cycles, dimensions agree along edges, every
// module's output reaches a loss.
void CheckGraph(const JsonReader& root, const ModelSpec& spec) {
  const size_t errors_before = root.errors_count();
  const size_t n = spec.modules.size();
  std::vector<std::vector<int>> out(n);
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < spec.edges.size(); ++i) {
    const auto& [from, to] = spec.edges[i];
    std::string where = "edges[" + std::to_string(i) + "]";
    int a = spec.IndexOf(from), b = spec.IndexOf(to);
    if (a < 0) root.Error(where + "[0]", "unknown module \"" + from + "\"");
    if (b < 0) root.Error(where + "[1]", "unknown module \"" + to + "\"");
    if (a < 0 || b < 0) continue;
    if (a == b) root.Error(where, "module \"" + from + "\" feeds itself");
    if (!seen.insert(spec.edges[i]).second)
      root.Error(where, "duplicate edge " + from + " -> " + to);
    if (spec.modules[a].is_loss())
      root.Error(where, "loss module \"" + from + "\" cannot feed another module");
    out[a].push_back(b);
  }
  if (root.errors_count() != errors_before) return;  // later checks assume sound edges

  // Cycle detection by DFS colors; report the cycle's path.
  std::vector<int> color(n, 0), parent(n, -1);
  bool cycle_reported = false;
  std::function<void(int)> dfs = [&](int u) {
    color[u] = 1;
    for (int v : out[u]) {
      if (cycle_reported) return;
      if (color[v] == 1) {
        std::vector<std::string> path{spec.modules[v].name};
        for (int w = u; w != v && w >= 0; w = parent[w])
          path.push_back(spec.modules[w].name);
        path.push_back(spec.modules[v].name);
        std::reverse(path.begin() + 1, path.end() - 1);
        std::string text;
        for (size_t k = 0; k < path.size(); ++k)
          text += (k ? " -> " : "") + path[k];
        root.Error("edges", "dependency cycle " + text);
        cycle_reported = true;
        return;
      }
      if (color[v] == 0) {
        parent[v] = u;
        dfs(v);
      }
    }
    color[u] = 2;
  };
  for (size_t i = 0; i < n && !cycle_reported; ++i)
    if (color[i] == 0) dfs(static_cast<int>(i));
  if (cycle_reported) return;

  bool has_loss = false;
  for (size_t i = 0; i < n; ++i) {
    const ModuleSpec& m = spec.modules[i];
    std::string where = "modules[" + std::to_string(i) + "]";
    std::vector<std::string> inputs = spec.InputsOf(m.name);
    auto dim_of = [&](const std::string& name) {
      const ModuleSpec* p = spec.Find(name);
      return p ? p->feature_dim() : 0;
    };
    switch (m.kind) {
      case ModuleKind::kVit:
      case ModuleKind::kText:
      case ModuleKind::kAudio:
        if (!inputs.empty())
          root.Error(where, "an encoder (" + std::string(ToString(m.kind)) +
                                ") takes raw data, but edges feed it from \"" + inputs[0] + "\"");
        break;
      case ModuleKind::kProjector:
        if (inputs.size() != 1) {
          root.Error(where,
                     "a projector needs exactly one input, has " + std::to_string(inputs.size()));
        } else if (dim_of(inputs[0]) != m.in_dim) {
          root.Error(where + ".in_dim", std::to_string(m.in_dim) + " does not match the " +
                                            std::to_string(dim_of(inputs[0])) +
                                            "-wide features of \"" + inputs[0] + "\"");
        }
        break;
      case ModuleKind::kLlm:
        for (const auto& in : inputs) {
          if (dim_of(in) != m.width)
            root.Error(where + ".width", std::to_string(m.width) + " does not match the " +
                                             std::to_string(dim_of(in)) + "-wide tokens from \"" +
                                             in + "\"");
        }
        break;
      case ModuleKind::kLoss:
        has_loss = true;
        if (m.loss == LossKind::kContrastive) {
          if (inputs.size() < 2) {
            root.Error(where, "a contrastive loss needs at least two inputs, has " +
                                  std::to_string(inputs.size()));
          }
          for (const auto& in : inputs) {
            const ModuleSpec* p = spec.Find(in);
            if (p && (p->pool == Pooling::kNone || p->kind == ModuleKind::kLlm))
              root.Error(where, "contrastive input \"" + in + "\" must be pooled to one vector");
            if (p && !inputs.empty() && dim_of(in) != dim_of(inputs[0])) {
              root.Error(where, "contrastive inputs differ in width: \"" + inputs[0] + "\" has " +
                                    std::to_string(dim_of(inputs[0])) + ", \"" + in + "\" has " +
                                    std::to_string(dim_of(in)));
            }
          }
        } else {
          const ModuleSpec* p = inputs.size() == 1 ? spec.Find(inputs[0]) : nullptr;
          if (!p || p->kind != ModuleKind::kLlm)
            root.Error(where, "a next_token loss needs exactly one input, an llm");
        }
        break;
    }
    if (m.kind != ModuleKind::kLoss && spec.ConsumersOf(m.name).empty() &&
        m.kind != ModuleKind::kLlm) {
      root.Error(where, "\"" + m.name + "\" feeds nothing: no path to a loss");
    }
    if (m.kind == ModuleKind::kLlm) {
      bool to_loss = false;
      for (const auto& c : spec.ConsumersOf(m.name)) {
        const ModuleSpec* consumer = spec.Find(c);
        to_loss |= consumer && consumer->is_loss();
      }
      if (!to_loss) root.Error(where, "llm \"" + m.name + "\" must feed a next_token loss");
    }
  }
  if (!has_loss) root.Error("modules", "no loss module: nothing to train");
}

}  // namespace

StatusOr<ModelSpec> ParseModelSpec(const Json& doc) {
  ErrorList errors;
  JsonReader r(doc, &errors);
  ModelSpec spec;
  if (!r.ExpectObject()) return errors.ToStatus();
  if (r.Required("name", &spec.name) && spec.name.empty()) r.Error("name", "must not be empty");
  r.Optional("description", &spec.description, "");
  if (r.Required("batch_size", &spec.batch_size) && r.ExpectPositive("batch_size", spec.batch_size))
    ExpectAtMost(r, "batch_size", spec.batch_size, kMaxVocab);
  if (r.Optional("micro_batches", &spec.micro_batches, 1) &&
      r.ExpectPositive("micro_batches", spec.micro_batches) && spec.batch_size > 0 &&
      spec.batch_size % spec.micro_batches != 0) {
    r.Error("micro_batches", std::to_string(spec.micro_batches) + " does not divide batch_size " +
                                 std::to_string(spec.batch_size));
  }
  std::string precision;
  if (r.Optional("precision", &precision, "bf16") &&
      r.ExpectOneOf("precision", precision, {"fp32", "bf16", "fp16"})) {
    spec.precision = precision == "fp32"   ? Precision::kFp32
                     : precision == "fp16" ? Precision::kFp16
                                           : Precision::kBf16;
  }
  size_t count = r.ForEach("modules", [&](JsonReader m) {
    spec.modules.emplace_back();
    ReadModule(m, spec.modules.back());
  });
  if (r.Has("modules") && r.node()["modules"].is_array() && count == 0)
    r.Error("modules", "must list at least one module");
  if (count > 1024) r.Error("modules", std::to_string(count) + " modules; at most 1024");
  std::map<std::string, int> first_index;
  for (size_t i = 0; i < spec.modules.size(); ++i) {
    const std::string& name = spec.modules[i].name;
    if (name.empty()) continue;
    auto [it, fresh] = first_index.emplace(name, static_cast<int>(i));
    if (!fresh) {
      r.Error("modules[" + std::to_string(i) + "].name", "duplicate module name \"" + name +
                                                             "\" (first at modules[" +
                                                             std::to_string(it->second) + "])");
    }
  }
  r.ForEach("edges", [&](JsonReader e) {
    const Json& v = e.node();
    if (!v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_string()) {
      e.Error("expected [\"producer\", \"consumer\"], got " + Describe(v));
      return;
    }
    spec.edges.emplace_back(v[0].get<std::string>(), v[1].get<std::string>());
  });
  r.RejectUnknownKeys(
      {"name", "description", "batch_size", "micro_batches", "precision", "modules", "edges"});
  if (errors.empty()) CheckGraph(r, spec);
  if (!errors.empty()) return errors.ToStatus();
  return spec;
}

StatusOr<ModelSpec> LoadModelSpec(const std::string& path) {
  MOSAIC_ASSIGN_OR_RETURN(Json doc, LoadJsonFile(path));
  StatusOr<ModelSpec> spec = ParseModelSpec(doc);
  if (!spec.ok()) return spec.status().WithPrefix(path);
  return spec;
}

Json ToJson(const ModelSpec& spec) {
  Json j;
  j["name"] = spec.name;
  if (!spec.description.empty()) j["description"] = spec.description;
  j["batch_size"] = spec.batch_size;
  j["micro_batches"] = spec.micro_batches;
  j["precision"] = ToString(spec.precision);
  Json mods = Json::array();
  for (const ModuleSpec& m : spec.modules) {
    Json o;
    o["name"] = m.name;
    o["kind"] = ToString(m.kind);
    if (m.is_transformer()) {
      o["width"] = m.width;
      o["depth"] = m.depth;
      o["heads"] = m.heads;
      o["mlp_dim"] = m.mlp_dim;
      if (m.kind != ModuleKind::kLlm) o["output_dim"] = m.output_dim;
      if (m.kind == ModuleKind::kText) {
        o["pool"] = m.pool == Pooling::kCls ? ToString(m.pool_at) : ToString(m.pool);
        if (m.pool == Pooling::kCls && m.pool_at == TextPoolAt::kFirstEos)
          o["eos_token_id"] = m.eos_token_id;
      } else {
        o["pool"] = ToString(m.pool);
      }
      if (m.activation != Activation::kGeluTanh) o["activation"] = ToString(m.activation);
      const double default_eps = m.kind == ModuleKind::kLlm ? 1e-6 : 1e-5;
      if (m.norm_eps > 0 && m.norm_eps != default_eps) o["norm_eps"] = m.norm_eps;
    }
    switch (m.kind) {
      case ModuleKind::kVit:
        o["image_size"] = m.image_size;
        o["patch_size"] = m.patch_size;
        o["channels"] = m.channels;
        if (!m.patch_bias) o["patch_bias"] = false;
        if (m.feature_layer != 0) o["feature_layer"] = m.feature_layer;
        if (m.drop_cls) o["drop_cls"] = true;
        break;
      case ModuleKind::kText:
        o["seq_len"] = m.seq_len;
        o["vocab_size"] = m.vocab_size;
        o["causal"] = m.causal;
        break;
      case ModuleKind::kLlm:
        o["seq_len"] = m.seq_len;
        o["vocab_size"] = m.vocab_size;
        o["kv_heads"] = m.kv_heads;
        o["rope_theta"] = m.rope_theta;
        if (m.tie_embeddings) o["tie_embeddings"] = true;
        break;
      case ModuleKind::kAudio:
        o["n_mels"] = m.n_mels;
        o["frames"] = m.frames;
        if (!m.key_bias) o["key_bias"] = false;
        if (m.freeze_positions) o["freeze_positions"] = true;
        if (m.norm_before_pool) o["norm_before_pool"] = true;
        break;
      case ModuleKind::kProjector:
        o["projector"] = ToString(m.projector);
        o["in_dim"] = m.in_dim;
        if (m.projector == ProjectorKind::kMlp2) o["hidden_dim"] = m.hidden_dim;
        if (m.activation != Activation::kGeluTanh) o["activation"] = ToString(m.activation);
        o["out_dim"] = m.out_dim;
        break;
      case ModuleKind::kLoss:
        o["loss"] = ToString(m.loss);
        break;
    }
    mods.push_back(o);
  }
  j["modules"] = mods;
  Json edges = Json::array();
  for (const auto& [from, to] : spec.edges)
    edges.push_back(Json::array({from, to}));
  j["edges"] = edges;
  return j;
}

}  // namespace mosaic
