// Faults during `mosaic train` (issue 9), on the real binary and clip-tiny on the CPU:
//  - a kill storm: SIGKILL at random moments and halfway through checkpoint writes, resuming
//    each time; the final parameters equal an uninterrupted run's bit for bit and every
//    checkpoint on disk loads after every kill;
//  - SIGINT and SIGTERM: exit 1 after writing a checkpoint that resumes;
//  - a full disk (simulated with a file size limit, RLIMIT_FSIZE: writes fail with EFBIG):
//    the previous checkpoint stays intact and one line says so;
//  - NaN injected into the loss or a module's gradients under each --on-nonfinite policy, in
//    the eager loop and in planned steps (--plan temporal-eager, temporal-graph, shared-streams
//    and a plan file from `mosaic plan`, which the CPU runs task by task).
// Built twice: train_fault_test (cpu, kKills kills) and, with MOSAIC_SLOW_STORM, the kill storm
// alone with many more kills (slow).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include "core/file_io.h"
#include "models/multimodal_model.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/posix_files.h"

namespace mosaic::train {
namespace {

using testing::TempDir;

// Distinct test names: CTest keys tests by name, and the labels differ.
#ifdef MOSAIC_SLOW_STORM
constexpr int kKills = 60;
#define MOSAIC_KILL_STORM_TEST LongKillStormLosesNothing
#else
constexpr int kKills = 8;
#define MOSAIC_KILL_STORM_TEST KillStormLosesNothing
#endif

// `mosaic train` as a child process with its stdout and stderr on one pipe, which the test
// reads line by line to time signals (what it waits for, not how long anything takes).
class TrainProcess {
 public:
  struct Options {
    std::vector<std::string> env;  // NAME=VALUE added to the environment
    rlim_t file_size_limit = RLIM_INFINITY;
  };

  TrainProcess(const std::vector<std::string>& args, const Options& options) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    std::vector<std::string> argv = {MOSAIC_BIN, "train", "--configs",
                                     testing::SourceDir() + "/configs"};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      ::close(fds[1]);
      for (const std::string& e : options.env)
        ::putenv(const_cast<char*>(e.c_str()));
      ::setenv("OMP_NUM_THREADS", "1", 1);
      if (options.file_size_limit != RLIM_INFINITY) {
        rlimit lim{options.file_size_limit, options.file_size_limit};
        ::setrlimit(RLIMIT_FSIZE, &lim);
      }
      std::vector<char*> cargv;
      for (std::string& a : argv)
        cargv.push_back(a.data());
      cargv.push_back(nullptr);
      ::execv(cargv[0], cargv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    fd_ = fds[0];
  }
  ~TrainProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
    if (fd_ >= 0) ::close(fd_);
  }

