// Training progress for a human: on a terminal one progress bar line redrawn in place
// ("[=======>      ] 120/200  loss 1.234 ..."), otherwise (a log file, CI) one plain line per
// report, so that logs stay greppable.
//
//   ProgressLog log(std::cerr, IsTerminal(stderr), /*total_steps=*/200);
//   log.Report({.step = 10, .loss = 2.1, .lr = 1e-3, .samples_per_s = 800, ...});
//   log.Message("checkpoint written: runs/step-00000100.ckpt");
//   log.Finish();
#pragma once

#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>

namespace mosaic::train {

struct StepReport {
  int64_t step = 0;  // steps completed
  double loss = 0;
  double lr = 0;
  double samples_per_s = 0;
  double tokens_per_s = 0;
  int64_t memory_bytes = 0;  // peak device memory (CUDA) or resident memory (CPU)
  double loss_scale = 0;     // 0: no loss scaling
};

bool IsTerminal(std::FILE* stream);

class ProgressLog {
 public:
  ProgressLog(std::ostream& os, bool terminal, int64_t total_steps)
      : os_(os), terminal_(terminal), total_(total_steps) {}
  ~ProgressLog() { Finish(); }

  void Report(const StepReport& r);
  // A line of its own (kept above the bar on a terminal).
  void Message(const std::string& line);
  // Ends the bar's line.
  void Finish();

  static std::string FormatReport(const StepReport& r, int64_t total);

 private:
  std::ostream& os_;
  bool terminal_;
  int64_t total_;
  bool bar_open_ = false;
  std::string last_bar_;
};

// Resident memory of this process (from /proc/self/statm), 0 when unknown.
int64_t ResidentMemoryBytes();

}  // namespace mosaic::train
