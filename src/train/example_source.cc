// Folder, tar-shard and generated example sources (see example_source.h).
#include "train/example_source.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <iostream>
#include <map>

#include "core/file_io.h"
#include "train/posix_files.h"

namespace mosaic::train {
namespace {

std::string ArchiveError(archive* a, const char* fallback) {
  const char* why = archive_error_string(a);
  return why ? why : fallback;
}

// One file of an example: read from disk on demand (folder) or held in memory (tar).
struct Blob {
  std::string display;  // "dir/NAME.jpg" or "shard.tar:NAME.jpg"
  std::string path;     // file to read when `bytes` is null
  std::shared_ptr<const std::string> bytes;

  StatusOr<std::string> Read() const {
    if (bytes) return *bytes;
    return ReadTextFile(path);
  }
};

struct Entry {
  std::string name;                   // "dir/NAME" or "shard.tar:NAME"
  std::map<std::string, Blob> files;  // by extension: "jpg", "txt", "wav", ...
};

// WebDataset keys: the path up to the first '.' of its last component; the rest is the
// extension ("a/b.seg.txt" -> key "a/b", ext "seg.txt"), lowercased.
bool SplitKey(const std::string& path, std::string* key, std::string* ext) {
  size_t slash = path.rfind('/');
  size_t start = slash == std::string::npos ? 0 : slash + 1;
  size_t dot = path.find('.', start);
  if (dot == std::string::npos || dot == start) return false;  // no extension, or hidden file
  *key = path.substr(0, dot);
  *ext = path.substr(dot + 1);
  std::transform(ext->begin(), ext->end(), ext->begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return true;
}

const char* kImageExts[] = {"jpg", "jpeg", "png"};

bool IsExampleExt(const std::string& ext) {
  for (const char* e : kImageExts)
    if (ext == e) return true;
  return ext == "txt" || ext == "wav";
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

class FileGroupSource : public ExampleSource {
 public:
  FileGroupSource(std::string description, std::vector<Entry> entries, bool want_audio)
      : description_(std::move(description)),
        entries_(std::move(entries)),
        want_audio_(want_audio) {}

  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  std::string Describe() const override {
    return description_ + " (" + std::to_string(entries_.size()) + " examples)";
  }

  StatusOr<Example> Get(int64_t index) const override {
    const Entry& e = entries_.at(static_cast<size_t>(index));
    const Blob* image = nullptr;
    for (const char* ext : kImageExts) {
      auto it = e.files.find(ext);
      if (it != e.files.end()) image = &it->second;
    }
    auto txt = e.files.find("txt");
    if (image == nullptr) {
      return InvalidArgument(e.name + ": no image (" + e.name + ".jpg, .jpeg or .png) for " +
                             (txt != e.files.end() ? txt->second.display : e.name));
    }
    if (txt == e.files.end()) {
      return InvalidArgument(image->display + ": missing caption " + e.name + ".txt");
    }
    Example ex;
    ex.name = e.name;
    MOSAIC_ASSIGN_OR_RETURN(std::string caption, txt->second.Read());
    ex.caption = Trim(caption);
    if (ex.caption.empty()) return InvalidArgument(txt->second.display + ": empty caption");
    MOSAIC_ASSIGN_OR_RETURN(std::string image_bytes, image->Read());
    MOSAIC_ASSIGN_OR_RETURN(ex.image, DecodeImage(image_bytes, image->display));
    if (want_audio_) {
      auto wav = e.files.find("wav");
      if (wav == e.files.end()) {
        return InvalidArgument(image->display + ": missing audio " + e.name + ".wav");
      }
      MOSAIC_ASSIGN_OR_RETURN(std::string wav_bytes, wav->second.Read());
      MOSAIC_ASSIGN_OR_RETURN(ex.audio, DecodeAudio(wav_bytes, wav->second.display));
    }
    return ex;
  }

 private:
  std::string description_;
  std::vector<Entry> entries_;
  bool want_audio_;
};

// Groups files by key, in key order (std::map), dropping files that are not part of examples.
std::vector<Entry> GroupEntries(std::map<std::string, Entry> by_key) {
  std::vector<Entry> out;
  out.reserve(by_key.size());
  for (auto& [key, entry] : by_key)
    out.push_back(std::move(entry));
  return out;
}

Status ReportOrStop(const DataSourceOptions& opt, const std::string& message) {
  if (opt.on_bad_data == BadDataPolicy::kStop) return InvalidArgument(message);
  if (opt.warn) {
    opt.warn(message + " (skipped)");
  } else {
    std::cerr << "mosaic: " << message << " (skipped)\n";
  }
  return Status::Ok();
}

// Reads a whole tar shard into memory with libarchive. A damaged archive keeps the members
// read before the damage under kSkip.
StatusOr<std::vector<Entry>> ReadTarShard(const std::string& path, const DataSourceOptions& opt) {
  struct ArchiveCloser {
    void operator()(archive* a) const { archive_read_free(a); }
  };
  std::unique_ptr<archive, ArchiveCloser> a(archive_read_new());
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), path.c_str(), 1 << 16) != ARCHIVE_OK) {
    return InvalidArgument(
        path + ": cannot open as a tar shard: " + ArchiveError(a.get(), "unknown error"));
  }
  std::map<std::string, Entry> by_key;
  archive_entry* member = nullptr;
  while (true) {
    int r = archive_read_next_header(a.get(), &member);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      MOSAIC_RETURN_IF_ERROR(ReportOrStop(
          opt, path + ": damaged tar shard: " + ArchiveError(a.get(), "unreadable header")));
      break;
    }
    if (archive_entry_filetype(member) != AE_IFREG) continue;
    std::string name = archive_entry_pathname(member);
    if (name.rfind("./", 0) == 0) name = name.substr(2);
    std::string key, ext;
    if (!SplitKey(name, &key, &ext) || !IsExampleExt(ext)) continue;
    auto bytes = std::make_shared<std::string>();
    const la_int64_t declared = archive_entry_size(member);
    if (declared > 0) bytes->reserve(static_cast<size_t>(declared));
    char buf[1 << 16];
    la_ssize_t n;
    while ((n = archive_read_data(a.get(), buf, sizeof(buf))) > 0)
      bytes->append(buf, n);
    if (n < 0) {
      MOSAIC_RETURN_IF_ERROR(ReportOrStop(opt, path + ":" + name + ": damaged tar member: " +
                                                   ArchiveError(a.get(), "read failed")));
      break;
    }
    Entry& e = by_key[key];
    e.name = path + ":" + key;
    e.files[ext] = Blob{path + ":" + name, "", std::move(bytes)};
  }
  return GroupEntries(std::move(by_key));
}

