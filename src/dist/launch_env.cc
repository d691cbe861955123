// torchrun's environment (see launch_env.h).
#include "dist/launch_env.h"

#include <cerrno>
#include <cstdlib>

namespace mosaic::dist {
namespace {

StatusOr<int> ParseInt(const std::string& name, const std::string& value, int lo, int hi) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || errno != 0 || end == nullptr || *end != '\0' || v < lo || v > hi) {
    return InvalidArgument("environment variable " + name + "='" + value +
                           "': expected an integer in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "]");
  }
  return static_cast<int>(v);
}

}  // namespace

StatusOr<LaunchEnv> ParseLaunchEnv(const EnvLookup& lookup) {
  LaunchEnv env;
  const std::optional<std::string> world = lookup("WORLD_SIZE");
  if (!world) return env;
  MOSAIC_ASSIGN_OR_RETURN(env.world_size, ParseInt("WORLD_SIZE", *world, 1, 1 << 20));
  if (!env.distributed()) return env;
  for (const char* name : {"RANK", "MASTER_ADDR", "MASTER_PORT"}) {
    if (!lookup(name)) {
      return InvalidArgument(std::string("environment variable ") + name +
                             " is not set but WORLD_SIZE=" + *world +
                             " (start the ranks with torchrun --no-python mosaic train ...)");
    }
  }
  MOSAIC_ASSIGN_OR_RETURN(env.rank, ParseInt("RANK", *lookup("RANK"), 0, env.world_size - 1));
  if (auto local = lookup("LOCAL_RANK")) {
    MOSAIC_ASSIGN_OR_RETURN(env.local_rank, ParseInt("LOCAL_RANK", *local, 0, env.world_size - 1));
  } else {
    env.local_rank = env.rank;
  }
  env.master_addr = *lookup("MASTER_ADDR");
  if (env.master_addr.empty()) return InvalidArgument("environment variable MASTER_ADDR is empty");
  MOSAIC_ASSIGN_OR_RETURN(env.master_port,
                          ParseInt("MASTER_PORT", *lookup("MASTER_PORT"), 1, 65535));
  env.agent_store = lookup("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  if (auto restarts = lookup("TORCHELASTIC_RESTART_COUNT")) {
    MOSAIC_ASSIGN_OR_RETURN(env.restart_count,
                            ParseInt("TORCHELASTIC_RESTART_COUNT", *restarts, 0, 1 << 30));
  }
  return env;
}

StatusOr<LaunchEnv> ReadLaunchEnv() {
  return ParseLaunchEnv([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace mosaic::dist