  // Reads until the output holds `needle` `count` times (true) or the process ends (false).
  bool WaitFor(const std::string& needle, int count = 1) {
    while (Count(needle) < count) {
      if (!ReadSome()) return Count(needle) >= count;
    }
    return true;
  }
  void Signal(int sig) { ::kill(pid_, sig); }
  // Reads the rest of the output and reaps the process: the exit code, or 128 + signal.
  int Wait() {
    while (ReadSome()) {
    }
    if (!exited_) {
      int status = 0;
      ::waitpid(pid_, &status, 0);
      exited_ = true;
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return code_;
  }
  const std::string& output() const { return out_; }

 private:
  int Count(const std::string& needle) const {
    int n = 0;
    for (size_t at = out_.find(needle); at != std::string::npos; at = out_.find(needle, at + 1))
      ++n;
    return n;
  }
  // False at end of output.
  bool ReadSome() {
    if (fd_ < 0) return false;
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) return true;
    if (n <= 0) {
      ::close(fd_);
      fd_ = -1;
      return false;
    }
    out_.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  bool exited_ = false;
  int code_ = -1;
  std::string out_;
};

int RunToEnd(const std::vector<std::string>& args, std::string* out,
             const TrainProcess::Options& options = {}) {
  TrainProcess p(args, options);
  int code = p.Wait();
  *out = p.output();
  return code;
}

// The flags every run here shares: short steps, tiny batches, little evaluation.
std::vector<std::string> ClipTinyArgs(const std::string& ckpt_dir, int steps, int every = 2,
                                      int keep = 3) {
  return {"--model",
          "clip-tiny",
          "--steps",
          std::to_string(steps),
          "--batch-size",
          "4",
          "--eval-samples",
          "2",
          "--log-every",
          "1",
          "--checkpoint-every",
          std::to_string(every),
          "--checkpoint-dir",
          ckpt_dir,
          "--keep-checkpoints",
          std::to_string(keep)};
}

std::vector<std::string> With(std::vector<std::string> a, std::vector<std::string> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A clip-tiny model and optimizer to load checkpoints into.
struct Loaded {
  models::MultimodalModel model{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer;
  TrainState state;
};

StatusOr<Loaded> LoadClipTiny(const std::string& path) {
  MOSAIC_ASSIGN_OR_RETURN(ModelSpec spec,
                          LoadModelSpec(testing::SourceDir() + "/configs/models/clip-tiny.json"));
  Loaded l;
  MOSAIC_ASSIGN_OR_RETURN(l.model, models::BuildMultimodalModel(spec, torch::kCPU));
  MOSAIC_ASSIGN_OR_RETURN(l.optimizer, MakeAdamW(l.model->named_parameters(), AdamWConfig{}));
  l.state.model_name = spec.name;
  l.state.seed = 0;
  MOSAIC_RETURN_IF_ERROR(LoadCheckpoint(path, *l.model, *l.optimizer, &l.state));
  return l;
}

// The parameters a run with the default seed (0) starts from.
StatusOr<Loaded> InitialClipTiny() {
  MOSAIC_ASSIGN_OR_RETURN(ModelSpec spec,
                          LoadModelSpec(testing::SourceDir() + "/configs/models/clip-tiny.json"));
  Loaded l;
  torch::manual_seed(0);
  MOSAIC_ASSIGN_OR_RETURN(l.model, models::BuildMultimodalModel(spec, torch::kCPU));
  return l;
}

// Names of parameters and buffers that differ (bitwise) between two loaded checkpoints.
std::vector<std::string> Differences(const Loaded& a, const Loaded& b) {
  std::vector<std::string> diff;
  auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  for (const auto& item : pa) {
    const torch::Tensor* other = pb.find(item.key());
    if (other == nullptr || !torch::equal(item.value(), *other)) diff.push_back(item.key());
  }
  auto ba = a.model->named_buffers(), bb = b.model->named_buffers();
  for (const auto& item : ba) {
    const torch::Tensor* other = bb.find(item.key());
    if (other == nullptr || !torch::equal(item.value(), *other)) diff.push_back(item.key());
  }
  return diff;
}

std::vector<std::string> Temporaries(const std::string& dir) {
  std::vector<std::string> out;
  for (const std::string& name : ListFolder(dir)) {
    if (name.find(".tmp.") != std::string::npos) out.push_back(name);
  }
  return out;
}

// The step a run starts from, from its start line ("... steps 12 -> 40").
int StartStep(const std::string& out) {
  const size_t at = out.find(", steps ");
  return at == std::string::npos ? 0 : std::atoi(out.c_str() + at + 8);
}

TEST(Faults, MOSAIC_KILL_STORM_TEST) {
  TempDir dir("kill_storm");
  // Enough steps that the kills never run out of work: a kill costs at most 6 steps.
  const int kSteps = 5 * kKills;
  // The uninterrupted reference, timed to place the random kills (not checked).
  TrainProcess ref(ClipTinyArgs(dir / "ref", kSteps), {});
  ASSERT_TRUE(ref.WaitFor("mosaic train: clip-tiny on cpu")) << ref.output();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(ref.Wait(), 0) << ref.output();
  const double step_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
      kSteps;

  std::mt19937 rng(9);
  int kills = 0, mid_write_kills = 0, temporaries_seen = 0, checkpoints_checked = 0, runs = 0;
  const std::string storm = dir / "storm";
  while (true) {
    ASSERT_LT(runs, kKills + 5) << "the storm made no progress";
    ++runs;
    const bool kill = kills < kKills;
    // Even kills land halfway through a checkpoint write (the test hook pauses there and says
    // so); odd ones at a random moment within the next 6 steps.
    const bool mid_write = kill && kills % 2 == 0;
    TrainProcess::Options popt;
    if (mid_write) popt.env.push_back("MOSAIC_TEST_CHECKPOINT_PAUSE_MS=400");
    TrainProcess p(With(ClipTinyArgs(storm, kSteps), {"--resume"}), popt);
    if (!kill) {
      ASSERT_EQ(p.Wait(), 0) << p.output();
      break;
    }
    bool ended = false;
    if (mid_write) {
      // The 1st..3rd write of this run: the 1st makes no progress, later ones do.
      const int nth = std::uniform_int_distribution<int>(1, 3)(rng);
      ended = !p.WaitFor("test hook: pausing", nth);
    } else {
      ended = !p.WaitFor("mosaic train: clip-tiny on cpu");
      const int left = kSteps - StartStep(p.output());
      const double ms = std::uniform_real_distribution<double>(0, std::min(left, 6) * step_ms)(rng);
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(ms * 1000)));
    }
    p.Signal(SIGKILL);
    const int code = p.Wait();
    ASSERT_FALSE(ended || code == 0)
        << "run " << runs << " finished before kill " << kills + 1 << "\n"
        << p.output();
    ASSERT_EQ(code, 128 + SIGKILL) << p.output();
    ++kills;
    if (mid_write) {
      ++mid_write_kills;
      // The kill landed in the write: its temporary is still there.
      EXPECT_FALSE(Temporaries(storm).empty()) << p.output();
    }
    temporaries_seen += static_cast<int>(Temporaries(storm).size());
    // Every checkpoint on disk loads.
    for (const std::string& path : ListCheckpoints(storm)) {
      auto l = LoadClipTiny(path);
      EXPECT_TRUE(l.ok()) << "after kill " << kills << ": " << l.status();
      ++checkpoints_checked;
    }
  }
  std::cerr << "[ kill storm ] " << kills << " SIGKILLs (" << mid_write_kills
            << " halfway through a checkpoint write), " << runs << " runs, " << checkpoints_checked
            << " checkpoint loads after kills, " << temporaries_seen << " temporaries seen\n";
  EXPECT_EQ(kills, kKills);
  EXPECT_GT(temporaries_seen, 0);
  // The next run removed the temporaries the killed writers left.
  EXPECT_TRUE(Temporaries(storm).empty());

  const std::string last = dir / ("storm/" + CheckpointFileName(kSteps));
  auto a = LoadClipTiny(dir / ("ref/" + CheckpointFileName(kSteps)));
  auto b = LoadClipTiny(last);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->state.step, kSteps);
  std::vector<std::string> diff = Differences(*a, *b);
  EXPECT_TRUE(diff.empty()) << diff.size() << " tensors differ, first " << diff.front();
}

#ifndef MOSAIC_SLOW_STORM

// SIGINT and SIGTERM stop after the step in progress with a checkpoint, exit 1, and the run
// resumes from it.
TEST(Faults, StopSignalsWriteACheckpointThatResumes) {
  for (int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(strsignal(sig));
    TempDir dir("stop_signal");
    // No periodic checkpoints: the one on disk afterwards is the signal's.
    std::vector<std::string> args = {"--model",          "clip-tiny", "--steps",     "100000",
                                     "--batch-size",     "4",         "--log-every", "1",
                                     "--checkpoint-dir", dir / "ckpt"};
    TrainProcess p(args, {});
    ASSERT_TRUE(p.WaitFor("step 3/100000")) << p.output();
    p.Signal(sig);
    ASSERT_EQ(p.Wait(), 1) << p.output();
    EXPECT_NE(p.output().find("as asked; continue with --resume"), std::string::npos) << p.output();
    std::vector<std::string> ckpts = ListCheckpoints(dir / "ckpt");
    ASSERT_EQ(ckpts.size(), 1u) << p.output();
    auto l = LoadClipTiny(ckpts[0]);
    ASSERT_TRUE(l.ok()) << l.status();
    const int64_t stopped = l->state.step;
    EXPECT_GE(stopped, 3);
    EXPECT_TRUE(Temporaries(dir / "ckpt").empty());

    std::string out;
    std::vector<std::string> resume = args;
    resume[3] = std::to_string(stopped + 2);
    resume.insert(resume.end(), {"--resume", "--eval-samples", "2"});
    ASSERT_EQ(RunToEnd(resume, &out), 0) << out;
    EXPECT_NE(out.find("resuming from " + ckpts[0] + " (step " + std::to_string(stopped) + ")"),
              std::string::npos)
        << out;
  }
}

// A full disk while writing a checkpoint, simulated with a file size limit below the
// checkpoint's size (writes fail with EFBIG, like ENOSPC): one line names the file, the OS
// error and the intact previous checkpoint; exit 1; nothing else on disk changes; --resume
// continues from the previous checkpoint once the limit is gone.
TEST(Faults, FullDiskKeepsThePreviousCheckpoint) {
  TempDir dir("full_disk");
  const std::string ckpt = dir / "ckpt";
  std::string out;
  ASSERT_EQ(RunToEnd(ClipTinyArgs(ckpt, 2), &out), 0) << out;
  const std::string previous = ckpt + "/" + CheckpointFileName(2);
  const std::string before = testing::ReadFile(previous);
  ASSERT_GT(before.size(), 1000u);

  TrainProcess::Options limited;
  limited.file_size_limit = before.size() / 2;
  const int code = RunToEnd(With(ClipTinyArgs(ckpt, 6), {"--resume"}), &out, limited);
  EXPECT_EQ(code, 1) << out;
  const std::string line = "mosaic train: cannot write checkpoint " + ckpt + "/" +
                           CheckpointFileName(4) + ": write failed (File too large, EFBIG); " +
                           previous + " is intact; stopped after step 4, continue with --resume " +
                           "once there is space\n";
  EXPECT_NE(out.find(line), std::string::npos) << out;
  EXPECT_EQ(ListCheckpoints(ckpt), std::vector<std::string>{previous});
  EXPECT_TRUE(Temporaries(ckpt).empty());
  EXPECT_EQ(testing::ReadFile(previous), before);

  ASSERT_EQ(RunToEnd(With(ClipTinyArgs(ckpt, 6), {"--resume"}), &out), 0) << out;
  EXPECT_NE(out.find("resuming from " + previous + " (step 2)"), std::string::npos) << out;
}

// Numeric faults: MOSAIC_INJECT_NONFINITE puts a NaN into a module's gradients or the loss.
TEST(Faults, NonFiniteStopNamesTheModule) {
  TempDir dir("nonfinite_stop");
  std::string out;
  TrainProcess::Options inject;
  inject.env = {"MOSAIC_INJECT_NONFINITE=2:text"};
  // The default (auto) on the CPU is stop.
  const int code = RunToEnd(ClipTinyArgs(dir / "ckpt", 8), &out, inject);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("mosaic train: step 3: gradients are NaN/Inf in module 'text'; stopping "
                     "(--on-nonfinite stop; lower --lr or check the data); last checkpoint " +
                     dir / "ckpt/" + CheckpointFileName(2) + "\n"),
            std::string::npos)
      << out;
  // The faulty state was not saved.
  EXPECT_EQ(ListCheckpoints(dir / "ckpt").size(), 1u);

