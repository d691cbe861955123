// Helpers shared by the train tests: a fresh temporary folder per test and writing files
// (POSIX calls, not std::filesystem: Note [libtorch and std::filesystem] in posix_files.h).
//
//   TempDir dir("train_data");          // removed when it goes out of scope
//   WriteFile(dir.path() + "/a.txt", "a red circle");
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "train/posix_files.h"

namespace mosaic::train::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp && *tmp ? tmp : "/tmp") + "/mosaic_" + tag + "_" +
            std::to_string(::getpid()) + "_" + std::to_string(counter_++);
    RemoveTree(path_);
    (void)MakeDirectories(path_);
  }
  ~TempDir() { RemoveTree(path_); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  (void)MakeDirectories(ParentPath(path));
  std::ofstream(path, std::ios::binary) << bytes;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline std::string SourceDir() {
  return MOSAIC_SOURCE_DIR;
}

}  // namespace mosaic::train::testing
