// SwitchScope: sets one of the models' process-wide switches (FuseAddNorm in fused_norm.h,
// FuseLinearGrad and FuseBiasGrad in linear.h, PatchGemm in vit.h, ...) for a scope and restores
// the previous setting when the scope ends, also when an exception or a failed test assertion
// leaves it early (tests, A/B runs).
//
//   const SwitchScope<PatchGemm, SetPatchGemm> gemm(true);
#pragma once

namespace mosaic::models {

template <bool (*kGet)(), void (*kSet)(bool)>
class SwitchScope {
 public:
  explicit SwitchScope(bool on) : previous_(kGet()) { kSet(on); }
  ~SwitchScope() { kSet(previous_); }
  SwitchScope(const SwitchScope&) = delete;
  SwitchScope& operator=(const SwitchScope&) = delete;

 private:
  bool previous_;
};

}  // namespace mosaic::models