  inject.env = {"MOSAIC_INJECT_NONFINITE=1:loss"};
  EXPECT_EQ(
      RunToEnd(With(ClipTinyArgs(dir / "ckpt2", 8), {"--on-nonfinite", "stop"}), &out, inject), 1)
      << out;
  EXPECT_NE(out.find("mosaic train: step 2: loss is NaN (micro-batch 0), every module's output "
                     "finite; stopping"),
            std::string::npos)
      << out;
}

TEST(Faults, NonFiniteSkipLeavesTheParametersOfThatStep) {
  for (const char* policy : {"skip", "reduce-scale"}) {
    SCOPED_TRACE(policy);
    TempDir dir("nonfinite_skip");
    std::string out;
    TrainProcess::Options inject;
    inject.env = {"MOSAIC_INJECT_NONFINITE=2:vision"};
    std::vector<std::string> args =
        With(ClipTinyArgs(dir / "ckpt", 4, /*every=*/1, /*keep=*/10),
             {"--on-nonfinite", policy, "--metrics-out", dir / "m.json"});
    ASSERT_EQ(RunToEnd(args, &out, inject), 0) << out;
    std::string expected =
        "mosaic train: step 3: gradients are NaN/Inf in module 'vision'; "
        "optimizer step skipped";
    if (std::string(policy) == "reduce-scale") {
      expected += " (no loss scale to reduce in fp32 on the CPU)";
    }
    expected += " (--on-nonfinite " + std::string(policy) + ")\n";
    EXPECT_NE(out.find(expected), std::string::npos) << out;
    auto m = LoadJsonFile(dir / "m.json");
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)["skipped_steps"], 1);
    // Step 3 changed nothing; steps 2 and 4 did.
    auto s1 = LoadClipTiny(dir / ("ckpt/" + CheckpointFileName(1)));
    auto s2 = LoadClipTiny(dir / ("ckpt/" + CheckpointFileName(2)));
    auto s3 = LoadClipTiny(dir / ("ckpt/" + CheckpointFileName(3)));
    auto s4 = LoadClipTiny(dir / ("ckpt/" + CheckpointFileName(4)));
    ASSERT_TRUE(s1.ok() && s2.ok() && s3.ok() && s4.ok());
    EXPECT_FALSE(Differences(*s1, *s2).empty());
    EXPECT_TRUE(Differences(*s2, *s3).empty());
    EXPECT_FALSE(Differences(*s3, *s4).empty());
    for (const auto& p : s4->model->parameters())
      EXPECT_TRUE(p.isfinite().all().item<bool>());
  }
}

