#include "interop/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <utility>
#include <vector>

#include "core/file_io.h"
#include "core/json_reader.h"

namespace mosaic::interop {

namespace {

static_assert(sizeof(void*) == 8, "safetensors offsets need 64-bit addressing");

struct DtypeName {
  const char* name;
  torch::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", torch::kFloat64},   {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16}, {"I64", torch::kInt64},   {"I32", torch::kInt32},
    {"I16", torch::kInt16},     {"I8", torch::kInt8},     {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},
};

bool HostIsLittleEndian() {
  const uint16_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// Caps a header at 100 MB, as the reference implementation does.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

std::string JoinPath(const std::string& folder, const std::string& name) {
  if (folder.empty() || folder.back() == '/') return folder + name;
  return folder + "/" + name;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

StatusOr<std::string> SafetensorsDtypeName(torch::ScalarType type) {
  for (const auto& d : kDtypes)
    if (d.type == type) return std::string(d.name);
  return InvalidArgument(std::string("safetensors: unsupported dtype ") + c10::toString(type));
}

namespace {

struct Header {
  Json json;
  uint64_t data_start = 0;  // 8 + header length
  uint64_t file_size = 0;
};

StatusOr<Header> ReadHeader(std::ifstream& in, const std::string& path) {
  if (!HostIsLittleEndian()) return Internal("safetensors: big-endian hosts are not supported");
  Header h;
  in.seekg(0, std::ios::end);
  h.file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char len_bytes[8];
  if (h.file_size < 8 || !in.read(reinterpret_cast<char*>(len_bytes), 8))
    return InvalidArgument(path +
                           ": not a safetensors file (shorter than its 8-byte header length)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | len_bytes[i];
  if (n > kMaxHeaderBytes || n > h.file_size - 8)
    return InvalidArgument(path + ": not a safetensors file (header length " + std::to_string(n) +
                           " past the end of the " + std::to_string(h.file_size) + "-byte file)");
  std::string text(n, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(n)))
    return IoError(path + ": read failed");
  auto parsed = ParseJson(text, path + " (safetensors header)");
  if (!parsed.ok()) return parsed.status();
  h.json = std::move(parsed).value();
  if (!h.json.is_object()) return InvalidArgument(path + ": safetensors header is not an object");
  h.data_start = 8 + n;
  return h;
}

}  // namespace

StatusOr<std::map<std::string, std::string>> ReadSafetensorsMetadata(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open");
  MOSAIC_ASSIGN_OR_RETURN(Header h, ReadHeader(in, path));
  std::map<std::string, std::string> out;
  auto it = h.json.find("__metadata__");
  if (it == h.json.end()) return out;
  if (!it->is_object()) return InvalidArgument(path + ": __metadata__ is not an object");
  for (const auto& [k, v] : it->items()) {
    if (!v.is_string()) return InvalidArgument(path + ": __metadata__." + k + " is not a string");
    out[k] = v.get<std::string>();
  }
  return out;
}

StatusOr<TensorMap> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open");
  MOSAIC_ASSIGN_OR_RETURN(Header h, ReadHeader(in, path));
  const uint64_t data_bytes = h.file_size - h.data_start;
  struct Entry {
    std::string name;
    torch::ScalarType type;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, info] : h.json.items()) {
    if (name == "__metadata__") continue;
    const std::string where = path + ": tensor \"" + name + "\"";
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") ||
        !info.contains("data_offsets") || !info["dtype"].is_string() || !info["shape"].is_array() ||
        !info["data_offsets"].is_array() || info["data_offsets"].size() != 2)
      return InvalidArgument(where + ": expected {dtype, shape, data_offsets: [begin, end]}");
    Entry e;
    e.name = name;
    const std::string dtype = info["dtype"].get<std::string>();
    bool known = false;
    for (const auto& d : kDtypes) {
      if (dtype == d.name) {
        e.type = d.type;
        known = true;
      }
    }
    if (!known) return InvalidArgument(where + ": unsupported dtype \"" + dtype + "\"");
    uint64_t numel = 1;
    for (const auto& d : info["shape"]) {
      if (!d.is_number_unsigned())
        return InvalidArgument(where + ": shape must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 40) || (v > 0 && numel > (uint64_t{1} << 40) / v))
        return InvalidArgument(where + ": shape too large");
      numel *= v;
      e.shape.push_back(static_cast<int64_t>(v));
    }
    const auto& off = info["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      return InvalidArgument(where + ": data_offsets must be non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    const uint64_t want = numel * c10::elementSize(e.type);
    if (e.end < e.begin || e.end - e.begin != want)
      return InvalidArgument(where + ": data_offsets [" + std::to_string(e.begin) + ", " +
                             std::to_string(e.end) + ") hold " + std::to_string(e.end - e.begin) +
                             " bytes, its " + dtype + " shape needs " + std::to_string(want));
    if (e.end > data_bytes)
      return InvalidArgument(where + ": data_offsets end " + std::to_string(e.end) +
                             " past the file's " + std::to_string(data_bytes) + " data bytes");
    entries.push_back(std::move(e));
  }
  // The data must be covered exactly once, without gaps (as the reference reader checks).
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries)
    by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  uint64_t cursor = 0;
  for (const Entry* e : by_offset) {
    if (e->begin != cursor)
      return InvalidArgument(path + ": tensor \"" + e->name + "\" starts at byte " +
                             std::to_string(e->begin) + ", expected " + std::to_string(cursor) +
                             (e->begin < cursor ? " (overlaps the previous tensor)" : " (gap)"));
    cursor = e->end;
  }
  if (cursor != data_bytes)
    return InvalidArgument(path + ": " + std::to_string(data_bytes - cursor) +
                           " trailing data bytes not owned by any tensor");
  TensorMap out;
  for (const Entry* e : by_offset) {
    torch::Tensor t = torch::empty(e->shape, torch::TensorOptions().dtype(e->type));
    in.seekg(static_cast<std::streamoff>(h.data_start + e->begin));
    if (e->end > e->begin &&
        !in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e->end - e->begin)))
      return IoError(path + ": read failed in tensor \"" + e->name + "\"");
    out.emplace(e->name, std::move(t));
  }
  return out;
}

Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                        const std::map<std::string, std::string>& metadata) {
  if (!HostIsLittleEndian()) return Internal("safetensors: big-endian hosts are not supported");
  Json header = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : metadata)
      m[k] = v;
    header["__metadata__"] = m;
  }
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") return InvalidArgument(path + ": \"__metadata__\" is reserved");
    if (!tensor.defined()) return InvalidArgument(path + ": tensor \"" + name + "\" is undefined");
    auto dtype = SafetensorsDtypeName(tensor.scalar_type());
    if (!dtype.ok()) return dtype.status().WithPrefix(path + ": tensor \"" + name + "\"");
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {
        {"dtype", *dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string contents;
  contents.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i)
    contents.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  contents += text;
  for (const torch::Tensor& t : data)
    contents.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return WriteFileAtomic(path, contents);
}

