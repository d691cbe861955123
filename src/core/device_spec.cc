#include "core/device_spec.h"

#include "core/file_io.h"

namespace mosaic {

const char* ToString(DeviceKind k) {
  return k == DeviceKind::kGpu ? "gpu" : "cpu";
}

bool DeviceSpec::IsValidQuota(SmCount sms) const {
  const int g = sm_granularity.value();
  const int n = sms.value();
  if (n <= 0 || n > sm_count.value()) return false;
  if (n % g == 0 && n / g <= sm_groups) return true;
  const int rest = n - remainder().value();
  return remainder().value() > 0 && rest >= 0 && rest % g == 0 && rest / g <= sm_groups;
}

namespace {
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMiB = 1024.0 * 1024.0;
}  // namespace

StatusOr<DeviceSpec> ParseDeviceSpec(const Json& doc) {
  ErrorList errors;
  JsonReader r(doc, &errors);
  DeviceSpec d;
  if (!r.ExpectObject()) return errors.ToStatus();
  if (r.Required("name", &d.name) && d.name.empty()) r.Error("name", "must not be empty");
  std::string kind;
  if (r.Optional("kind", &kind, "gpu") && r.ExpectOneOf("kind", kind, {"gpu", "cpu"}))
    d.kind = kind == "cpu" ? DeviceKind::kCpu : DeviceKind::kGpu;
  int sms = 0, gran = 1;
  if (r.Required("sm_count", &sms)) r.ExpectPositive("sm_count", sms);
  if (r.Optional("sm_granularity", &gran, 1)) r.ExpectPositive("sm_granularity", gran);
  d.sm_count = SmCount(sms);
  d.sm_granularity = SmCount(gran);
  if (sms > 0 && gran > 0) {
    if (gran > sms) {
      r.Error("sm_granularity",
              std::to_string(gran) + " is larger than sm_count " + std::to_string(sms));
    }
    if (r.Optional("sm_groups", &d.sm_groups, sms / gran) && r.Has("sm_groups")) {
      if (d.sm_groups <= 0 || d.sm_groups * gran > sms) {
        r.Error("sm_groups", std::to_string(d.sm_groups) + " groups of " + std::to_string(gran) +
                                 " SMs do not fit in sm_count " + std::to_string(sms));
      }
    }
  }
  auto positive = [&](const char* key, double* out, bool required) {
    bool ok = required ? r.Required(key, out) : r.Optional(key, out, 0.0);
    if (ok && (required || r.Has(key))) r.ExpectPositive(key, *out);
  };
  double memory_gib = 0, bf16 = 0, fp32 = 0, measured = 0, bw = 0, l2 = 0, launch = 0;
  double link_bw = 0, link_lat = 0;
  positive("memory_gib", &memory_gib, true);
  positive("peak_tflops_bf16", &bf16, true);
  positive("peak_tflops_fp32", &fp32, true);
  positive("measured_tflops_bf16", &measured, false);
  positive("memory_bandwidth_gbps", &bw, true);
  positive("l2_cache_mib", &l2, false);
  if (r.Optional("launch_overhead_us", &launch, 0.0))
    r.ExpectNonNegative("launch_overhead_us", launch);
  r.Child(
      "interconnect",
      [&](JsonReader ic) {
        if (ic.Required("bandwidth_gbps", &link_bw)) ic.ExpectPositive("bandwidth_gbps", link_bw);
        if (ic.Required("latency_us", &link_lat)) ic.ExpectNonNegative("latency_us", link_lat);
        ic.RejectUnknownKeys({"bandwidth_gbps", "latency_us"});
      },
      /*required=*/false);
  r.Child(
      "executor",
      [&](JsonReader ex) {
        ExecutorSpec e;
        if (ex.Optional("zero_grad_us_per_tensor", &e.zero_grad_us_per_tensor, 0.0))
          ex.ExpectNonNegative("zero_grad_us_per_tensor", e.zero_grad_us_per_tensor);
        if (ex.Optional("eager_op_us", &e.eager_op_us, 0.0))
          ex.ExpectNonNegative("eager_op_us", e.eager_op_us);
        if (ex.Optional("optimizer_bytes_per_param", &e.optimizer_bytes_per_param, 40.0))
          ex.ExpectNonNegative("optimizer_bytes_per_param", e.optimizer_bytes_per_param);
        if (ex.Optional("bandwidth_efficiency", &e.bandwidth_efficiency, 1.0) &&
            !(e.bandwidth_efficiency > 0 && e.bandwidth_efficiency <= 1)) {
          ex.Error("bandwidth_efficiency",
                   "must be in (0, 1], got " + std::to_string(e.bandwidth_efficiency));
        }
        ex.RejectUnknownKeys({"zero_grad_us_per_tensor", "eager_op_us",
                              "optimizer_bytes_per_param", "bandwidth_efficiency"});
        d.executor = e;
      },
      /*required=*/false);
  if (measured > 0 && bf16 > 0 && measured > bf16) {
    r.Error("measured_tflops_bf16", "measured peak " + std::to_string(measured) +
                                        " exceeds the datasheet peak_tflops_bf16");
  }
  r.RejectUnknownKeys({"name", "kind", "sm_count", "sm_granularity", "sm_groups", "memory_gib",
                       "peak_tflops_bf16", "peak_tflops_fp32", "measured_tflops_bf16",
                       "memory_bandwidth_gbps", "l2_cache_mib", "launch_overhead_us",
                       "interconnect", "executor"});
  if (!errors.empty()) return errors.ToStatus();
  d.memory = Bytes(memory_gib * kGiB);
  d.peak_flops_bf16 = FlopsPerSec(bf16 * 1e12);
  d.peak_flops_fp32 = FlopsPerSec(fp32 * 1e12);
  d.measured_flops_bf16 = FlopsPerSec(measured * 1e12);
  d.memory_bandwidth = BytesPerSec(bw * 1e9);
  d.l2_cache = Bytes(l2 * kMiB);
  d.launch_overhead = TimeUs(launch);
  d.link_bandwidth = BytesPerSec(link_bw * 1e9);
  d.link_latency = TimeUs(link_lat);
  return d;
}

StatusOr<DeviceSpec> LoadDeviceSpec(const std::string& path) {
  MOSAIC_ASSIGN_OR_RETURN(Json doc, LoadJsonFile(path));
  StatusOr<DeviceSpec> spec = ParseDeviceSpec(doc);
  if (!spec.ok()) return spec.status().WithPrefix(path);
  return spec;
}

Json ToJson(const DeviceSpec& d) {
  Json j;
  j["name"] = d.name;
  j["kind"] = ToString(d.kind);
  j["sm_count"] = d.sm_count.value();
  j["sm_granularity"] = d.sm_granularity.value();
  j["sm_groups"] = d.sm_groups;
  j["memory_gib"] = d.memory.value() / kGiB;
  j["peak_tflops_bf16"] = d.peak_flops_bf16.value() / 1e12;
  j["peak_tflops_fp32"] = d.peak_flops_fp32.value() / 1e12;
  if (d.measured_flops_bf16.value() > 0)
    j["measured_tflops_bf16"] = d.measured_flops_bf16.value() / 1e12;
  j["memory_bandwidth_gbps"] = d.memory_bandwidth.value() / 1e9;
  if (d.l2_cache.value() > 0) j["l2_cache_mib"] = d.l2_cache.value() / kMiB;
  j["launch_overhead_us"] = d.launch_overhead.value();
  if (d.link_bandwidth.value() > 0) {
    j["interconnect"] = {{"bandwidth_gbps", d.link_bandwidth.value() / 1e9},
                         {"latency_us", d.link_latency.value()}};
  }
  if (d.executor) {
    j["executor"] = {{"zero_grad_us_per_tensor", d.executor->zero_grad_us_per_tensor},
                     {"eager_op_us", d.executor->eager_op_us},
                     {"optimizer_bytes_per_param", d.executor->optimizer_bytes_per_param},
                     {"bandwidth_efficiency", d.executor->bandwidth_efficiency}};
  }
  return j;
}

}  // namespace mosaic