TEST(Faults, NonFiniteInjectionErrors) {
  TempDir dir("nonfinite_bad");
  std::string out;
  TrainProcess::Options inject;
  inject.env = {"MOSAIC_INJECT_NONFINITE=two:text"};
  EXPECT_EQ(RunToEnd(ClipTinyArgs(dir / "c", 2), &out, inject), 2) << out;
  EXPECT_EQ(out,
            "mosaic train: MOSAIC_INJECT_NONFINITE: expected STEP:MODULE or STEP:loss, got "
            "'two:text'\n");
  inject.env = {"MOSAIC_INJECT_NONFINITE=1:no-such-module"};
  EXPECT_EQ(RunToEnd(ClipTinyArgs(dir / "c", 2), &out, inject), 2) << out;
  EXPECT_EQ(out,
            "mosaic train: MOSAIC_INJECT_NONFINITE: no module 'no-such-module' in clip-tiny\n");
  EXPECT_EQ(RunToEnd(With(ClipTinyArgs(dir / "c", 2), {"--on-nonfinite", "ignore"}), &out), 2)
      << out;
}

// The same policies on planned steps (--plan: the engine's executor, task by task on the CPU),
// for each standard plan and a plan file: the best plan of `mosaic plan`'s short list with two
// micro-batches (a text partition of 60 SMs; the shared-streams baseline ranks first but has
// one micro-batch).
std::vector<std::vector<std::string>> PlanFlags(const TempDir& dir) {
  const std::string command =
      std::string("'") + MOSAIC_BIN + "' plan --configs '" + testing::SourceDir() +
      "/configs' --model clip-tiny --device h100-sxm --profile synthetic "
      "--micro-batches 2 -o '" +
      dir / "best.json" + "' --shortlist '" + dir / "shortlist.json" + "' > /dev/null";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  auto shortlist = LoadJsonFile(dir / "shortlist.json");
  EXPECT_TRUE(shortlist.ok()) << shortlist.status();
  if (shortlist.ok()) {
    for (const Json& ranked : (*shortlist)["plans"]) {
      if (ranked["plan"]["micro_batches"] == 2) {
        EXPECT_TRUE(WriteJsonFile(dir / "plan.json", ranked["plan"]).ok());
        break;
      }
    }
  }
  return {{"--plan", "temporal-eager"},
          {"--plan", "temporal-graph"},
          {"--plan", "shared-streams"},
          {"--plan", dir / "plan.json", "--micro-batches", "2"}};
}

