// Status and StatusOr<T>: expected failures (bad input, missing file, infeasible plan) travel
// as values; exceptions never cross a library boundary.
//
//   StatusOr<ModelSpec> spec = LoadModelSpec("configs/models/clip-b16.json");
//   if (!spec.ok()) { std::cerr << spec.status().message() << "\n"; return 2; }
//   Use(*spec);
//
// Inside functions that return Status or StatusOr, MOSAIC_RETURN_IF_ERROR(expr) and
// MOSAIC_ASSIGN_OR_RETURN(lhs, expr) propagate failures.
#pragma once

#include <cassert>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <variant>

namespace mosaic {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the input is malformed or violates a rule
  kNotFound,            // a named file, module, partition... does not exist
  kFailedPrecondition,  // the request is well formed but cannot run (plan over memory budget)
  kResourceExhausted,   // out of memory or disk
  kIoError,             // reading or writing a file failed
  kUnavailable,         // a capability is missing here (no GPU, no green contexts)
  kInternal,            // a bug in Mosaic
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: modules[2].heads: ..." (or "OK").
  std::string ToString() const;
  // A copy whose message starts with `prefix: `; used to say which file an error came from.
  Status WithPrefix(const std::string& prefix) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline std::ostream& operator<<(std::ostream& os, const Status& s) {
  return os << s.ToString();
}

inline Status InvalidArgument(std::string m) {
  return Status(StatusCode::kInvalidArgument, std::move(m));
}
inline Status NotFound(std::string m) {
  return Status(StatusCode::kNotFound, std::move(m));
}
inline Status FailedPrecondition(std::string m) {
  return Status(StatusCode::kFailedPrecondition, std::move(m));
}
inline Status ResourceExhausted(std::string m) {
  return Status(StatusCode::kResourceExhausted, std::move(m));
}
inline Status IoError(std::string m) {
  return Status(StatusCode::kIoError, std::move(m));
}
inline Status Unavailable(std::string m) {
  return Status(StatusCode::kUnavailable, std::move(m));
}
inline Status Internal(std::string m) {
  return Status(StatusCode::kInternal, std::move(m));
}

// Either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const T& value) : v_(value) {}        // NOLINT: implicit by design
  StatusOr(T&& value) : v_(std::move(value)) {}  // NOLINT
  StatusOr(const Status& status) : v_(status) {  // NOLINT
    assert(!status.ok() && "StatusOr built from an OK Status");
    if (std::get<Status>(v_).ok()) v_ = Internal("StatusOr built from an OK Status");
  }
  StatusOr(Status&& status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) v_ = Internal("StatusOr built from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

  const T& value() const& { return std::get<T>(v_); }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace mosaic

#define MOSAIC_CONCAT_INNER_(a, b) a##b
#define MOSAIC_CONCAT_(a, b) MOSAIC_CONCAT_INNER_(a, b)

#define MOSAIC_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::mosaic::Status mosaic_status_ = (expr);        \
    if (!mosaic_status_.ok()) return mosaic_status_; \
  } while (0)

#define MOSAIC_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()

#define MOSAIC_ASSIGN_OR_RETURN(lhs, expr) \
  MOSAIC_ASSIGN_OR_RETURN_IMPL_(MOSAIC_CONCAT_(mosaic_statusor_, __LINE__), lhs, expr)
