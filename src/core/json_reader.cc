#include "core/json_reader.h"

#include <cmath>
#include <limits>
#include <set>
#include <sstream>

namespace mosaic {

Status ErrorList::ToStatus() const {
  if (errors_.empty()) return Status::Ok();
  std::string joined;
  for (size_t i = 0; i < errors_.size(); ++i) {
    if (i) joined += "\n";
    joined += errors_[i];
  }
  return InvalidArgument(joined);
}

std::string Describe(const Json& value) {
  std::string s = value.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

static const char* TypeName(const Json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

std::string JsonReader::PathOf(const std::string& key) const {
  if (key.empty()) return path_;
  if (path_.empty()) return key;
  return path_ + "." + key;
}

std::string JsonReader::PathOf(size_t index) const {
  return path_ + "[" + std::to_string(index) + "]";
}

void JsonReader::Error(const std::string& key, const std::string& message) const {
  std::string where = PathOf(key);
  errors_->Add(where.empty() ? message : where + ": " + message);
}

const Json* JsonReader::Member(const std::string& key, bool required) const {
  if (!node_.is_object()) return nullptr;  // reported once by ExpectObject
  auto it = node_.find(key);
  if (it == node_.end()) {
    if (required) Error(key, "missing (required)");
    return nullptr;
  }
  return &*it;
}

bool JsonReader::ExpectObject() const {
  if (node_.is_object()) return true;
  Error(std::string("expected an object, got ") + TypeName(node_));
  return false;
}

bool JsonReader::Required(const std::string& key, std::string* out) const {
  const Json* v = Member(key, true);
  if (!v) return false;
  if (!v->is_string()) {
    Error(key, std::string("expected a string, got ") + TypeName(*v) + " " + Describe(*v));
    return false;
  }
  *out = v->get<std::string>();
  return true;
}

bool JsonReader::Required(const std::string& key, bool* out) const {
  const Json* v = Member(key, true);
  if (!v) return false;
  if (!v->is_boolean()) {
    Error(key, std::string("expected true or false, got ") + Describe(*v));
    return false;
  }
  *out = v->get<bool>();
  return true;
}

template <typename T>
bool JsonReader::ReadNumber(const std::string& key, T* out, bool required) const {
  const Json* v = Member(key, required);
  if (!v) return false;
  if constexpr (std::is_integral_v<T>) {
    bool integral = v->is_number_integer() || v->is_number_unsigned();
    if (!integral && v->is_number_float()) {
      double d = v->get<double>();
      integral = std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9e15;
    }
    if (!integral) {
      Error(key, std::string("expected an integer, got ") + Describe(*v));
      return false;
    }
    double d = v->get<double>();
    if (d > static_cast<double>(std::numeric_limits<T>::max()) ||
        d < static_cast<double>(std::numeric_limits<T>::min())) {
      Error(key, "integer " + Describe(*v) + " is out of range");
      return false;
    }
    if (v->is_number_float()) {
      *out = static_cast<T>(d);
    } else {
      *out = v->get<T>();
    }
  } else {
    if (!v->is_number()) {
      Error(key, std::string("expected a number, got ") + TypeName(*v) + " " + Describe(*v));
      return false;
    }
    double d = v->get<double>();
    if (!std::isfinite(d)) {
      Error(key, "expected a finite number");
      return false;
    }
    *out = d;
  }
  return true;
}

bool JsonReader::Required(const std::string& key, int* out) const {
  return ReadNumber(key, out, true);
}
bool JsonReader::Required(const std::string& key, int64_t* out) const {
  return ReadNumber(key, out, true);
}
bool JsonReader::Required(const std::string& key, double* out) const {
  return ReadNumber(key, out, true);
}

bool JsonReader::Optional(const std::string& key, std::string* out,
                          const std::string& fallback) const {
  *out = fallback;
  return !Has(key) || Required(key, out);
}
bool JsonReader::Optional(const std::string& key, int* out, int fallback) const {
  *out = fallback;
  return !Has(key) || ReadNumber(key, out, true);
}
bool JsonReader::Optional(const std::string& key, int64_t* out, int64_t fallback) const {
  *out = fallback;
  return !Has(key) || ReadNumber(key, out, true);
}
bool JsonReader::Optional(const std::string& key, double* out, double fallback) const {
  *out = fallback;
  return !Has(key) || ReadNumber(key, out, true);
}
bool JsonReader::Optional(const std::string& key, bool* out, bool fallback) const {
  *out = fallback;
  return !Has(key) || Required(key, out);
}

static std::string FormatNumber(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

bool JsonReader::ExpectPositive(const std::string& key, double value) const {
  if (value > 0) return true;
  Error(key, "must be positive, got " + FormatNumber(value));
  return false;
}

bool JsonReader::ExpectNonNegative(const std::string& key, double value) const {
  if (value >= 0) return true;
  Error(key, "must not be negative, got " + FormatNumber(value));
  return false;
}

bool JsonReader::ExpectOneOf(const std::string& key, const std::string& value,
                             std::initializer_list<const char*> allowed) const {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return true;
    list += list.empty() ? "" : " | ";
    list += a;
  }
  Error(key, "\"" + value + "\" is not one of " + list);
  return false;
}

size_t JsonReader::ForEach(const std::string& key, const std::function<void(JsonReader)>& fn,
                           bool required) const {
  const Json* v = Member(key, required);
  if (!v) return 0;
  if (!v->is_array()) {
    Error(key, std::string("expected an array, got ") + TypeName(*v));
    return 0;
  }
  JsonReader array(*v, errors_, PathOf(key));
  for (size_t i = 0; i < v->size(); ++i)
    fn(JsonReader((*v)[i], errors_, array.PathOf(i)));
  return v->size();
}

size_t JsonReader::ForEachMember(const std::string& key,
                                 const std::function<void(const std::string&, JsonReader)>& fn,
                                 bool required) const {
  const Json* v = Member(key, required);
  if (!v) return 0;
  if (!v->is_object()) {
    Error(key, std::string("expected an object, got ") + TypeName(*v));
    return 0;
  }
  JsonReader obj(*v, errors_, PathOf(key));
  for (auto it = v->begin(); it != v->end(); ++it) {
    fn(it.key(), JsonReader(it.value(), errors_, obj.PathOf(it.key())));
  }
  return v->size();
}

bool JsonReader::Child(const std::string& key, const std::function<void(JsonReader)>& fn,
                       bool required) const {
  const Json* v = Member(key, required);
  if (!v) return false;
  JsonReader child(*v, errors_, PathOf(key));
  if (!child.ExpectObject()) return false;
  fn(child);
  return true;
}

void JsonReader::RejectUnknownKeys(std::initializer_list<const char*> known) const {
  if (!node_.is_object()) return;
  std::set<std::string> allowed(known.begin(), known.end());
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    if (allowed.count(it.key())) continue;
    std::string list;
    for (const char* k : known)
      list += (list.empty() ? "" : ", ") + std::string(k);
    Error(it.key(), "unknown field (expected one of: " + list + ")");
  }
}

}  // namespace mosaic