TEST(Faults, NonFinitePlannedStopNamesTheModule) {
  TempDir dir("nonfinite_plan_stop");
  int run = 0;
  for (const std::vector<std::string>& plan : PlanFlags(dir)) {
    SCOPED_TRACE(plan[1]);
    const std::string ckpt = dir / ("ckpt" + std::to_string(run++));
    std::string out;
    TrainProcess::Options inject;
    inject.env = {"MOSAIC_INJECT_NONFINITE=2:text"};
    // auto on the CPU (no loss scale) is stop.
    EXPECT_EQ(RunToEnd(With(ClipTinyArgs(ckpt, 8), plan), &out, inject), 1) << out;
    EXPECT_NE(out.find("mosaic train: plan "), std::string::npos) << out;
    EXPECT_NE(out.find("mosaic train: step 3: gradients are NaN/Inf in module 'text'; stopping "
                       "(--on-nonfinite stop; lower --lr or check the data); last checkpoint " +
                       ckpt + "/" + CheckpointFileName(2) + "\n"),
              std::string::npos)
        << out;
    EXPECT_EQ(ListCheckpoints(ckpt), std::vector<std::string>{ckpt + "/" + CheckpointFileName(2)});

    // A NaN loss: the executor has already run backward; the forward is run again to find
    // the module (every output is finite here: the hook poisons the loss itself).
    inject.env = {"MOSAIC_INJECT_NONFINITE=1:loss"};
    EXPECT_EQ(
        RunToEnd(With(With(ClipTinyArgs(ckpt + "-loss", 8), plan), {"--on-nonfinite", "stop"}),
                 &out, inject),
        1)
        << out;
    EXPECT_NE(out.find("mosaic train: step 2: loss is NaN (whole batch), every module's output "
                       "finite; stopping (--on-nonfinite stop; lower --lr or check the data); "
                       "no checkpoint written yet\n"),
              std::string::npos)
        << out;
    EXPECT_TRUE(ListCheckpoints(ckpt + "-loss").empty());
  }
}

