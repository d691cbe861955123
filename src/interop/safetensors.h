// Safetensors files (the format of Hugging Face model folders) read into and written from
// libtorch tensors, and Hugging Face's sharded layout (model.safetensors.index.json).
//
// A file is an 8-byte little-endian header length N, N bytes of JSON header
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"format": "pt"}}
// and the raw little-endian data; offsets count from the first byte after the header.
//
//   MOSAIC_ASSIGN_OR_RETURN(TensorMap w, ReadSafetensors("model.safetensors"));
//   MOSAIC_RETURN_IF_ERROR(WriteSafetensors("out.safetensors", w));
//   MOSAIC_ASSIGN_OR_RETURN(TensorMap all, ReadModelWeights("hf-folder"));  // sharded or not
//
// Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL. A malformed file (header
// past the end, unknown dtype, a shape that does not match its byte range, overlapping or
// uncovered data) is InvalidArgument naming the file and the tensor; nothing is half-read.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

#include "core/status.h"

namespace mosaic::interop {

// Tensors by name (sorted, as safetensors headers are usually written).
using TensorMap = std::map<std::string, torch::Tensor>;

// The safetensors name of a dtype ("F32", "BF16", ...), or InvalidArgument.
StatusOr<std::string> SafetensorsDtypeName(torch::ScalarType type);

// Reads every tensor of one file onto the CPU (contiguous, in the stored dtype).
StatusOr<TensorMap> ReadSafetensors(const std::string& path);
// The header's "__metadata__" (string to string), empty if there is none.
StatusOr<std::map<std::string, std::string>> ReadSafetensorsMetadata(const std::string& path);

// Writes `tensors` (any device; copied to the CPU, made contiguous) atomically. Tensors are
// laid out in name order, each aligned to 8 bytes; metadata goes under "__metadata__".
Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                        const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// A Hugging Face folder's weights: model.safetensors, or the shards listed by
// model.safetensors.index.json ("weight_map": tensor -> shard file). A tensor the index names but
// its shard lacks, a shard tensor the index does not name, or one name in two shards is an error.
StatusOr<TensorMap> ReadModelWeights(const std::string& folder);

// Writes model.safetensors into `folder`, or, when the tensors exceed max_shard_bytes (> 0),
// model-0000i-of-0000n.safetensors shards plus model.safetensors.index.json.
Status WriteModelWeights(const std::string& folder, const TensorMap& tensors,
                         int64_t max_shard_bytes = 0);

}  // namespace mosaic::interop
