// Helpers for the dist tests: a free loopback port, and N Gloo ranks run as threads of this
// process (each with its own Context), so collectives can be tested without spawning.
//
//   RunRanks(2, [](Context& ctx) { torch::Tensor t = torch::ones({2}); ... });
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <thread>
#include <vector>

#include "dist/process_group.h"

namespace mosaic::dist::testing {

// A port nothing listens on right now (bound to 0, read back, released).
inline int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

inline LaunchEnv Env(int rank, int world, int port) {
  LaunchEnv env;
  env.rank = rank;
  env.world_size = world;
  env.local_rank = rank;
  env.master_addr = "127.0.0.1";
  env.master_port = port;
  return env;
}

// Runs fn on `world` threads, one rank each, after connecting them (60 s timeout).
inline void RunRanks(int world, const std::function<void(Context&)>& fn) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      ContextOptions o;
      o.timeout_s = 60;
      auto ctx = Context::Connect(Env(r, world, port), torch::kCPU, o);
      ASSERT_TRUE(ctx.ok()) << ctx.status();
      fn(**ctx);
    });
  }
  for (auto& t : threads)
    t.join();
}

}  // namespace mosaic::dist::testing
