// Helpers for core tests: load a zoo file, apply a small edit to a JSON document.
#pragma once

#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "core/file_io.h"

namespace mosaic::testing {

inline std::string SourcePath(const std::string& rel) {
  return std::string(MOSAIC_SOURCE_DIR) + "/" + rel;
}

inline Json LoadSource(const std::string& rel) {
  StatusOr<Json> doc = LoadJsonFile(SourcePath(rel));
  EXPECT_TRUE(doc.ok()) << doc.status();
  return doc.ok() ? *doc : Json();
}

// One row of a broken-input table: an edit to a valid document and the message expected.
struct BrokenCase {
  std::string name;
  std::function<void(Json&)> edit;
  std::string expected;  // a substring of the error message
};

inline std::ostream& operator<<(std::ostream& os, const BrokenCase& c) {
  return os << c.name;
}

}  // namespace mosaic::testing
