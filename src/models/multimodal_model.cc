#include "models/multimodal_model.h"

#include <ATen/autocast_mode.h>

#include <array>
#include <cstdio>
#include <sstream>

#include "core/cost.h"
#include "models/audio.h"
#include "models/llm.h"
#include "models/losses.h"
#include "models/projector.h"
#include "models/text.h"
#include "models/vit.h"

namespace mosaic::models {

namespace {

torch::Tensor MaybeTo(const torch::Tensor& t, torch::Device device) {
  return t.defined() ? t.to(device) : t;
}
torch::Tensor MaybeSlice(const torch::Tensor& t, int64_t start, int64_t length) {
  return t.defined() ? t.narrow(0, start, length) : t;
}

// register_module names may not contain dots.
std::string SubmoduleName(const std::string& name) {
  std::string s = name;
  for (char& c : s)
    if (c == '.') c = '_';
  return s;
}

bool IsNextTokenLoss(const ModuleSpec& m) {
  return m.kind == ModuleKind::kLoss && m.loss == LossKind::kNextToken;
}

}  // namespace

int64_t Batch::size() const {
  for (const torch::Tensor* t : {&images, &tokens, &audio})
    if (t->defined()) return t->size(0);
  for (const auto& [name, t] : inputs)
    if (t.defined()) return t.size(0);
  return 0;
}

Batch Batch::To(torch::Device device) const {
  Batch b;
  b.images = MaybeTo(images, device);
  b.tokens = MaybeTo(tokens, device);
  b.token_mask = MaybeTo(token_mask, device);
  b.audio = MaybeTo(audio, device);
  for (const auto& [name, t] : inputs)
    b.inputs[name] = MaybeTo(t, device);
  return b;
}

Batch Batch::Slice(int64_t start, int64_t length) const {
  Batch b;
  b.images = MaybeSlice(images, start, length);
  b.tokens = MaybeSlice(tokens, start, length);
  b.token_mask = MaybeSlice(token_mask, start, length);
  b.audio = MaybeSlice(audio, start, length);
  for (const auto& [name, t] : inputs)
    b.inputs[name] = MaybeSlice(t, start, length);
  return b;
}

MultimodalModelImpl::MultimodalModelImpl(const ModelSpec& spec) : spec_(spec) {
  for (const ModuleSpec& m : spec_.modules) {
    std::shared_ptr<torch::nn::Module> module;
    const std::string name = SubmoduleName(m.name);
    switch (m.kind) {
      case ModuleKind::kVit:
        module = register_module(name, VisionTransformer(m));
        break;
      case ModuleKind::kText:
        module = register_module(name, TextTransformer(m));
        break;
      case ModuleKind::kLlm:
        module = register_module(name, CausalLm(m));
        break;
      case ModuleKind::kProjector:
        module = register_module(name, Projector(m));
        break;
      case ModuleKind::kAudio:
        module = register_module(name, AudioEncoder(m));
        break;
      case ModuleKind::kLoss:
        if (m.loss == LossKind::kContrastive) {
          module = register_module(name, ContrastiveLoss(m));
        }
        break;
    }
    modules_.push_back(module);
  }
}

std::vector<torch::Tensor> MultimodalModelImpl::ModuleInputs(int index, const Batch& batch,
                                                             const ModuleOutputs& outputs) const {
  const ModuleSpec& m = spec_.modules.at(index);
  auto own = [&](const torch::Tensor& field) {
    auto it = batch.inputs.find(m.name);
    torch::Tensor t = it != batch.inputs.end() ? it->second : field;
    TORCH_CHECK(t.defined(), m.name, ": the batch has no input for this ", ToString(m.kind),
                " module");
    return t;
  };
  auto produced = [&](const std::string& producer) {
    auto it = outputs.find(producer);
    TORCH_CHECK(it != outputs.end(), m.name, ": input from \"", producer, "\" not computed yet");
    return it->second;
  };
  std::vector<torch::Tensor> in;
  switch (m.kind) {
    case ModuleKind::kVit:
      return {own(batch.images)};
    case ModuleKind::kAudio:
      return {own(batch.audio)};
    case ModuleKind::kText:
      return {own(batch.tokens), batch.token_mask};
    case ModuleKind::kLlm:
      for (const auto& p : spec_.InputsOf(m.name))
        in.push_back(produced(p));
      in.push_back(own(batch.tokens));
      return in;
    case ModuleKind::kProjector:
    case ModuleKind::kLoss:
      for (const auto& p : spec_.InputsOf(m.name))
        in.push_back(produced(p));
      if (IsNextTokenLoss(m)) {
        TORCH_CHECK(batch.tokens.defined(), m.name, ": a next-token loss needs batch.tokens");
        in.push_back(batch.tokens);
        in.push_back(batch.token_mask);
      }
      return in;
  }
  return in;
}

torch::Tensor MultimodalModelImpl::ForwardModule(int index, const std::vector<torch::Tensor>& in) {
  const ModuleSpec& m = spec_.modules.at(index);
  const auto& module = modules_.at(index);
  switch (m.kind) {
    case ModuleKind::kVit:
      TORCH_CHECK(in.size() == 1, m.name, ": vit takes {images}");
      return module->as<VisionTransformerImpl>()->forward(in[0]);
    case ModuleKind::kAudio:
      TORCH_CHECK(in.size() == 1, m.name, ": audio takes {mels}");
      return module->as<AudioEncoderImpl>()->forward(in[0]);
    case ModuleKind::kText:
      TORCH_CHECK(in.size() == 1 || in.size() == 2, m.name, ": text takes {tokens, mask}");
      return module->as<TextTransformerImpl>()->forward(in[0],
                                                        in.size() > 1 ? in[1] : torch::Tensor());
    case ModuleKind::kProjector:
      TORCH_CHECK(in.size() == 1, m.name, ": projector takes one input");
      return module->as<ProjectorImpl>()->forward(in[0]);
    case ModuleKind::kLlm: {
      TORCH_CHECK(!in.empty(), m.name, ": llm takes {prefixes..., tokens}");
      torch::Tensor prefix;
      if (in.size() == 2) {
        prefix = in[0];
      } else if (in.size() > 2) {
        prefix = torch::cat(std::vector<torch::Tensor>(in.begin(), in.end() - 1), 1);
      }
      return module->as<CausalLmImpl>()->forward(prefix, in.back());
    }
    case ModuleKind::kLoss:
      if (IsNextTokenLoss(m)) {
        TORCH_CHECK(in.size() == 3, m.name, ": next-token loss takes {logits, tokens, mask}");
        return NextTokenLoss(in[0], in[1], in[2]);
      }
      return module->as<ContrastiveLossImpl>()->forward(in);
  }
  TORCH_INTERNAL_ASSERT(false, "unknown module kind");
}

ModelOutput MultimodalModelImpl::forward(const Batch& batch) {
  ModelOutput out;
  for (const std::string& name : spec_.TopologicalOrder()) {
    const int i = spec_.IndexOf(name);
    torch::Tensor y = ForwardModule(i, ModuleInputs(i, batch, out.outputs));
    out.outputs[name] = y;
    if (spec_.modules[i].is_loss()) out.loss = out.loss.defined() ? out.loss + y : y;
  }
  return out;
}

std::vector<torch::Tensor> MultimodalModelImpl::ModuleParameters(int index) const {
  const auto& module = modules_.at(index);
  return module ? module->parameters() : std::vector<torch::Tensor>{};
}

int64_t MultimodalModelImpl::ParameterCount(int index) const {
  int64_t n = 0;
  for (const auto& p : ModuleParameters(index))
    n += p.numel();
  return n;
}

int64_t MultimodalModelImpl::ParameterCount() const {
  int64_t n = 0;
  for (int i = 0; i < num_modules(); ++i)
    n += ParameterCount(i);
  return n;
}

StatusOr<MultimodalModel> BuildMultimodalModel(const ModelSpec& spec, torch::Device device) {
  if (spec.modules.empty()) return InvalidArgument("model \"" + spec.name + "\" has no modules");
  try {
    MultimodalModel model(spec);
    model->to(device);
    return model;
  } catch (const c10::Error& e) {
    return InvalidArgument("model \"" + spec.name + "\": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return InvalidArgument("model \"" + spec.name + "\": " + e.what());
  }
}

namespace {

std::string ShapeString(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes() << " " << t.scalar_type();
  return os.str();
}

}  // namespace

Status CheckBatch(const ModelSpec& spec, const Batch& batch, bool check_values) {
  const int64_t B = batch.size();
  if (B == 0) return InvalidArgument("batch: empty (no input tensor)");
  auto fail = [&](const ModuleSpec& m, const std::string& field, const torch::Tensor& t,
                  const std::string& want) {
    return InvalidArgument("batch." + field + " for module \"" + m.name + "\": expected " + want +
                           ", got " + (t.defined() ? ShapeString(t) : std::string("nothing")));
  };
  auto input = [&](const ModuleSpec& m, const torch::Tensor& field, std::string* name) {
    auto it = batch.inputs.find(m.name);
    *name = it != batch.inputs.end() ? "inputs[" + m.name + "]" : *name;
    return it != batch.inputs.end() ? it->second : field;
  };
  auto check_tokens = [&](const ModuleSpec& m) -> Status {
    std::string name = "tokens";
    torch::Tensor t = input(m, batch.tokens, &name);
    const std::string want = "(" + std::to_string(B) + ", T <= " + std::to_string(m.seq_len) +
                             ") Long" + (m.kind == ModuleKind::kLlm ? "" : ", T >= 1");
    if (!t.defined() || t.dim() != 2 || t.size(0) != B || t.size(1) > m.seq_len ||
        t.size(1) < (m.kind == ModuleKind::kLlm ? 2 : 1) || t.scalar_type() != torch::kLong)
      return fail(m, name, t, want);
    if (batch.token_mask.defined() && batch.token_mask.sizes() != batch.tokens.sizes())
      return fail(m, "token_mask", batch.token_mask, "the shape of batch.tokens");
    if (check_values) {
      auto [lo, hi] = torch::aminmax(t);
      if (lo.item<int64_t>() < 0 || hi.item<int64_t>() >= m.vocab_size)
        return InvalidArgument("batch." + name + " for module \"" + m.name + "\": token ids in [" +
                               std::to_string(lo.item<int64_t>()) + ", " +
                               std::to_string(hi.item<int64_t>()) + "] outside [0, " +
                               std::to_string(m.vocab_size) + ")");
    }
    return Status::Ok();
  };
  for (const ModuleSpec& m : spec.modules) {
    switch (m.kind) {
      case ModuleKind::kVit: {
        std::string name = "images";
        torch::Tensor t = input(m, batch.images, &name);
        const int64_t ch = m.channels > 0 ? m.channels : 3;
        if (!t.defined() || t.dim() != 4 || t.size(0) != B || t.size(1) != ch ||
            t.size(2) != m.image_size || t.size(3) != m.image_size || !t.is_floating_point())
          return fail(m, name, t,
                      "(" + std::to_string(B) + ", " + std::to_string(ch) + ", " +
                          std::to_string(m.image_size) + ", " + std::to_string(m.image_size) +
                          ") float");
        break;
      }
      case ModuleKind::kAudio: {
        std::string name = "audio";
        torch::Tensor t = input(m, batch.audio, &name);
        if (!t.defined() || t.dim() != 3 || t.size(0) != B || t.size(1) != m.n_mels ||
            t.size(2) > m.frames || t.size(2) < 2 || t.size(2) % 2 != 0 || !t.is_floating_point())
          return fail(m, name, t,
                      "(" + std::to_string(B) + ", " + std::to_string(m.n_mels) +
                          ", F even <= " + std::to_string(m.frames) + ") float");
        break;
      }
      case ModuleKind::kText:
      case ModuleKind::kLlm:
        MOSAIC_RETURN_IF_ERROR(check_tokens(m));
        break;
      default:
        break;
    }
  }
  return Status::Ok();
}

namespace {

std::string HumanCount(double n) {
  char buf[32];
  if (n >= 1e9) {
    std::snprintf(buf, sizeof(buf), "%.2fB", n / 1e9);
  } else if (n >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.2fM", n / 1e6);
  } else if (n >= 1e3) {
    std::snprintf(buf, sizeof(buf), "%.1fK", n / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f", n);
  }
  return buf;
}

std::string Gflops(double f) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), f >= 100e9 ? "%.0f" : (f >= 1e9 ? "%.1f" : "%.3g"), f / 1e9);
  return buf;
}

}  // namespace

