// PerfModel: predicts how fast each task of a step runs, alone or next to others, on dedicated
// SMs or on shared streams. Built from a profile (measured or synthetic) for one micro-batch
// size; what the simulator asks whenever the set of running tasks changes.
//
//   MOSAIC_ASSIGN_OR_RETURN(PerfModel pm, PerfModel::Build(model, device, profile,
//                                                          /*micro_batch_size=*/16));
//   int v = pm.Kind(model.IndexOf("vision"), TaskPhase::kForward);
//   TimeUs alone = pm.Isolated(v, 64);                 // dedicated 64 SMs, nothing beside it
//   RunningTask run[2] = {{v, /*shared=*/true, 0}, {t, true, 0}};
//   TaskRate rate[2];
//   pm.Evaluate(run, 2, /*shared_pool_sms=*/132, rate);  // both on plain streams
//
// The functional forms (docs/planning.md): time vs SMs in Note [scaling curve]; shared streams
// in Note [shared streams] and Note [stream priorities]; colocation in Note [contention];
// calibration in Note [calibration rule]; the synthetic law in Note [synthetic scaling law].
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/profile.h"
#include "core/status.h"
#include "core/task_graph.h"
#include "core/units.h"
#include "perfmodel/calibration.h"
#include "perfmodel/scaling_curve.h"
#include "perfmodel/synthetic_profile.h"

namespace mosaic {

struct PerfModelOptions {
  // Colocation coefficient kappa (Note [contention]); negative: fit from the profile's measured
  // pairs, or default_contention when it has none.
  double contention = -1;
  double default_contention = 0.3;
  // A task's demand on a shared stream: the SMs within (1 + epsilon) of its full-GPU time.
  double demand_epsilon = 0.05;
  // Shared streams divide the pool in proportion to (FLOPs per kernel)^gamma (Note [shared
  // streams]); negative: fit from the profile's measured shared pairs, or the default.
  double shared_weight_exponent = -1;
  double default_shared_weight_exponent = 1.0;
  // Data-parallel GPUs; above 1 each optimizer task also waits for its gradient all-reduce
  // (ring, over the device's link), an SM-independent time.
  int world_size = 1;
  SyntheticLaw law;
};

// One task running now: its kind (PerfModel::Kind), and where: dedicated `sms`, or a shared
// stream dividing the pool with the other shared tasks.
struct RunningTask {
  int kind = 0;
  bool shared = false;
  double sms = 0;    // dedicated quota; ignored for shared tasks
  int priority = 0;  // shared only: its stream's priority (Note [stream priorities])
};

struct TaskRate {
  double sms = 0;          // SMs it runs on (a shared task: its share of the pool)
  double useful_sms = 0;   // SMs it keeps busy (shared: at most its demand), for utilization
  double isolated_us = 0;  // its time alone on `sms`
  double slowdown = 1;     // colocation factor, >= 1
  double rate = 0;         // fraction of the task done per microsecond
};

// The executor's work in a step outside the plan's tasks (Note [executor overhead]); all zero
// without the device's "executor" constants.
struct StepOverheadModel {
  bool serial_optimizer = false;  // optimizer tasks are no-ops in their phase; `after` runs them
  double before_us = 0;           // gradients zeroed before the first task
  double after_us = 0;            // clipping + AdamW (+ all-reduces when world_size > 1)
  double parameters = 0;          // what the law used
  int parameter_tensors = 0;
  bool measured_before = false, measured_after = false;  // from the profile's step_overhead
};

class PerfModel {
 public:
  static StatusOr<PerfModel> Build(const ModelSpec& model, const DeviceSpec& device,
                                   const Profile& profile, int micro_batch_size,
                                   const PerfModelOptions& options = {},
                                   const Calibration* calibration = nullptr);
  // Kappa and gamma fitted to the profile's measured pairs (Note [contention]): the pair is
  // simulated (both start together; the survivor then runs alone) and the squared log errors
  // of both members' times are minimized over a grid. Options' non-negative values are kept;
  // without pairs (or without shared pairs, for gamma) the defaults apply.
  struct ColocationFit {
    double contention = 0;
    double shared_weight_exponent = 1;
    double rms_log_error = 0;  // of the fitted pair times, 0 without pairs
    int pairs = 0;
  };
  static StatusOr<ColocationFit> FitColocation(const ModelSpec& model, const DeviceSpec& device,
                                               const Profile& profile,
                                               const PerfModelOptions& options = {});
  // Kappa alone (FitColocation's), `fallback` when the profile has no pairs.
  static StatusOr<double> FitContention(const ModelSpec& model, const DeviceSpec& device,
                                        const Profile& profile, double fallback,
                                        const PerfModelOptions& options = {});
  // Times of two tasks started together, each on its place (dedicated sms, or shared when
  // sms == 0), the survivor then running alone: what a measured pair records.
  std::pair<TimeUs, TimeUs> PairTimes(const RunningTask& a, const RunningTask& b) const;

  static int Kind(int module_index, TaskPhase phase) { return module_index * 3 + int(phase); }
  int kinds() const { return static_cast<int>(curves_.size()); }
  bool has(int kind) const { return kind >= 0 && kind < kinds() && present_[kind]; }

  // Time alone: on `sms` dedicated SMs, or on a plain stream owning the whole GPU.
  TimeUs Isolated(int kind, double sms) const;
  Bytes activation_bytes(int kind) const { return Bytes(activation_[kind]); }
  Bytes traffic(int kind) const { return Bytes(bytes_[kind]); }
  double demand_sms(int kind) const { return demand_[kind]; }
  const ScalingCurve& curve(int kind) const { return curves_[kind]; }

  // Rates of `n` tasks running at the same time; `shared_pool_sms` are the SMs no dedicated
  // partition holds. Deterministic; output i belongs to input i.
  void Evaluate(const RunningTask* tasks, int n, double shared_pool_sms, TaskRate* out) const;

  // Per-step executor overhead; the simulator adds it to whole-step programs.
  const StepOverheadModel& step_overhead() const { return overhead_; }
  // Whether a task of this kind takes no time in its phase (the optimizer, run after the step).
  bool instant(int kind) const {
    return overhead_.serial_optimizer && kind % 3 == int(TaskPhase::kOptimizer);
  }

  double contention() const { return kappa_; }
  double shared_weight_exponent() const { return gamma_; }
  double shared_weight(int kind) const { return weight_[kind]; }  // FLOPs per kernel
  const DeviceSpec& device() const { return device_; }
  int micro_batch_size() const { return micro_batch_size_; }
  // "measured", "synthetic" or "measured+synthetic" (entries missing from a measured profile).
  const std::string& source() const { return source_; }
  // Weights, gradients and optimizer state of every module (stays for the whole step).
  Bytes static_bytes() const { return Bytes(static_bytes_); }

 private:
  DeviceSpec device_;
  int micro_batch_size_ = 1;
  double kappa_ = 0.3;
  double gamma_ = 1.0;
  double bandwidth_ = 1;  // bytes per microsecond
  std::string source_;
  double static_bytes_ = 0;
  StepOverheadModel overhead_;
  std::vector<bool> present_;
  std::vector<ScalingCurve> curves_;        // calibrated
  std::vector<std::vector<double>> table_;  // curves_ at integer SMs 0..sm_count
  std::vector<double> activation_, bytes_, demand_;
  std::vector<double> weight_, weight_pow_;  // FLOPs per kernel, and to the power gamma
};

}  // namespace mosaic
