// A narrow C ABI over PyTorch's own collective layer (c10d): a TCPStore rendezvous, a Gloo process
// group, and the few collectives data-parallel training needs. Compiled by dist/build.rs against the
// headers of the torch wheel; the symbols come from libtorch_cpu.so. Every entry point catches C++
// exceptions and reports them as a message, so no exception crosses into Rust.

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// A store hosted for ranks that are all its clients (torchrun's agent store).
struct HostedStore {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

void set_err(char* err, size_t len, const char* msg) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg, len - 1);
  err[len - 1] = '\0';
}

template <typename F>
int guarded(char* err, size_t len, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_err(err, len, e.what());
  } catch (...) {
    set_err(err, len, "unknown C++ exception");
  }
  return 1;
}

}  // namespace

extern "C" {

// Join the job: rank 0 hosts the TCPStore at host:port unless `client_only` (torchrun's agent
// store), every rank connects, then a Gloo group of `world` ranks forms (on the interfaces of
// GLOO_SOCKET_IFNAME, or the one this machine's hostname resolves to, as PyTorch chooses).
// Returns the group, or null with `err` set.
void* ofa_c10d_gloo_new(const char* host, uint16_t port, int rank, int world, int client_only,
                        int64_t timeout_ms, const char* prefix, char* err, size_t err_len) {
  Group* out = nullptr;
  int rc = guarded(err, err_len, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = rank == 0 && client_only == 0;
    so.numWorkers = world;
    so.waitWorkers = true;
    so.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    // As PyTorch: the interfaces GLOO_SOCKET_IFNAME names (comma-separated), else the address
    // this machine's hostname resolves to.
    if (const char* ifnames = std::getenv("GLOO_SOCKET_IFNAME"); ifnames && *ifnames) {
      std::string all(ifnames);
      size_t start = 0;
      while (start <= all.size()) {
        size_t end = all.find(',', start);
        if (end == std::string::npos) end = all.size();
        if (end > start) {
          opts->devices.push_back(
              c10d::ProcessGroupGloo::createDeviceForInterface(all.substr(start, end - start)));
        }
        start = end + 1;
      }
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
    out = new Group{tcp, pg, timeout};
  });
  return rc == 0 ? out : nullptr;
}

// Sum `t` (an at::Tensor*, CPU, contiguous) in place over all ranks.
int ofa_c10d_allreduce_sum(void* g, void* t, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* group = static_cast<Group*>(g);
    std::vector<at::Tensor> v{*static_cast<at::Tensor*>(t)};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = group->timeout;
    auto work = group->backend->allreduce(v, o);
    work->wait(group->timeout);
  });
}

// Overwrite `t` on every rank with rank `root`'s.
int ofa_c10d_broadcast(void* g, void* t, int root, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* group = static_cast<Group*>(g);
    std::vector<at::Tensor> v{*static_cast<at::Tensor*>(t)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    o.timeout = group->timeout;
    auto work = group->backend->broadcast(v, o);
    work->wait(group->timeout);
  });
}

// Wait until every rank has arrived.
int ofa_c10d_barrier(void* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* group = static_cast<Group*>(g);
    c10d::BarrierOptions o;
    o.timeout = group->timeout;
    auto work = group->backend->barrier(o);
    work->wait(group->timeout);
  });
}

// Host a TCPStore on `port` (0: any free port) for ranks that are all clients, as torchrun's
// agent does. The server listens on every interface (c10d's choice, as torchrun's); `host` is
// where its clients connect. Returns the store, or null with `err` set; `*port_out` is the port
// it listens on.
void* ofa_c10d_store_host(const char* host, uint16_t port, int64_t timeout_ms, uint16_t* port_out,
                          char* err, size_t err_len) {
  HostedStore* out = nullptr;
  int rc = guarded(err, err_len, [&] {
    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = true;
    so.waitWorkers = false;
    so.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    *port_out = store->getPort();
    out = new HostedStore{store};
  });
  return rc == 0 ? out : nullptr;
}

void ofa_c10d_store_free(void* s) {
  try {
    delete static_cast<HostedStore*>(s);
  } catch (...) {
  }
}

void ofa_c10d_free(void* g) {
  try {
    delete static_cast<Group*>(g);
  } catch (...) {
  }
}

}  // extern "C"