std::vector<Entry> ScanFolder(const std::string& root) {
  std::map<std::string, Entry> by_key;
  for (const std::string& rel : ListFilesRecursive(root)) {
    std::string key, ext;
    if (!SplitKey(rel, &key, &ext) || !IsExampleExt(ext)) continue;
    Entry& e = by_key[key];
    e.name = JoinPath(root, key);
    e.files[ext] = Blob{JoinPath(root, rel), JoinPath(root, rel), nullptr};
  }
  return GroupEntries(std::move(by_key));
}

bool IsTarName(const std::string& p) {
  return p.size() > 4 && (p.find(".tar") != std::string::npos || p.rfind(".tgz") == p.size() - 4);
}

class ShapesSource : public ExampleSource {
 public:
  ShapesSource(uint64_t seed, int64_t size, ShapesOptions options)
      : seed_(seed), size_(size), options_(options) {}
  int64_t size() const override { return size_; }
  std::string Describe() const override {
    return "generated shapes, seed " + std::to_string(seed_) + " (" + std::to_string(size_) +
           " examples)";
  }
  StatusOr<Example> Get(int64_t index) const override {
    ShapeExample s = GenerateShape(seed_, index, options_);
    Example ex;
    ex.name = std::move(s.name);
    ex.image = std::move(s.image);
    ex.caption = std::move(s.caption);
    ex.audio = std::move(s.audio);
    return ex;
  }

