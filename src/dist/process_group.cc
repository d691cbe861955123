// c10d process groups behind Status (see process_group.h).
#include "dist/process_group.h"
#include "dist/connect.h"

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#ifdef MOSAIC_DIST_HAVE_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <sstream>

namespace mosaic::dist {
namespace {

// The first line of an exception's message, without c10's backtrace.
std::string FirstLine(const std::exception& e) {
  const auto* c10e = dynamic_cast<const c10::Error*>(&e);
  std::string m = c10e ? c10e->what_without_backtrace() : e.what();
  const size_t nl = m.find('\n');
  if (nl != std::string::npos) m.resize(nl);
  return m;
}

bool IsLoopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

struct PendingCollective::Impl {
  c10::intrusive_ptr<c10d::Work> work;
  std::string what;
  const Context* ctx = nullptr;
};

PendingCollective::PendingCollective() = default;
PendingCollective::PendingCollective(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PendingCollective::~PendingCollective() = default;
PendingCollective::PendingCollective(PendingCollective&&) noexcept = default;
PendingCollective& PendingCollective::operator=(PendingCollective&&) noexcept = default;

Status PendingCollective::Wait() {
  if (!impl_ || !impl_->work) return Status::Ok();
  try {
    impl_->work->wait();
  } catch (const std::exception& e) {
    Status s = impl_->ctx->Failure(impl_->what, e);
    impl_.reset();
    return s;
  }
  impl_.reset();
  return Status::Ok();
}

struct Context::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

Context::Context(LaunchEnv env, torch::Device device, std::unique_ptr<Impl> impl)
    : env_(std::move(env)), device_(device), impl_(std::move(impl)) {}

Context::~Context() = default;

std::string Context::backend_name() const {
  return impl_->backend->getBackendName();
}

Status Context::Failure(const std::string& what, const std::exception& e) const {
  return Unavailable("rank " + std::to_string(rank()) + " of " + std::to_string(world_size()) +
                     ": " + what + " failed: " + FirstLine(e) +
                     " (another rank probably stopped or hung; its own output says why)");
}

StatusOr<std::unique_ptr<Context>> Context::Connect(const LaunchEnv& env, torch::Device device,
                                                    const ContextOptions& options) {
  if (!(options.timeout_s > 0)) return InvalidArgument("--dist-timeout must be positive");
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
  auto impl = std::make_unique<Impl>();
  const std::string where = "rank " + std::to_string(env.rank) + " of " +
                            std::to_string(env.world_size) + ": rendezvous at " + env.master_addr +
                            ":" + std::to_string(env.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0 && !env.agent_store;
    so.numWorkers = env.world_size;
    so.waitWorkers = true;
    so.timeout = timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    if (env.agent_store) {
      impl->store = c10::make_intrusive<c10d::PrefixStore>(
          "/worker/attempt_" + std::to_string(env.restart_count), impl->store);
    }
  } catch (const std::exception& e) {
    return Unavailable(where + " failed: " + FirstLine(e));
  }
  try {
    if (device.is_cpu()) {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (IsLoopback(env.master_addr)) {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      impl->backend =
          c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, env.rank, env.world_size, o);
    } else {
#ifdef MOSAIC_DIST_HAVE_NCCL
      // Note [NVLS off]: NVLink SHARP multicast objects outlive a crashed job on some drivers
      // and can leave a shared GPU unusable; Mosaic does not need them.
      setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(device.index() < 0 ? 0 : device.index()));
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      impl->backend =
          c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, env.rank, env.world_size, o);
#else
      return Unavailable(where +
                         ": this build has no NCCL (nccl.h was not found at configure time)");
#endif
    }
  } catch (const std::exception& e) {
    return Unavailable(where + ": creating the process group failed: " + FirstLine(e));
  }
  std::unique_ptr<Context> ctx(new Context(env, device, std::move(impl)));
  // Every rank has joined once this returns (and the backend's connections are up).
  MOSAIC_RETURN_IF_ERROR(ctx->Barrier("the first barrier"));
  return ctx;
}

Status Context::AllReduceSum(torch::Tensor& t, const std::string& what) {
  MOSAIC_ASSIGN_OR_RETURN(PendingCollective p, AllReduceSumAsync(t, what));
  return p.Wait();
}

StatusOr<PendingCollective> Context::AllReduceSumAsync(torch::Tensor& t, const std::string& what) {
  try {
    std::vector<at::Tensor> ts{t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    auto impl = std::make_unique<PendingCollective::Impl>();
    impl->work = impl_->backend->allreduce(ts, o);
    impl->what = what;
    impl->ctx = this;
    return PendingCollective(std::move(impl));
  } catch (const std::exception& e) {
    return Failure(what, e);
  }
}

StatusOr<torch::Tensor> Context::AllGather(const torch::Tensor& t, const std::string& what) {
  try {
    torch::Tensor in = t.dim() == 0 ? t.reshape({1}).contiguous() : t.contiguous();
    std::vector<int64_t> sizes = in.sizes().vec();
    sizes[0] *= world_size();
    torch::Tensor out = torch::empty(sizes, in.options());
    // (W * B, ...): rank r's rows at [r * B, (r + 1) * B)
    auto work = impl_->backend->_allgather_base(out, in);
    work->wait();
    return out;
  } catch (const std::exception& e) {
    return Failure(what, e);
  }
}

Status Context::Barrier(const std::string& what) {
  try {
    // A tiny all-reduce rather than c10d's barrier: NCCL's barrier guesses the device.
    torch::Tensor t = torch::ones({1}, torch::TensorOptions().device(device_));
    std::vector<at::Tensor> ts{t};
    impl_->backend->allreduce(ts)->wait();
  } catch (const std::exception& e) {
    return Failure(what, e);
  }
  return Status::Ok();
}

}  // namespace mosaic::dist

namespace mosaic::dist {

StatusOr<std::shared_ptr<Context>> ConnectToRun(const LaunchEnv& env, const std::string& device,
                                                double timeout_s) {
  std::string name = device == "cuda" ? "cuda:" + std::to_string(env.local_rank) : device;
  torch::Device d(torch::kCPU);
  try {
    d = torch::Device(name);
  } catch (const std::exception&) {
    return InvalidArgument("--device: expected cpu, cuda or cuda:N, got '" + device + "'");
  }
  if (!d.is_cpu() && !d.is_cuda()) {
    return InvalidArgument("--device: expected cpu, cuda or cuda:N, got '" + device + "'");
  }
  ContextOptions o;
  o.timeout_s = timeout_s;
  MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<Context> ctx, Context::Connect(env, d, o));
  return std::shared_ptr<Context>(std::move(ctx));
}

}  // namespace mosaic::dist
