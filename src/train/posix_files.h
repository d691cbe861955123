// Small file-system helpers on POSIX calls, used instead of std::filesystem in every target that
// links libtorch. Note [libtorch and std::filesystem]: the torch wheel's libtorch.so exports its
// own copies of std::filesystem functions (status, relative, create_directories, remove_all...)
// and, being loaded before libstdc++, wins symbol lookup; its remove_all calls a null pointer.
//
//   std::vector<std::string> files = ListFilesRecursive("data");  // "sub/a.jpg", ... sorted
//   MOSAIC_RETURN_IF_ERROR(MakeDirectories("runs/ckpt"));
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace mosaic::train {

bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);
bool IsRegularFile(const std::string& path);
// Regular files under `root`, as paths relative to it with '/' separators, sorted. Symbolic
// links to files are followed; hidden entries (".name") are skipped.
std::vector<std::string> ListFilesRecursive(const std::string& root);
// Names (not paths) of the entries directly in `dir`, sorted; empty when unreadable.
std::vector<std::string> ListFolder(const std::string& dir);
// mkdir -p.
Status MakeDirectories(const std::string& path);
// Removes a file or a whole tree; missing is fine.
void RemoveTree(const std::string& path);
// "a/b/c.txt" -> "a/b"; "c.txt" -> ".".
std::string ParentPath(const std::string& path);
std::string JoinPath(const std::string& a, const std::string& b);

}  // namespace mosaic::train
