// `mosaic profile`: measures every module's forward and backward on this GPU under SM quotas
// from one granule to the whole GPU (and pairs of modules side by side) and writes a profile
// (core/profile.h) for `mosaic plan` and `mosaic simulate`.
//
//   mosaic profile --model clip-b16 --device-spec h100-sxm -o
//   configs/profiles/clip-b16-h100-sxm.json mosaic profile -m llava-small --quotas 8,32,64,132
//   --reps 5 -o /tmp/llava.json
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "cli/planning_inputs.h"
#include "core/file_io.h"
#include "engine/profiler.h"
#include "models/fused_norm.h"
#include "models/multimodal_model.h"

namespace mosaic::cli {
namespace {

struct ProfileFlags {
  std::string model;
  std::string device = "h100-sxm";
  std::string configs = "configs";
  std::string out;
  std::string quotas;
  int warmup = 3;
  int reps = 10;
  int micro_batch_size = 0;
  bool no_pairs = false;
  FusedKernelFlags fused;  // measured as `mosaic train|bench` will run (recorded in the profile)
};

int Run(const ProfileFlags& f) {
  const char* cmd = "profile";
  if (!f.out.empty()) {
    if (Status s = CheckCanWrite(f.out); !s.ok()) return ReportError(cmd, s);
  }
  StatusOr<std::string> mpath = ResolveSpecPath(f.model, f.configs, "models", "model");
  if (!mpath.ok()) return ReportError(cmd, mpath.status());
  StatusOr<std::string> dpath = ResolveSpecPath(f.device, f.configs, "devices", "device");
  if (!dpath.ok()) return ReportError(cmd, dpath.status());
  StatusOr<ModelSpec> spec = LoadModelSpec(*mpath);
  if (!spec.ok()) return ReportError(cmd, spec.status());
  StatusOr<DeviceSpec> dev = LoadDeviceSpec(*dpath);
  if (!dev.ok()) return ReportError(cmd, dev.status());
  engine::ProfileOptions o;
  o.warmup = f.warmup;
  o.repetitions = f.reps;
  o.pairs = !f.no_pairs;
  o.micro_batch_size = f.micro_batch_size;
  if (!f.quotas.empty()) {
    std::stringstream in(f.quotas);
    std::string item;
    while (std::getline(in, item, ',')) {
      try {
        o.quotas.push_back(std::stoi(item));
      } catch (const std::exception&) {
        return ReportError(cmd, InvalidArgument("--quotas: \"" + item + "\" is not a number"));
      }
    }
  }
  if (o.warmup < 0 || o.repetitions < 1)
    return ReportError(cmd, InvalidArgument("--warmup must be >= 0 and --reps >= 1"));
  o.progress = [](const std::string& line) { std::cerr << "  " << line << "\n"; };
  if (!torch::cuda::is_available())
    return ReportError(cmd, Unavailable("no CUDA GPU here: profiles are measured on the GPU"));
  const torch::Device device(torch::kCUDA, 0);
  ApplyFusedKernelFlags(f.fused);
  torch::manual_seed(1);
  StatusOr<models::MultimodalModel> model = models::BuildMultimodalModel(*spec, device);
  if (!model.ok()) return ReportError(cmd, model.status());
  std::cerr << "profiling " << spec->name << " (micro-batch "
            << (f.micro_batch_size > 0 ? f.micro_batch_size : spec->micro_batch_size()) << ", "
            << ToString(spec->precision) << ", fused kernels: " << models::FusedKernelsInUse()
            << ") on " << dev->name << "\n";
  StatusOr<Profile> p = engine::ProfileModel(*model, *dev, device, o);
  if (!p.ok()) return ReportError(cmd, p.status());
  p->fused_kernels = models::FusedKernelsInUse();
  const Json doc = ToJson(*p);
  StatusOr<Profile> back = ParseProfile(doc);  // what `mosaic validate` checks
  if (!back.ok())
    return ReportError(cmd, Internal("profile does not validate: " + back.status().message()));
  if (f.out.empty()) {
    std::printf("%s\n", doc.dump(2).c_str());
  } else {
    Status s = WriteJsonFile(f.out, doc);
    if (!s.ok()) return ReportError(cmd, s);
    std::fprintf(stderr, "wrote %s (%zu entries, %zu pairs)\n", f.out.c_str(), p->entries.size(),
                 p->pairs.size());
  }
  return kExitOk;
}

}  // namespace

void AddProfileCommand(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "profile", "Measure each module's forward/backward under SM quotas on this GPU");
  auto f = std::make_shared<ProfileFlags>();
  sub->add_option("--model,-m", f->model,
                  "Model: a spec file or a zoo name (configs/models/<name>.json)")
      ->required()
      ->envname("MOSAIC_MODEL");
  sub->add_option("--device-spec,--device,-d", f->device,
                  "Device spec the profile is for (file or configs/devices/<name>.json)")
      ->envname("MOSAIC_DEVICE")
      ->capture_default_str();
  sub->add_option("--configs", f->configs, "Folder holding models/ and devices/")
      ->envname("MOSAIC_CONFIGS")
      ->capture_default_str();
  sub->add_option("-o,--out", f->out, "Output profile JSON (default: stdout)");
  sub->add_option("--quotas", f->quotas,
                  "Comma-separated SM quotas (default: every granule count, then the whole GPU)");
  sub->add_option("--warmup", f->warmup, "Untimed replays per measurement")->capture_default_str();
  sub->add_option("--reps", f->reps, "Timed replays per measurement (median kept)")
      ->capture_default_str();
  sub->add_option("--micro-batch-size", f->micro_batch_size,
                  "Samples per measured micro-batch (default: the spec's)");
  sub->add_flag("--no-pairs", f->no_pairs, "Skip timing pairs of modules side by side");
  AddFusedKernelFlags(sub, &f->fused);
  SetCommand(sub, [f] { return Run(*f); });
}

}  // namespace mosaic::cli
