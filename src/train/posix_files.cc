// POSIX file helpers (see posix_files.h, Note [libtorch and std::filesystem]).
#include "train/posix_files.h"

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace mosaic::train {

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<std::string> ListFolder(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      names.emplace_back(e->d_name);
    }
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

namespace {
void ListInto(const std::string& root, const std::string& rel, int depth,
              std::vector<std::string>* out) {
  if (depth > 64) return;  // a symlink loop
  for (const std::string& name : ListFolder(rel.empty() ? root : JoinPath(root, rel))) {
    if (name[0] == '.') continue;
    const std::string r = rel.empty() ? name : rel + "/" + name;
    const std::string full = JoinPath(root, r);
    if (IsDirectory(full)) {
      ListInto(root, r, depth + 1, out);
    } else if (IsRegularFile(full)) {
      out->push_back(r);
    }
  }
}

int RemoveOne(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path);
}
}  // namespace

std::vector<std::string> ListFilesRecursive(const std::string& root) {
  std::vector<std::string> out;
  ListInto(root, "", 0, &out);
  std::sort(out.begin(), out.end());
  return out;
}

Status MakeDirectories(const std::string& path) {
  if (path.empty() || IsDirectory(path)) return Status::Ok();
  const std::string parent = ParentPath(path);
  if (parent != path && parent != ".") MOSAIC_RETURN_IF_ERROR(MakeDirectories(parent));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return IoError(path + ": cannot create folder (" + std::strerror(errno) + ")");
  }
  return Status::Ok();
}

void RemoveTree(const std::string& path) {
  ::nftw(path.c_str(), RemoveOne, 16, FTW_DEPTH | FTW_PHYS);
}

std::string ParentPath(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string JoinPath(const std::string& a, const std::string& b) {
  if (a.empty() || a == ".") return b;
  return a.back() == '/' ? a + b : a + "/" + b;
}

}  // namespace mosaic::train
