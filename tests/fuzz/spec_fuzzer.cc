// libFuzzer targets for the spec parsers: any byte string must give either a valid spec or a
// clear error (Status), never a crash, hang or sanitizer report. One source, one target per
// parser (MOSAIC_FUZZ_TARGET selects it at compile time):
//
//   fuzz_model_spec   ParseJson + ParseModelSpec (+ ToJson round trip of what parses)
//   fuzz_device_spec  ParseJson + ParseDeviceSpec
//   fuzz_plan         ParseJson + ParsePlan + ValidatePlan against clip-b16 on h100-sxm
//   fuzz_profile      ParseJson + ParseProfile
//
//   build-fuzz/tests/fuzz/fuzz_plan -max_total_time=60 configs/plans
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/device_spec.h"
#include "core/file_io.h"
#include "core/model_spec.h"
#include "core/plan.h"
#include "core/profile.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "fuzz invariant broken: %s\n", what);
  abort();
}

template <typename T, typename Parse>
void RoundTrip(const mosaic::Json& doc, Parse parse) {
  mosaic::StatusOr<T> spec = parse(doc);
  if (!spec.ok()) {
    if (spec.status().message().empty()) Fail("error without a message");
    return;
  }
  // What parses must save and parse again to the same document.
  mosaic::Json saved = mosaic::ToJson(*spec);
  mosaic::StatusOr<T> again = parse(saved);
  if (!again.ok()) Fail("saved spec does not parse");
  if (mosaic::ToJson(*again) != saved) Fail("round trip changed the spec");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  mosaic::StatusOr<mosaic::Json> doc = mosaic::ParseJson(text, "input");
  if (!doc.ok()) return 0;
#if MOSAIC_FUZZ_TARGET == 1
  RoundTrip<mosaic::ModelSpec>(*doc,
                               [](const mosaic::Json& j) { return mosaic::ParseModelSpec(j); });
#elif MOSAIC_FUZZ_TARGET == 2
  RoundTrip<mosaic::DeviceSpec>(*doc,
                                [](const mosaic::Json& j) { return mosaic::ParseDeviceSpec(j); });
#elif MOSAIC_FUZZ_TARGET == 3
  static const mosaic::ModelSpec model = [] {
    auto m = mosaic::LoadModelSpec(MOSAIC_SOURCE_DIR "/configs/models/clip-b16.json");
    if (!m.ok()) Fail("cannot load clip-b16");
    return *m;
  }();
  static const mosaic::DeviceSpec device = [] {
    auto d = mosaic::LoadDeviceSpec(MOSAIC_SOURCE_DIR "/configs/devices/h100-sxm.json");
    if (!d.ok()) Fail("cannot load h100-sxm");
    return *d;
  }();
  RoundTrip<mosaic::Plan>(*doc, [](const mosaic::Json& j) { return mosaic::ParsePlan(j); });
  mosaic::StatusOr<mosaic::Plan> plan = mosaic::ParsePlan(*doc);
  if (plan.ok() && plan->task_count() < 10000) {
    mosaic::Status s = mosaic::ValidatePlan(*plan, model, device);
    if (!s.ok() && s.message().empty()) Fail("plan error without a message");
  }
#elif MOSAIC_FUZZ_TARGET == 4
  RoundTrip<mosaic::Profile>(*doc, [](const mosaic::Json& j) { return mosaic::ParseProfile(j); });
#else
#error "define MOSAIC_FUZZ_TARGET 1..4"
#endif
  return 0;
}
