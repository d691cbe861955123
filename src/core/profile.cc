#include "core/profile.h"

#include <map>
#include <set>
#include <sstream>

#include "core/file_io.h"

namespace mosaic {

const ProfileEntry* Profile::Find(const std::string& module, TaskPhase phase) const {
  for (const auto& e : entries)
    if (e.module == module && e.phase == phase) return &e;
  return nullptr;
}

namespace {

bool ReadPhase(const JsonReader& r, TaskPhase* out) {
  std::string phase;
  if (!r.Required("phase", &phase) || !r.ExpectOneOf("phase", phase, {"fwd", "bwd", "opt"}))
    return false;
  *out = phase == "fwd"   ? TaskPhase::kForward
         : phase == "bwd" ? TaskPhase::kBackward
                          : TaskPhase::kOptimizer;
  return true;
}

void ReadMember(const JsonReader& r, PairMember* m) {
  if (!r.ExpectObject()) return;
  r.Required("module", &m->module);
  ReadPhase(r, &m->phase);
  int sms = 0;
  if (r.Required("sms", &sms) && r.ExpectNonNegative("sms", sms)) m->sms = SmCount(sms);
  r.RejectUnknownKeys({"module", "phase", "sms"});
}

}  // namespace

StatusOr<Profile> ParseProfile(const Json& doc) {
  ErrorList errors;
  JsonReader r(doc, &errors);
  Profile p;
  if (!r.ExpectObject()) return errors.ToStatus();
  r.Required("model", &p.model);
  r.Required("device", &p.device);
  if (r.Optional("precision", &p.precision, "bf16"))
    r.ExpectOneOf("precision", p.precision, {"fp32", "bf16", "fp16"});
  if (r.Required("micro_batch_size", &p.micro_batch_size))
    r.ExpectPositive("micro_batch_size", p.micro_batch_size);
  if (r.Required("source", &p.source)) r.ExpectOneOf("source", p.source, {"measured", "synthetic"});
  r.Optional("driver", &p.driver, "");
  r.Optional("torch", &p.torch, "");
  r.Optional("created", &p.created, "");
  if (r.Optional("fused_kernels", &p.fused_kernels, "none") && p.fused_kernels != "none") {
    std::stringstream names(p.fused_kernels);
    std::string name;
    while (std::getline(names, name, '+'))
      r.ExpectOneOf("fused_kernels", name,
                    {"add-norm", "vectorized-norm", "linear-grad", "bias-grad", "patch-gemm"});
  }
  std::map<std::pair<std::string, TaskPhase>, size_t> seen;
  size_t count = r.ForEach("entries", [&](JsonReader e) {
    ProfileEntry entry;
    if (!e.ExpectObject()) return;
    e.Required("module", &entry.module);
    bool phase_ok = ReadPhase(e, &entry.phase);
    double flops = 0, bytes = 0, act = 0;
    if (e.Required("flops", &flops)) e.ExpectNonNegative("flops", flops);
    if (e.Required("bytes", &bytes)) e.ExpectNonNegative("bytes", bytes);
    if (e.Optional("activation_bytes", &act, 0.0)) e.ExpectNonNegative("activation_bytes", act);
    entry.flops = Flops(flops);
    entry.bytes = Bytes(bytes);
    entry.activation_bytes = Bytes(act);
    size_t points = e.ForEach("points", [&](JsonReader pt) {
      if (!pt.ExpectObject()) return;
      int sms = 0;
      double t = 0;
      bool ok = pt.Required("sms", &sms) && pt.ExpectPositive("sms", sms);
      ok = pt.Required("time_us", &t) && pt.ExpectPositive("time_us", t) && ok;
      pt.RejectUnknownKeys({"sms", "time_us"});
      if (!ok) return;
      if (!entry.points.empty() && sms <= entry.points.back().sms.value()) {
        pt.Error("sms", std::to_string(sms) + " must be larger than the previous point's " +
                            std::to_string(entry.points.back().sms.value()) +
                            " (points are sorted by SMs, each once)");
      }
      entry.points.push_back({SmCount(sms), TimeUs(t)});
    });
    if (e.Has("points") && e.node()["points"].is_array() && points == 0)
      e.Error("points", "needs at least one measured point");
    e.RejectUnknownKeys({"module", "phase", "flops", "bytes", "activation_bytes", "points"});
    if (phase_ok && !entry.module.empty()) {
      auto key = std::make_pair(entry.module, entry.phase);
      auto [it, fresh] = seen.emplace(key, p.entries.size());
      if (!fresh) {
        e.Error("duplicate entry for " + entry.module + " " + ToString(entry.phase) +
                " (first at entries[" + std::to_string(it->second) + "])");
      }
    }
    p.entries.push_back(std::move(entry));
  });
  if (r.Has("entries") && r.node()["entries"].is_array() && count == 0)
    r.Error("entries", "a profile needs at least one entry");
  r.ForEach(
      "pairs",
      [&](JsonReader pr) {
        ColocationSample s;
        if (!pr.ExpectObject()) return;
        pr.Child("a", [&](JsonReader a) { ReadMember(a, &s.a); });
        pr.Child("b", [&](JsonReader b) { ReadMember(b, &s.b); });
        double ta = 0, tb = 0;
        if (pr.Required("time_a_us", &ta)) pr.ExpectPositive("time_a_us", ta);
        if (pr.Required("time_b_us", &tb)) pr.ExpectPositive("time_b_us", tb);
        s.time_a = TimeUs(ta);
        s.time_b = TimeUs(tb);
        for (const PairMember* m : {&s.a, &s.b}) {
          if (!m->module.empty() && !seen.count({m->module, m->phase})) {
            pr.Error(std::string(m == &s.a ? "a" : "b") + ".module",
                     "no entry for " + m->module + " " + ToString(m->phase) +
                         " in this profile's entries");
          }
        }
        pr.RejectUnknownKeys({"a", "b", "time_a_us", "time_b_us"});
        p.pairs.push_back(std::move(s));
      },
      /*required=*/false);
  r.Child(
      "step_overhead",
      [&](JsonReader so) {
        for (auto [key, out] : {std::make_pair("zero_grad_us", &p.step_overhead.zero_grad_us),
                                std::make_pair("optimizer_us", &p.step_overhead.optimizer_us)}) {
          if (so.Has(key) && so.Optional(key, out, -1.0)) so.ExpectNonNegative(key, *out);
        }
        so.RejectUnknownKeys({"zero_grad_us", "optimizer_us"});
      },
      /*required=*/false);
  r.RejectUnknownKeys({"model", "device", "precision", "micro_batch_size", "source", "driver",
                       "torch", "created", "fused_kernels", "entries", "pairs", "step_overhead"});
  if (!errors.empty()) return errors.ToStatus();
  return p;
}

StatusOr<Profile> LoadProfile(const std::string& path) {
  MOSAIC_ASSIGN_OR_RETURN(Json doc, LoadJsonFile(path));
  StatusOr<Profile> p = ParseProfile(doc);
  if (!p.ok()) return p.status().WithPrefix(path);
  return p;
}

namespace {
Json MemberJson(const PairMember& m) {
  return {{"module", m.module}, {"phase", ToString(m.phase)}, {"sms", m.sms.value()}};
}
}  // namespace

Json ToJson(const Profile& p) {
  Json j;
  j["model"] = p.model;
  j["device"] = p.device;
  j["precision"] = p.precision;
  j["micro_batch_size"] = p.micro_batch_size;
  j["source"] = p.source;
  if (!p.driver.empty()) j["driver"] = p.driver;
  if (!p.torch.empty()) j["torch"] = p.torch;
  if (!p.created.empty()) j["created"] = p.created;
  if (p.fused_kernels != "none") j["fused_kernels"] = p.fused_kernels;
  Json entries = Json::array();
  for (const auto& e : p.entries) {
    Json o;
    o["module"] = e.module;
    o["phase"] = ToString(e.phase);
    o["flops"] = e.flops.value();
    o["bytes"] = e.bytes.value();
    if (e.activation_bytes.value() > 0) o["activation_bytes"] = e.activation_bytes.value();
    Json pts = Json::array();
    for (const auto& pt : e.points)
      pts.push_back({{"sms", pt.sms.value()}, {"time_us", pt.time.value()}});
    o["points"] = pts;
    entries.push_back(o);
  }
  j["entries"] = entries;
  if (!p.pairs.empty()) {
    Json pairs = Json::array();
    for (const auto& s : p.pairs) {
      pairs.push_back({{"a", MemberJson(s.a)},
                       {"b", MemberJson(s.b)},
                       {"time_a_us", s.time_a.value()},
                       {"time_b_us", s.time_b.value()}});
    }
    j["pairs"] = pairs;
  }
  if (p.step_overhead.zero_grad_us >= 0 || p.step_overhead.optimizer_us >= 0) {
    Json so = Json::object();
    if (p.step_overhead.zero_grad_us >= 0) so["zero_grad_us"] = p.step_overhead.zero_grad_us;
    if (p.step_overhead.optimizer_us >= 0) so["optimizer_us"] = p.step_overhead.optimizer_us;
    j["step_overhead"] = so;
  }
  return j;
}

}  // namespace mosaic
