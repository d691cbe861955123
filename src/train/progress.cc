// Progress bar and log lines (see progress.h).
#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>

namespace mosaic::train {

bool IsTerminal(std::FILE* stream) {
  return ::isatty(::fileno(stream)) == 1;
}

std::string ProgressLog::FormatReport(const StepReport& r, int64_t total) {
  char buf[256];
  int n = std::snprintf(buf, sizeof(buf),
                        "step %lld/%lld  loss %.4f  lr %.2e  %.1f samples/s  %.0f tokens/s  "
                        "mem %.2f GiB",
                        static_cast<long long>(r.step), static_cast<long long>(total), r.loss, r.lr,
                        r.samples_per_s, r.tokens_per_s,
                        static_cast<double>(r.memory_bytes) / (1024.0 * 1024 * 1024));
  std::string s(buf, static_cast<size_t>(std::max(0, n)));
  if (r.loss_scale > 0) {
    std::snprintf(buf, sizeof(buf), "  scale %.0f", r.loss_scale);
    s += buf;
  }
  return s;
}

void ProgressLog::Report(const StepReport& r) {
  std::string text = FormatReport(r, total_);
  if (!terminal_) {
    os_ << text << "\n" << std::flush;
    return;
  }
  constexpr int kWidth = 24;
  const int filled =
      total_ > 0 ? static_cast<int>(kWidth * std::min<int64_t>(r.step, total_) / total_) : 0;
  std::string bar = "[" + std::string(filled, '=') + (filled < kWidth ? ">" : "") +
                    std::string(std::max(0, kWidth - filled - 1), ' ') + "] ";
  last_bar_ = bar + text;
  os_ << "\r" << last_bar_ << "\x1b[K" << std::flush;  // erase what a longer line left
  bar_open_ = true;
}

void ProgressLog::Message(const std::string& line) {
  if (terminal_ && bar_open_) {
    os_ << "\r\x1b[K" << line << "\n" << last_bar_ << std::flush;
  } else {
    os_ << line << "\n" << std::flush;
  }
}

void ProgressLog::Finish() {
  if (terminal_ && bar_open_) os_ << "\n" << std::flush;
  bar_open_ = false;
}

int64_t ResidentMemoryBytes() {
  std::ifstream statm("/proc/self/statm");
  long long pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return static_cast<int64_t>(pages_resident) * ::sysconf(_SC_PAGESIZE);
}

}  // namespace mosaic::train