 private:
  uint64_t seed_;
  int64_t size_;
  ShapesOptions options_;
};

}  // namespace

StatusOr<BadDataPolicy> ParseBadDataPolicy(const std::string& s) {
  if (s == "skip") return BadDataPolicy::kSkip;
  if (s == "stop") return BadDataPolicy::kStop;
  return InvalidArgument("--on-bad-data: expected skip or stop, got '" + s + "'");
}

StatusOr<std::unique_ptr<ExampleSource>> OpenDataSource(const std::string& path,
                                                        const DataSourceOptions& options) {
  if (!PathExists(path)) return NotFound(path + ": no such file or folder");
  std::vector<Entry> entries;
  const bool folder = IsDirectory(path);
  if (folder) {
    entries = ScanFolder(path);
    if (entries.empty()) {
      // A folder of shards?
      std::vector<std::string> shards;
      for (const std::string& name : ListFolder(path)) {
        const std::string full = JoinPath(path, name);
        if (IsTarName(name) && IsRegularFile(full)) shards.push_back(full);
      }
      for (const std::string& shard : shards) {
        MOSAIC_ASSIGN_OR_RETURN(std::vector<Entry> part, ReadTarShard(shard, options));
        if (part.empty()) {
          MOSAIC_RETURN_IF_ERROR(
              ReportOrStop(options, shard + ": empty shard (no image/caption pairs)"));
        }
        for (Entry& e : part)
          entries.push_back(std::move(e));
      }
    }
  } else {
    MOSAIC_ASSIGN_OR_RETURN(entries, ReadTarShard(path, options));
  }
  if (entries.empty()) {
    return InvalidArgument(path + ": empty " + std::string(folder ? "folder" : "shard") +
                           ": no NAME.jpg|png + NAME.txt pairs found");
  }
  return std::unique_ptr<ExampleSource>(
      std::make_unique<FileGroupSource>(path, std::move(entries), options.want_audio));
}

std::unique_ptr<ExampleSource> MakeShapesSource(uint64_t seed, int64_t size,
                                                const ShapesOptions& options) {
  return std::make_unique<ShapesSource>(seed, size, options);
}

Status WriteTarShard(const std::string& path, const std::vector<ShardFile>& files) {
  struct WriterCloser {
    void operator()(archive* a) const { archive_write_free(a); }
  };
  std::unique_ptr<archive, WriterCloser> a(archive_write_new());
  archive_write_set_format_pax_restricted(a.get());
  std::string out;
  size_t used = 0;
  // libarchive writes into a fixed buffer; size it generously from the payload.
  size_t cap = 4096;
  for (const ShardFile& f : files)
    cap += f.bytes.size() + 2048;
  out.resize(cap);
  if (archive_write_open_memory(a.get(), out.data(), out.size(), &used) != ARCHIVE_OK) {
    return Internal(path + ": " + ArchiveError(a.get(), "write failed"));
  }
  struct EntryFree {
    void operator()(archive_entry* e) const { archive_entry_free(e); }
  };
  for (const ShardFile& f : files) {
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_set_pathname(e.get(), f.name.c_str());
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(f.bytes.size()));
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK ||
        archive_write_data(a.get(), f.bytes.data(), f.bytes.size()) !=
            static_cast<la_ssize_t>(f.bytes.size())) {
      return Internal(path + ": " + ArchiveError(a.get(), "write failed"));
    }
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    return Internal(path + ": " + ArchiveError(a.get(), "write failed"));
  }
  out.resize(used);
  return WriteFileAtomic(path, out);
}

}  // namespace mosaic::train
