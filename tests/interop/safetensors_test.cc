// Safetensors reader/writer: round trips of every dtype, the sharded layout, and one clear error
// per kind of malformed file. Files written by the Python `safetensors` library are read in
// hf_parity_test.cc (every Hugging Face folder there).
#include "interop/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "core/file_io.h"

namespace mosaic::interop {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/mosaic_safetensors_XXXXXX";
  char* dir = ::mkdtemp(tmpl);
  EXPECT_NE(dir, nullptr);
  return dir ? dir : "/tmp";
}

// Writes a raw file: 8-byte length, header text, data bytes.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

TEST(Safetensors, RoundTripsEveryDtypeBitForBit) {
  const std::string dir = TempDir();
  TensorMap in;
  in["f32"] = torch::randn({3, 4});
  in["f16"] = torch::randn({5}).to(torch::kHalf);
  in["bf16"] = torch::randn({2, 3, 2}).to(torch::kBFloat16);
  in["f64"] = torch::randn({2}, torch::kDouble);
  in["i64"] = torch::arange(-3, 4, torch::kLong);
  in["i32"] = torch::arange(0, 6, torch::kInt).reshape({2, 3});
  in["u8"] = torch::arange(0, 255, torch::kByte);
  in["bool"] = torch::tensor({true, false, true});
  in["scalar"] = torch::full({}, 2.5f);
  in["empty"] = torch::zeros({0, 7});
  in["strided"] = torch::randn({4, 6}).t();  // non-contiguous input is written contiguous
  ASSERT_TRUE(WriteSafetensors(dir + "/a.safetensors", in, {{"format", "pt"}, {"k", "v"}}).ok());
  auto out = ReadSafetensors(dir + "/a.safetensors");
  ASSERT_TRUE(out.ok()) << out.status().message();
  ASSERT_EQ(out->size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(out->count(name)) << name;
    const torch::Tensor& r = out->at(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(r, t)) << name;
  }
  auto meta = ReadSafetensorsMetadata(dir + "/a.safetensors");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->at("k"), "v");
  EXPECT_EQ(meta->at("format"), "pt");
}

TEST(Safetensors, HeaderIsAlignedAndLittleEndian) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/b.safetensors", {{"x", torch::tensor({1.0f, 2.0f})}}).ok());
  auto bytes = ReadTextFile(dir + "/b.safetensors");
  ASSERT_TRUE(bytes.ok());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>((*bytes)[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes->size(), 8 + n + 8);  // two floats
  float first;
  std::memcpy(&first, bytes->data() + 8 + n, 4);
  EXPECT_EQ(first, 1.0f);
  EXPECT_NE(bytes->find("\"dtype\":\"F32\""), std::string::npos);
}

TEST(Safetensors, MalformedFilesAreClearErrors) {
  const std::string dir = TempDir();
  const std::string p = dir + "/bad.safetensors";
  auto error = [&](const std::string& header, const std::string& data) {
    WriteRaw(p, header, data);
    auto r = ReadSafetensors(p);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.status().message();
  };
  const std::string four(4, '\0'), eight(8, '\0');
  EXPECT_NE(error(R"({"w":{"dtype":"Q8","shape":[1],"data_offsets":[0,4]}})", four)
                .find("tensor \"w\": unsupported dtype \"Q8\""),
            std::string::npos);
  EXPECT_NE(error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four)
                .find("tensor \"w\": data_offsets [0, 4) hold 4 bytes, its F32 shape needs 8"),
            std::string::npos);
  EXPECT_NE(error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", four)
                .find("past the file"),
            std::string::npos);
  EXPECT_NE(error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                  eight)
                .find("tensor \"b\" starts at byte 2, expected 4 (overlaps"),
            std::string::npos);
  EXPECT_NE(error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight).find("(gap)"),
            std::string::npos);
  EXPECT_NE(error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight)
                .find("4 trailing data bytes"),
            std::string::npos);
  EXPECT_NE(error(R"({"a":{"dtype":"F32","shape":[1]}})", four).find("expected {dtype"),
            std::string::npos);
  EXPECT_NE(error(R"({"a": )", "").find("invalid JSON"), std::string::npos);
  // A header length beyond the file.
  {
    std::ofstream out(p, std::ios::binary);
    out.write("\xff\xff\x00\x00\x00\x00\x00\x00{}", 10);
  }
  auto r = ReadSafetensors(p);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("past the end"), std::string::npos);
  EXPECT_EQ(ReadSafetensors(dir + "/none.safetensors").status().code(), StatusCode::kNotFound);
}

TEST(Safetensors, ShardedFoldersRoundTripAndCheckTheIndex) {
  const std::string dir = TempDir();
  TensorMap in;
  for (int i = 0; i < 5; ++i)
    in["layer" + std::to_string(i) + ".w"] = torch::randn({16, 16});  // 1 KiB each
  ASSERT_TRUE(WriteModelWeights(dir, in, /*max_shard_bytes=*/2100).ok());
  EXPECT_FALSE(std::ifstream(dir + "/model.safetensors").good());
  EXPECT_TRUE(std::ifstream(dir + "/model-00003-of-00003.safetensors").good());
  auto out = ReadModelWeights(dir);
  ASSERT_TRUE(out.ok()) << out.status().message();
  ASSERT_EQ(out->size(), in.size());
  for (const auto& [name, t] : in)
    EXPECT_TRUE(torch::equal(out->at(name), t)) << name;

  // The index names a tensor its shard lacks.
  auto index = LoadJsonFile(dir + "/model.safetensors.index.json");
  ASSERT_TRUE(index.ok());
  (*index)["weight_map"]["ghost"] = "model-00001-of-00003.safetensors";
  ASSERT_TRUE(WriteJsonFile(dir + "/model.safetensors.index.json", *index).ok());
  auto missing = ReadModelWeights(dir);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("tensor \"ghost\" is missing from "
                                            "model-00001-of-00003.safetensors"),
            std::string::npos);
  // A shard holds a tensor the index does not name.
  (*index)["weight_map"].erase("ghost");
  (*index)["weight_map"].erase("layer0.w");
  ASSERT_TRUE(WriteJsonFile(dir + "/model.safetensors.index.json", *index).ok());
  auto extra = ReadModelWeights(dir);
  ASSERT_FALSE(extra.ok());
  EXPECT_NE(extra.status().message().find("tensor \"layer0.w\" is not in"), std::string::npos);

  auto empty = ReadModelWeights(TempDir());
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("no model.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace mosaic::interop
