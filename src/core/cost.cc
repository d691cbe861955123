#include "core/cost.h"

namespace mosaic {

int InputTokensOut(const ModelSpec& model, const std::string& name);

namespace {

// Tokens per sample entering module `m`: its own sequence for encoders, the inputs' tokens for a
// projector, prefix tokens plus text for an LLM.
int InputTokens(const ModelSpec& model, const ModuleSpec& m) {
  switch (m.kind) {
    case ModuleKind::kProjector: {
      int t = 0;
      for (const auto& in : model.InputsOf(m.name))
        t += InputTokensOut(model, in);
      return t;
    }
    case ModuleKind::kLlm: {
      int t = m.seq_len;
      for (const auto& in : model.InputsOf(m.name))
        t += InputTokensOut(model, in);
      return t;
    }
    default:
      return m.sequence_tokens();
  }
}

}  // namespace

// Tokens per sample leaving module `name` (projectors pass their input's count through).
int InputTokensOut(const ModelSpec& model, const std::string& name) {
  const ModuleSpec* m = model.Find(name);
  if (!m) return 0;
  if (m->kind == ModuleKind::kProjector) return InputTokens(model, *m);
  return m->output_tokens();
}

// Note [activation estimate]
// Per token and block, autograd keeps about: the block input and the two LayerNorm outputs
// (3d), q, k, v (3d, fewer with grouped-query attention), the attention output (d), the MLP
// hidden before and after its activation (2 * mlp, 3 * mlp for SwiGLU), and the flash-attention
// log-sum-exp (h, negligible). FlashAttention stores no T x T matrix. This lands within ~20% of
// what PyTorch reports for ViT/GPT blocks; the planner uses it only for memory budgets, and a
// measured profile's activation_bytes replaces it when present.
ModuleCost EstimateModuleCost(const ModelSpec& model, int module_index, int samples) {
  const ModuleSpec& m = model.modules[module_index];
  const double bpe = BytesPerElement(model.precision);
  ModuleCost c;
  double params = 0;         // all trainable parameters
  double matmul_params = 0;  // parameters used in a matmul by every token
  double extra_flops = 0;    // per sample, beyond 2 * matmul_params * tokens
  double act_elems = 0;      // per sample
  const double T = InputTokens(model, m);

  if (m.is_transformer()) {
    const double d = m.width, mlp = m.mlp_dim;
    const double kv = m.kind == ModuleKind::kLlm && m.kv_heads > 0 ? d * m.kv_heads / m.heads : d;
    const bool swiglu = m.kind == ModuleKind::kLlm;
    const double attn = d * (d + 2 * kv) + d * d;
    const double ffn = (swiglu ? 3 : 2) * d * mlp;
    const double block = attn + ffn + (swiglu ? 2 * d : 4 * d + 3 * d + kv * 2 + mlp);
    // A vit read at an inner feature_layer owns every block but runs only the first `run`.
    const double run = m.feature_layer == 0  ? m.depth
                       : m.feature_layer > 0 ? m.feature_layer
                                             : m.depth + 1 + m.feature_layer;
    params += m.depth * block;
    matmul_params += run * (attn + ffn);
    extra_flops += run * 4.0 * T * T * d;  // QK^T and PV, full (non-causal) count
    act_elems += run * T * (3 * d + d + 2 * kv + d + (swiglu ? 3 : 2) * mlp);
    params += swiglu ? d : 2 * d;  // final norm: RMSNorm (scale) or LayerNorm (scale, shift)
    const double out_dim = m.output_dim > 0 ? m.output_dim : 0;
    switch (m.kind) {
      case ModuleKind::kVit: {
        const double patch = double(m.patch_size) * m.patch_size * m.channels;
        const double patches = double(m.image_size / m.patch_size) * (m.image_size / m.patch_size);
        // patch embedding (+ bias), positions, class token, and CLIP's pre-norm (ln_pre).
        params += patch * d + (m.patch_bias ? d : 0) + T * d +
                  (m.pool == Pooling::kCls || m.drop_cls ? d : 0) + 2 * d;
        extra_flops += 2 * patches * patch * d;
        break;
      }
      case ModuleKind::kText:
        params += double(m.vocab_size) * d + m.seq_len * d;
        break;
      case ModuleKind::kAudio:
        params += m.n_mels * d * 3 + d + d * d * 3 + d + T * d;
        extra_flops += 2.0 * m.frames * m.n_mels * d * 3 + 2.0 * T * d * d * 3;
        act_elems += m.frames * d * 2;
        break;
      case ModuleKind::kLlm:
        params += (m.tie_embeddings ? 1.0 : 2.0) * m.vocab_size * d;  // embedding (+ LM head)
        extra_flops += 2.0 * m.seq_len * d * m.vocab_size;  // head on the text positions
        act_elems += m.seq_len * double(m.vocab_size);      // logits for the loss
        break;
      default:
        break;
    }
    if (out_dim > 0) {
      params += d * out_dim;
      extra_flops += 2 * d * out_dim;  // on the pooled vector
    }
  } else if (m.kind == ModuleKind::kProjector) {
    const double hidden = m.projector == ProjectorKind::kMlp2 ? m.hidden_dim : 0;
    matmul_params = hidden > 0 ? m.in_dim * hidden + hidden * m.out_dim : m.in_dim * m.out_dim;
    params = matmul_params + hidden + m.out_dim;
    act_elems = T * (m.in_dim + 2 * hidden + m.out_dim);
  } else if (m.loss == LossKind::kContrastive) {
    params = 1;  // temperature
    int dim = 0;
    auto inputs = model.InputsOf(m.name);
    if (!inputs.empty()) dim = model.Find(inputs[0])->feature_dim();
    // Similarity matrices against the anchor, over the whole batch.
    extra_flops = 2.0 * model.batch_size * dim * (inputs.size() > 1 ? inputs.size() - 1 : 1);
    act_elems = model.batch_size * double(inputs.size());
  }
  c.parameters = params;
  c.forward_flops = Flops(samples * (2 * matmul_params * T + extra_flops));
  c.activation_bytes = Bytes(samples * act_elems * bpe);
  c.forward_traffic = Bytes(params * bpe + 2.0 * samples * act_elems * bpe);
  c.parameter_bytes = Bytes(16.0 * params);
  return c;
}

}  // namespace mosaic
