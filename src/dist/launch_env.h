// The process's place in a distributed run, read from the environment torchrun sets for each
// worker (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Without WORLD_SIZE (or with
// WORLD_SIZE=1) the run is a single process. No torch here.
//
//   MOSAIC_ASSIGN_OR_RETURN(LaunchEnv env, ReadLaunchEnv());
//   if (env.distributed()) { ... connect to env.master_addr:env.master_port ... }
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/status.h"

namespace mosaic::dist {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // torchrun's agent already hosts the TCPStore at MASTER_ADDR:MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE=True): every rank joins it as a client, under the prefix
  // /worker/attempt_<TORCHELASTIC_RESTART_COUNT> as PyTorch's own workers do.
  bool agent_store = false;
  int restart_count = 0;
  bool distributed() const { return world_size > 1; }
};

// Looks up one variable (nullopt when unset). Tests pass their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// Parses and checks the variables: InvalidArgument naming the variable and its value when one
// is malformed (not an integer, RANK outside [0, WORLD_SIZE), a port outside [1, 65535]) or
// missing in a run of more than one process.
StatusOr<LaunchEnv> ParseLaunchEnv(const EnvLookup& lookup);

// ParseLaunchEnv over the process environment.
StatusOr<LaunchEnv> ReadLaunchEnv();

}  // namespace mosaic::dist