std::string ModelTable(const MultimodalModelImpl& model) {
  const ModelSpec& spec = model.spec();
  std::vector<std::array<std::string, 4>> rows;
  rows.push_back({"module", "kind", "params", "fwd GFLOP/sample"});
  double total_params = 0, total_flops = 0;
  for (int i = 0; i < model.num_modules(); ++i) {
    const ModuleSpec& m = spec.modules[i];
    const double params = static_cast<double>(model.ParameterCount(i));
    const double flops = EstimateModuleCost(spec, i, 1).forward_flops.value();
    total_params += params;
    total_flops += flops;
    std::string kind = ToString(m.kind);
    if (m.kind == ModuleKind::kLoss) kind += std::string(" (") + ToString(m.loss) + ")";
    rows.push_back({m.name, kind, HumanCount(params), Gflops(flops)});
  }
  rows.push_back({"total", "", HumanCount(total_params), Gflops(total_flops)});
  size_t w[4] = {0, 0, 0, 0};
  for (const auto& r : rows)
    for (int c = 0; c < 4; ++c)
      w[c] = std::max(w[c], r[c].size());
  std::ostringstream os;
  os << "model " << spec.name << ": batch " << spec.batch_size << " in " << spec.micro_batches
     << " micro-batch(es), " << ToString(spec.precision) << "\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    if (r == 1 || r + 1 == rows.size()) {
      os << std::string(w[0] + w[1] + w[2] + w[3] + 6, '-') << "\n";
    }
    for (int c = 0; c < 4; ++c) {
      const std::string& s = rows[r][c];
      const std::string pad(w[c] - s.size(), ' ');
      os << (c < 2 ? s + pad : pad + s) << (c < 3 ? "  " : "\n");
    }
  }
  return os.str();
}

