#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mosaic {

StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return IoError(path + ": read failed");
  return ss.str();
}

StatusOr<Json> ParseJson(const std::string& text, const std::string& source) {
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // Turn the byte offset into line and column for a human.
    size_t line = 1, col = 1;
    for (size_t i = 0; i < text.size() && i + 1 < e.byte; ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    std::string what = e.what();
    auto pos = what.find("syntax error");
    if (pos != std::string::npos) what = what.substr(pos);
    return InvalidArgument(source + ": line " + std::to_string(line) + ", column " +
                           std::to_string(col) + ": invalid JSON (" + what + ")");
  } catch (const nlohmann::json::exception& e) {
    // Lexically valid but unrepresentable, e.g. a number overflowing a double (1e999).
    std::string what = e.what();
    auto pos = what.find("] ");
    if (pos != std::string::npos) what = what.substr(pos + 2);
    return InvalidArgument(source + ": invalid JSON (" + what + ")");
  }
}

StatusOr<Json> LoadJsonFile(const std::string& path) {
  MOSAIC_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  return ParseJson(text, path);
}

std::string ErrnoMessage(int err) {
  const char* name = nullptr;
  switch (err) {
    case ENOSPC: name = "ENOSPC"; break;
    case EFBIG: name = "EFBIG"; break;
    case EDQUOT: name = "EDQUOT"; break;
    case EIO: name = "EIO"; break;
    case EROFS: name = "EROFS"; break;
    case EACCES: name = "EACCES"; break;
    case EPERM: name = "EPERM"; break;
    case ENOENT: name = "ENOENT"; break;
    case ENOTDIR: name = "ENOTDIR"; break;
    case EISDIR: name = "EISDIR"; break;
    case EMFILE: name = "EMFILE"; break;
    case ENAMETOOLONG: name = "ENAMETOOLONG"; break;
    default: break;
  }
  std::string text = std::strerror(err);
  return name ? text + ", " + name : text + ", errno " + std::to_string(err);
}

Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  return WriteFileAtomic(path, contents, nullptr);
}

Status CheckCanWrite(const std::string& path) {
  if (path.empty()) return InvalidArgument("empty output path");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    return InvalidArgument(path + ": cannot create (it is a folder)");
  const size_t slash = path.find_last_of('/');
  const std::string folder =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  if (::stat(folder.c_str(), &st) != 0)
    return InvalidArgument(path + ": cannot create (" + folder + ": " + ErrnoMessage(errno) + ")");
  if (!S_ISDIR(st.st_mode))
    return InvalidArgument(path + ": cannot create (" + folder + " is not a folder)");
  if (::access(folder.c_str(), W_OK) != 0)
    return InvalidArgument(path + ": cannot create (" + folder + ": " + ErrnoMessage(errno) + ")");
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, const std::string& contents,
                       const std::function<void(const std::string&)>& midway) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(path + ": cannot create (" + ErrnoMessage(errno) + ")");
  const char* p = contents.data();
  size_t left = contents.size();
  const size_t half = contents.size() / 2;
  bool paused = !midway;
  while (left > 0) {
    // With a hook, write the first half, call it, then the rest.
    const size_t chunk = paused ? left : std::max<size_t>(1, half - (contents.size() - left));
    ssize_t n = ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = ErrnoMessage(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return IoError(path + ": write failed (" + err + "); previous file left intact");
    }
    p += n;
    left -= static_cast<size_t>(n);
    if (!paused && contents.size() - left >= half) {
      paused = true;
      midway(tmp);
    }
  }
  if (!paused) midway(tmp);  // empty contents
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string err = ErrnoMessage(errno);
    ::unlink(tmp.c_str());
    return IoError(path + ": flush failed (" + err + "); previous file left intact");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = ErrnoMessage(errno);
    ::unlink(tmp.c_str());
    return IoError(path + ": rename failed (" + err + ")");
  }
  return Status::Ok();
}

Status WriteJsonFile(const std::string& path, const Json& doc) {
  return WriteFileAtomic(path, doc.dump(2) + "\n");
}

}  // namespace mosaic