TEST(Faults, NonFinitePlannedSkipLeavesTheParametersOfThatStep) {
  TempDir dir("nonfinite_plan_skip");
  int run = 0;
  for (const std::vector<std::string>& plan : PlanFlags(dir)) {
    for (const char* policy : {"skip", "reduce-scale"}) {
      SCOPED_TRACE(plan[1] + " " + policy);
      const std::string ckpt = dir / ("ckpt" + std::to_string(run));
      const std::string metrics = dir / ("m" + std::to_string(run++) + ".json");
      std::string out;
      TrainProcess::Options inject;
      inject.env = {"MOSAIC_INJECT_NONFINITE=2:vision"};
      std::vector<std::string> args =
          With(With(ClipTinyArgs(ckpt, 4, /*every=*/1, /*keep=*/10), plan),
               {"--on-nonfinite", policy, "--metrics-out", metrics});
      ASSERT_EQ(RunToEnd(args, &out, inject), 0) << out;
      std::string expected =
          "mosaic train: step 3: gradients are NaN/Inf in module 'vision'; optimizer step "
          "skipped";
      if (std::string(policy) == "reduce-scale") {
        expected += " (no loss scale to reduce in fp32 on the CPU)";
      }
      expected += " (--on-nonfinite " + std::string(policy) + ")\n";
      EXPECT_NE(out.find(expected), std::string::npos) << out;
      auto m = LoadJsonFile(metrics);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ((*m)["skipped_steps"], 1);
      auto s1 = LoadClipTiny(ckpt + "/" + CheckpointFileName(1));
      auto s2 = LoadClipTiny(ckpt + "/" + CheckpointFileName(2));
      auto s3 = LoadClipTiny(ckpt + "/" + CheckpointFileName(3));
      auto s4 = LoadClipTiny(ckpt + "/" + CheckpointFileName(4));
      ASSERT_TRUE(s1.ok() && s2.ok() && s3.ok() && s4.ok());
      EXPECT_FALSE(Differences(*s1, *s2).empty());
      EXPECT_TRUE(Differences(*s2, *s3).empty());  // step 3 changed nothing
      EXPECT_FALSE(Differences(*s3, *s4).empty());
      for (const auto& p : s4->model->parameters())
        EXPECT_TRUE(p.isfinite().all().item<bool>());

      // A NaN loss is skipped the same way (after the executor's backward, before clipping).
      inject.env = {"MOSAIC_INJECT_NONFINITE=0:loss"};
      ASSERT_EQ(RunToEnd(With(With(ClipTinyArgs(ckpt + "-loss", 2, 1, 10), plan),
                              {"--on-nonfinite", policy, "--metrics-out", metrics}),
                         &out, inject),
                0)
          << out;
      EXPECT_NE(out.find("mosaic train: step 1: loss is NaN (whole batch), every module's output "
                         "finite; optimizer step skipped"),
                std::string::npos)
          << out;
      m = LoadJsonFile(metrics);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ((*m)["skipped_steps"], 1);
      auto first = LoadClipTiny(ckpt + "-loss/" + CheckpointFileName(1));
      auto second = LoadClipTiny(ckpt + "-loss/" + CheckpointFileName(2));
      auto initial = InitialClipTiny();
      ASSERT_TRUE(first.ok() && second.ok() && initial.ok());
      EXPECT_TRUE(Differences(*initial, *first).empty());  // step 1 changed nothing
      EXPECT_FALSE(Differences(*first, *second).empty());
    }
  }
}

#endif  // MOSAIC_SLOW_STORM

}  // namespace
}  // namespace mosaic::train