Batch SyntheticBatch(const ModelSpec& spec, int64_t batch_size, torch::Device device,
                     uint64_t seed) {
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  Batch b;
  auto set = [&](torch::Tensor& field, const std::string& name, torch::Tensor t) {
    if (!field.defined()) {
      field = t;
    } else if (field.sizes() != t.sizes()) {
      b.inputs[name] = t;
    }
  };
  for (const ModuleSpec& m : spec.modules) {
    switch (m.kind) {
      case ModuleKind::kVit: {
        const int64_t ch = m.channels > 0 ? m.channels : 3;
        set(b.images, m.name, at::randn({batch_size, ch, m.image_size, m.image_size}, gen, f32));
        break;
      }
      case ModuleKind::kAudio:
        set(b.audio, m.name, at::randn({batch_size, m.n_mels, m.frames}, gen, f32));
        break;
      case ModuleKind::kText:
      case ModuleKind::kLlm: {
        torch::Tensor t = at::randint(1, m.vocab_size, {batch_size, m.seq_len}, gen,
                                      torch::TensorOptions().dtype(torch::kLong));
        t.select(1, m.seq_len - 1).fill_(m.vocab_size - 1);  // end of text
        set(b.tokens, m.name, t);
        break;
      }
      default:
        break;
    }
  }
  if (b.tokens.defined()) b.token_mask = torch::ones(b.tokens.sizes(), torch::kBool);
  return b.To(device);
}

AutocastGuard::AutocastGuard(torch::Device device, Precision precision) {
  if (!device.is_cuda() || precision == Precision::kFp32) return;
  const auto type = device.type();
  prev_enabled_ = at::autocast::is_autocast_enabled(type);
  prev_dtype_ = at::autocast::get_autocast_dtype(type);
  at::autocast::set_autocast_enabled(type, true);
  at::autocast::set_autocast_dtype(type, precision == Precision::kBf16 ? at::kBFloat16 : at::kHalf);
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  // Leaving the outermost autocast region drops the cached bf16 copies of the weights.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
  at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
}

}  // namespace mosaic::models
