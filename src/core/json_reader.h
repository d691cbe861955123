// JsonReader: reads a JSON document into a spec struct while collecting every violation with
// its JSON path, so a bad file is reported in full ("modules[2].heads: 7 does not divide width
// 512") instead of crashing on the first surprise.
//
//   ErrorList errors;
//   JsonReader r(doc, &errors);
//   r.Required("name", &spec.name);
//   r.Optional("micro_batches", &spec.micro_batches, 1);
//   r.ForEach("modules", [&](JsonReader m) { ... });
//   r.RejectUnknownKeys({"name", "micro_batches", "modules"});
//   if (!errors.empty()) return errors.ToStatus();
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace mosaic {

using Json = nlohmann::ordered_json;

// Violations found while reading one document, in the order they were found.
class ErrorList {
 public:
  void Add(std::string message) { errors_.push_back(std::move(message)); }
  bool empty() const { return errors_.empty(); }
  size_t size() const { return errors_.size(); }
  const std::vector<std::string>& messages() const { return errors_; }
  // InvalidArgument with one violation per line, or OK when there are none.
  Status ToStatus() const;

 private:
  std::vector<std::string> errors_;
};

class JsonReader {
 public:
  JsonReader(const Json& node, ErrorList* errors, std::string path = "")
      : node_(node), errors_(errors), path_(std::move(path)) {}

  const Json& node() const { return node_; }
  const std::string& path() const { return path_; }
  bool is_object() const { return node_.is_object(); }
  size_t errors_count() const { return errors_->size(); }
  bool Has(const std::string& key) const { return node_.is_object() && node_.contains(key); }

  // Path of a member or element: "modules[2]" + "heads" -> "modules[2].heads".
  std::string PathOf(const std::string& key) const;
  std::string PathOf(size_t index) const;

  // Records "<path>.<key>: <message>" (or "<path>: <message>" with an empty key).
  void Error(const std::string& key, const std::string& message) const;
  void Error(const std::string& message) const { Error("", message); }

  // Reads a required member. Returns false (and records why) if absent or of the wrong type.
  bool Required(const std::string& key, std::string* out) const;
  bool Required(const std::string& key, int* out) const;
  bool Required(const std::string& key, int64_t* out) const;
  bool Required(const std::string& key, double* out) const;
  bool Required(const std::string& key, bool* out) const;
  // Reads an optional member; leaves `*out = fallback` when absent. False on a wrong type.
  bool Optional(const std::string& key, std::string* out, const std::string& fallback) const;
  bool Optional(const std::string& key, int* out, int fallback) const;
  bool Optional(const std::string& key, int64_t* out, int64_t fallback) const;
  bool Optional(const std::string& key, double* out, double fallback) const;
  bool Optional(const std::string& key, bool* out, bool fallback) const;

  // Checks on a value already read; each records an error and returns false when violated.
  bool ExpectPositive(const std::string& key, double value) const;
  bool ExpectNonNegative(const std::string& key, double value) const;
  bool ExpectOneOf(const std::string& key, const std::string& value,
                   std::initializer_list<const char*> allowed) const;

  // Calls `fn` on each element of the array member `key`. Records an error if `key` is absent
  // (when required) or not an array. Returns the number of elements visited.
  size_t ForEach(const std::string& key, const std::function<void(JsonReader)>& fn,
                 bool required = true) const;
  // Calls `fn` on each member of the object member `key` as (name, reader).
  size_t ForEachMember(const std::string& key,
                       const std::function<void(const std::string&, JsonReader)>& fn,
                       bool required = true) const;
  // A reader for the object member `key`; records an error if absent or not an object.
  bool Child(const std::string& key, const std::function<void(JsonReader)>& fn,
             bool required = true) const;

  // Records an error for every member not in `known` (catches typos such as "widht").
  void RejectUnknownKeys(std::initializer_list<const char*> known) const;
  // Records an error unless this node is an object. Returns whether it is.
  bool ExpectObject() const;

 private:
  const Json* Member(const std::string& key, bool required) const;
  template <typename T>
  bool ReadNumber(const std::string& key, T* out, bool required) const;

  const Json& node_;
  ErrorList* errors_;
  std::string path_;
};

// A short rendering of a JSON value for messages: strings quoted, long values cut.
std::string Describe(const Json& value);

}  // namespace mosaic
