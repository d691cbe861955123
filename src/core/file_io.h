// Files in and out: whole-file reads, JSON parsing with line/column in errors, and atomic
// writes (temporary file in the same folder, fsync, rename) so that an interrupted or failed
// write never leaves a half-written file under the final name.
//
//   MOSAIC_ASSIGN_OR_RETURN(Json doc, LoadJsonFile("plan.json"));
//   MOSAIC_RETURN_IF_ERROR(WriteFileAtomic("plan.json", doc.dump(2) + "\n"));
#pragma once

#include <functional>
#include <string>

#include "core/json_reader.h"
#include "core/status.h"

namespace mosaic {

StatusOr<std::string> ReadTextFile(const std::string& path);
// Parses JSON text; `source` names it in errors ("plan.json: line 3, column 7: ...").
StatusOr<Json> ParseJson(const std::string& text, const std::string& source);
StatusOr<Json> LoadJsonFile(const std::string& path);

// Writes `contents` to `path` atomically: `path.tmp.<pid>` is written, flushed to disk and
// renamed over `path`. On any failure the temporary is removed and `path` is untouched; the
// error names the file and the OS error with its errno name ("... (File too large, EFBIG)").
Status WriteFileAtomic(const std::string& path, const std::string& contents);
// Same, calling `midway(temporary_path)` once after about half of `contents` is in the
// temporary file (before the flush and rename): a test hook that lets crash tests kill the
// process in the middle of a write.
Status WriteFileAtomic(const std::string& path, const std::string& contents,
                       const std::function<void(const std::string&)>& midway);

// OK when WriteFileAtomic(path, ...) could create `path` now: its folder exists, is a folder and
// is writable, and `path` is not a folder. Commands that measure for minutes before writing call
// it first, so a typo in an output path fails at once instead of after the work. The error is
// InvalidArgument (bad input: the CLI exits with 2) naming the path and what is wrong.
Status CheckCanWrite(const std::string& path);

// strerror(err) with the errno name: "No space left on device (ENOSPC)".
std::string ErrnoMessage(int err);
// Pretty-printed JSON (2-space indent, trailing newline), written atomically.
Status WriteJsonFile(const std::string& path, const Json& doc);

}  // namespace mosaic
