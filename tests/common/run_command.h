// RunCommand: runs a shell command the way a user would and captures what they would see, for
// tests of the `mosaic` binary (exit codes, one-line errors, printed tables).
//
//   CommandResult r = RunCommand(MosaicBinary() + " validate x.json");
//   EXPECT_EQ(r.code, 2);
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace mosaic::testing {

struct CommandResult {
  int code = -1;    // exit status; -1 if it did not exit normally
  std::string out;  // stdout and stderr together
};

inline CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0)
    r.out.append(buf.data(), n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace mosaic::testing
