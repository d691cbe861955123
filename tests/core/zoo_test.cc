// Every spec shipped under configs/ validates (models, devices, plans, profiles).
#include <gtest/gtest.h>

#include <filesystem>

#include "core/spec_file.h"
#include "test_util.h"

namespace mosaic {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> JsonFilesUnder(const std::string& rel) {
  std::vector<std::string> out;
  fs::path dir = testing::SourcePath(rel);
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".json") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Zoo, EveryShippedSpecValidates) {
  ValidateOptions options;
  options.configs_dir = testing::SourcePath("configs");
  size_t checked = 0;
  for (const char* dir :
       {"configs/models", "configs/devices", "configs/plans", "configs/profiles"}) {
    for (const auto& f : JsonFilesUnder(dir)) {
      StatusOr<SpecKind> kind = ValidateSpecFile(f, options);
      EXPECT_TRUE(kind.ok()) << kind.status();
      ++checked;
    }
  }
  EXPECT_GE(checked, 12u);  // the zoo is really there
}

TEST(Zoo, HasTheModelsTheIssuesName) {
  for (const char* name :
       {"clip-tiny", "clip-b16", "clip-l14", "llava-small", "omni-small", "imagebind-like"}) {
    StatusOr<SpecKind> kind =
        ValidateSpecFile(testing::SourcePath(std::string("configs/models/") + name + ".json"), {});
    ASSERT_TRUE(kind.ok()) << kind.status();
    EXPECT_EQ(*kind, SpecKind::kModel);
  }
}

TEST(SpecFile, DetectsKinds) {
  EXPECT_EQ(DetectSpecKind(Json::parse(R"({"modules": []})")), SpecKind::kModel);
  EXPECT_EQ(DetectSpecKind(Json::parse(R"({"sm_count": 1})")), SpecKind::kDevice);
  EXPECT_EQ(DetectSpecKind(Json::parse(R"({"phases": []})")), SpecKind::kPlan);
  EXPECT_EQ(DetectSpecKind(Json::parse(R"({"entries": []})")), SpecKind::kProfile);
  EXPECT_EQ(DetectSpecKind(Json::parse(R"([1])")), SpecKind::kUnknown);
}

}  // namespace
}  // namespace mosaic