StatusOr<TensorMap> ReadModelWeights(const std::string& folder) {
  const std::string single = JoinPath(folder, "model.safetensors");
  const std::string index_path = JoinPath(folder, "model.safetensors.index.json");
  if (FileExists(single)) return ReadSafetensors(single);
  if (!FileExists(index_path))
    return NotFound(folder + ": no model.safetensors or model.safetensors.index.json");
  MOSAIC_ASSIGN_OR_RETURN(Json index, LoadJsonFile(index_path));
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    return InvalidArgument(index_path + ": expected an object with \"weight_map\"");
  std::map<std::string, std::set<std::string>> by_shard;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string() || shard.get<std::string>().find('/') != std::string::npos)
      return InvalidArgument(index_path + ": weight_map." + name + " must be a file name");
    by_shard[shard.get<std::string>()].insert(name);
  }
  TensorMap out;
  for (const auto& [shard, names] : by_shard) {
    const std::string shard_path = JoinPath(folder, shard);
    MOSAIC_ASSIGN_OR_RETURN(TensorMap part, ReadSafetensors(shard_path));
    for (auto& [name, t] : part) {
      if (!names.count(name))
        return InvalidArgument(shard_path + ": tensor \"" + name + "\" is not in " + index_path +
                               "'s weight_map for this shard");
      out.emplace(name, std::move(t));
    }
    for (const auto& name : names)
      if (!out.count(name))
        return InvalidArgument(index_path + ": tensor \"" + name + "\" is missing from " + shard);
  }
  return out;
}

Status WriteModelWeights(const std::string& folder, const TensorMap& tensors,
                         int64_t max_shard_bytes) {
  int64_t total = 0;
  for (const auto& [name, t] : tensors)
    total += t.numel() * t.element_size();
  if (max_shard_bytes <= 0 || total <= max_shard_bytes)
    return WriteSafetensors(JoinPath(folder, "model.safetensors"), tensors);
  std::vector<TensorMap> shards(1);
  int64_t in_shard = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t bytes = t.numel() * t.element_size();
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().emplace(name, t);
    in_shard += bytes;
  }
  Json weight_map = Json::object();
  const int n = static_cast<int>(shards.size());
  for (int i = 0; i < n; ++i) {
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05d-of-%05d.safetensors", i + 1, n);
    MOSAIC_RETURN_IF_ERROR(WriteSafetensors(JoinPath(folder, file), shards[i]));
    for (const auto& [name, t] : shards[i])
      weight_map[name] = file;
  }
  Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  return WriteJsonFile(JoinPath(folder, "model.safetensors.index.json"), index);
}

}  // namespace mosaic::interop
