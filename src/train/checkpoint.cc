// Checkpoint files (see checkpoint.h for the layout).
#include "train/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/file_io.h"
#include "train/posix_files.h"

namespace mosaic::train {
namespace {

// Makes the rename that WriteFileAtomic did durable.
void SyncFolder(const std::string& path) {
  const std::string dir = ParentPath(path);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

torch::Tensor I64(int64_t v) {
  return torch::tensor({v}, torch::kInt64);
}

}  // namespace

std::string CheckpointFileName(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "step-%08lld.ckpt", static_cast<long long>(step));
  return buf;
}

std::vector<std::string> ListCheckpoints(const std::string& dir) {
  std::vector<std::pair<long long, std::string>> found;
  for (const std::string& name : ListFolder(dir)) {
    long long step = 0;
    char tail[8] = {0};
    if (std::sscanf(name.c_str(), "step-%lld.%5s", &step, tail) == 2 &&
        std::strcmp(tail, "ckpt") == 0 && name == CheckpointFileName(step)) {
      found.emplace_back(step, JoinPath(dir, name));
    }
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found)
    out.push_back(f.second);
  return out;
}

int RemoveStaleCheckpointTemporaries(const std::string& dir) {
  int removed = 0;
  for (const std::string& name : ListFolder(dir)) {
    // WriteFileAtomic's temporaries: step-NNNNNNNN.ckpt.tmp.<pid>.
    const size_t at = name.find(".ckpt.tmp.");
    if (name.rfind("step-", 0) != 0 || at == std::string::npos) continue;
    const std::string pid_text = name.substr(at + 10);
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos ||
        pid_text.size() > 9) {
      continue;
    }
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // a live writer
    if (::unlink(JoinPath(dir, name).c_str()) == 0) ++removed;
  }
  return removed;
}

void PruneCheckpoints(const std::string& dir, int keep) {
  std::vector<std::string> all = ListCheckpoints(dir);
  for (size_t i = static_cast<size_t>(std::max(keep, 1)); i < all.size(); ++i) {
    ::unlink(all[i].c_str());
  }
}

Status SaveCheckpoint(const std::string& path, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, const TrainState& state,
                      const std::function<void(const std::string&)>& midway) {
  std::string payload;
  try {
    torch::serialize::OutputArchive archive;
    torch::serialize::OutputArchive model_archive, optimizer_archive;
    model.save(model_archive);
    optimizer.save(optimizer_archive);
    archive.write("model", model_archive);
    archive.write("optimizer", optimizer_archive);
    archive.write("step", I64(state.step));
    archive.write("data_epoch", I64(state.data.epoch));
    archive.write("data_offset", I64(state.data.offset));
    archive.write("seed", I64(static_cast<int64_t>(state.seed)));
    archive.write("model_name", c10::IValue(state.model_name));
    if (state.rng.defined()) archive.write("rng", state.rng);
    if (state.loss_scale.defined()) archive.write("loss_scale", state.loss_scale);
    archive.save_to([&](const void* data, size_t n) -> size_t {
      payload.append(static_cast<const char*>(data), n);
      return n;
    });
  } catch (const std::exception& e) {
    return Internal(path + ": cannot serialize the checkpoint: " + e.what());
  }
  std::string file = CheckpointHeader(payload);
  file += payload;
  payload.clear();
  payload.shrink_to_fit();
  MOSAIC_RETURN_IF_ERROR(WriteFileAtomic(path, file, midway));
  SyncFolder(path);
  return Status::Ok();
}

Status VerifyCheckpointFile(const std::string& path) {
  MOSAIC_ASSIGN_OR_RETURN(std::string bytes, ReadTextFile(path));
  return VerifyCheckpointBytes(bytes, path);
}

Status LoadCheckpoint(const std::string& path, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, TrainState* state) {
  MOSAIC_ASSIGN_OR_RETURN(std::string bytes, ReadTextFile(path));
  MOSAIC_RETURN_IF_ERROR(VerifyCheckpointBytes(bytes, path));
  try {
    std::optional<torch::Device> device;
    auto params = model.parameters();
    if (!params.empty()) device = params.front().device();
    torch::serialize::InputArchive archive;
    archive.load_from(bytes.data() + kCheckpointHeaderSize, bytes.size() - kCheckpointHeaderSize,
                      device);
    c10::IValue name;
    if (!archive.try_read("model_name", name) || !name.isString()) {
      return InvalidArgument(path + ": checkpoint has no model name");
    }
    if (!state->model_name.empty() && name.toStringRef() != state->model_name) {
      return InvalidArgument(path + ": checkpoint of model '" + name.toStringRef() + "', not of '" +
                             state->model_name + "'");
    }
    torch::Tensor t;
    archive.read("seed", t);
    if (static_cast<uint64_t>(t.item<int64_t>()) != state->seed) {
      return InvalidArgument(path + ": checkpoint was trained with --seed " +
                             std::to_string(t.item<int64_t>()) + ", not " +
                             std::to_string(state->seed));
    }
    torch::serialize::InputArchive model_archive, optimizer_archive;
    archive.read("model", model_archive);
    archive.read("optimizer", optimizer_archive);
    model.load(model_archive);
    optimizer.load(optimizer_archive);
    archive.read("step", t);
    state->step = t.item<int64_t>();
    archive.read("data_epoch", t);
    state->data.epoch = t.item<int64_t>();
    archive.read("data_offset", t);
    state->data.offset = t.item<int64_t>();
    torch::Tensor rng;
    state->rng = archive.try_read("rng", rng) ? rng : torch::Tensor();
    torch::Tensor scale;
    state->loss_scale = archive.try_read("loss_scale", scale) ? scale : torch::Tensor();
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    return InvalidArgument(path +
                           ": checkpoint does not match this model or is unreadable: " + what);
  }
  return Status::Ok();
}

}  // namespace mosaic::train
