// An engine's per-stream workspaces and its teardown, against a fake driver:
// which streams share scratch, how the map stays bounded, and that teardown
// neither throws nor synchronizes (the GPU suite runs the same on a device).
#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "context_scope.hpp"
#include "pagedjit/errors.hpp"
#include "stream_workspaces.hpp"

using namespace pagedjit;

namespace {

// What the fake driver does and what it was asked.
struct FakeDriver {
  std::mutex mu;
  std::map<CUstream, unsigned long long> ids;  // stream ids by handle
  bool capturing = false;
  CUresult result = CUDA_SUCCESS;  // of every call (CUDA_ERROR_DEINITIALIZED: at process exit)
  std::uintptr_t next = 0x1000;
  std::vector<std::string> log;
  int syncs = 0;

  void reset() {
    ids = {{nullptr, 1}, {CU_STREAM_LEGACY, 1}, {CU_STREAM_PER_THREAD, 2}};  // per-thread: one id for all threads
    capturing = false;
    result = CUDA_SUCCESS;
    log.clear();
    syncs = 0;
  }
  void note(const std::string& s) {
    std::lock_guard<std::mutex> lock(mu);
    log.push_back(s);
  }
  std::uintptr_t fresh() {
    std::lock_guard<std::mutex> lock(mu);
    return next += 0x1000;
  }
};
FakeDriver fake;

std::string hex(const void* p) {
  return std::to_string(reinterpret_cast<std::uintptr_t>(p));
}

DriverApi fake_api() {
  DriverApi d{};
  d.cuStreamGetId = [](CUstream s, unsigned long long* id) {
    if (fake.result != CUDA_SUCCESS) return fake.result;
    auto it = fake.ids.find(s);
    *id = it == fake.ids.end() ? 1000 + reinterpret_cast<std::uintptr_t>(s) : it->second;
    return CUDA_SUCCESS;
  };
  d.cuStreamIsCapturing = [](CUstream, CUstreamCaptureStatus* c) {
    *c = fake.capturing ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
    return fake.result;
  };
  d.cuMemAllocAsync = [](CUdeviceptr* p, size_t, CUstream) {
    *p = fake.fresh();
    return fake.result;
  };
  d.cuMemFreeAsync = [](CUdeviceptr p, CUstream s) {
    fake.note("free " + std::to_string(p) + " on " + hex(s));
    return fake.result;
  };
  d.cuMemsetD8Async = [](CUdeviceptr, unsigned char, size_t, CUstream) { return fake.result; };
  d.cuEventCreate = [](CUevent* e, unsigned) {
    *e = reinterpret_cast<CUevent>(fake.fresh());
    return fake.result;
  };
  d.cuEventDestroy = [](CUevent) { return fake.result; };
  d.cuStreamWaitEvent = [](CUstream s, CUevent e, unsigned) {
    fake.note("wait " + hex(e) + " on " + hex(s));
    return fake.result;
  };
  d.cuStreamCreate = [](CUstream* s, unsigned) {
    *s = reinterpret_cast<CUstream>(fake.fresh());
    return fake.result;
  };
  d.cuStreamDestroy = [](CUstream) { return fake.result; };
  d.cuLibraryUnload = [](CUlibrary l) {
    fake.note("unload " + hex(l));
    return fake.result;
  };
  d.cuCtxGetCurrent = [](CUcontext* c) {
    *c = nullptr;
    return fake.result;
  };
  d.cuCtxPushCurrent = [](CUcontext) { return fake.result; };
  d.cuCtxPopCurrent = [](CUcontext*) { return fake.result; };
  // Anything that waits on the host for the device.
  d.cuCtxSynchronize = [] {
    ++fake.syncs;
    return fake.result;
  };
  d.cuStreamSynchronize = [](CUstream) {
    ++fake.syncs;
    return fake.result;
  };
  d.cuEventSynchronize = [](CUevent) {
    ++fake.syncs;
    return fake.result;
  };
  return d;
}

CUstream stream(std::uintptr_t n) {
  return reinterpret_cast<CUstream>(n);
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("engine workspaces: each thread's CU_STREAM_PER_THREAD stream gets its own scratch") {
    fake.reset();
    const DriverApi d = fake_api();
    StreamWorkspaces ws(d);
    CUdeviceptr got[2] = {};
    std::thread a([&] { got[0] = ws.acquire(CU_STREAM_PER_THREAD, 4096, 256).scratch.partials; });
    a.join();  // (one at a time: the engine's mutex serializes acquire)
    std::thread b([&] { got[1] = ws.acquire(CU_STREAM_PER_THREAD, 4096, 256).scratch.partials; });
    b.join();
    CHECK(got[0] != 0);
    CHECK(got[0] != got[1]);
    // The same thread's per-thread stream keeps its scratch.
    CHECK(ws.acquire(CU_STREAM_PER_THREAD, 4096, 256).scratch.partials ==
          ws.acquire(CU_STREAM_PER_THREAD, 4096, 256).scratch.partials);
  }

  TEST_CASE("engine workspaces: a new stream with a destroyed stream's handle does not inherit its scratch") {
    fake.reset();
    const DriverApi d = fake_api();
    StreamWorkspaces ws(d);
    const CUstream s = stream(0x5000);
    fake.ids[s] = 10;
    const Scratch first = ws.acquire(s, 4096, 256).scratch;
    CHECK(ws.acquire(s, 4096, 256).scratch.partials == first.partials);  // the same stream: the same scratch
    fake.ids[s] = 11;  // destroyed, and the handle came back for another stream
    const Scratch second = ws.acquire(s, 4096, 256).scratch;
    CHECK(second.partials != first.partials);
    CHECK(second.counters != first.counters);
  }

  TEST_CASE("engine workspaces: the legacy stream's two handles share one scratch") {
    fake.reset();
    const DriverApi d = fake_api();
    StreamWorkspaces ws(d);
    CHECK(ws.acquire(nullptr, 4096, 256).scratch.partials == ws.acquire(CU_STREAM_LEGACY, 4096, 256).scratch.partials);
    CHECK(ws.size() == 1);
  }

  TEST_CASE("engine workspaces: at most max_streams kept; the oldest freed after its last launch") {
    fake.reset();
    const DriverApi d = fake_api();
    StreamWorkspaces ws(d, 4);
    std::vector<WorkspaceLease> leases;
    for (std::uintptr_t i = 1; i <= 10; ++i) leases.push_back(ws.acquire(stream(0x100 * i), 4096, 256));
    CHECK(ws.size() == 4);
    // Streams 1..6 were evicted, each by the stream that needed room: wait for
    // its last launch's event, then free both its buffers there.
    for (std::size_t i = 0; i < 6; ++i) {
      CAPTURE(i);
      const std::string on = " on " + hex(stream(0x100 * (i + 5)));
      const auto at = [&](const std::string& s) {
        for (std::size_t j = 0; j < fake.log.size(); ++j)
          if (fake.log[j] == s) return int(j);
        return -1;
      };
      const int wait = at("wait " + hex(leases[i].done) + on);
      REQUIRE(wait >= 0);
      CHECK(at("free " + std::to_string(leases[i].scratch.partials) + on) > wait);
      CHECK(at("free " + std::to_string(leases[i].scratch.counters) + on) > wait);
    }
    CHECK(fake.syncs == 0);
  }

  TEST_CASE("engine workspaces: stream capture reuses scratch made before it, and keeps it") {
    fake.reset();
    const DriverApi d = fake_api();
    StreamWorkspaces ws(d, 2);
    const CUstream s = stream(0x700);
    const WorkspaceLease before = ws.acquire(s, 4096, 256);
    CHECK(before.done != nullptr);
    fake.capturing = true;
    const WorkspaceLease during = ws.acquire(s, 4096, 256);
    CHECK(during.scratch.partials == before.scratch.partials);
    CHECK(during.done == nullptr);  // no event recorded in a capture
    try {
      ws.acquire(stream(0x800), 4096, 256);
      FAIL("allocated during capture");
    } catch (const InvalidArgument& e) {
      CHECK(e.argument() == "workspace");
    }
    CHECK_THROWS_AS(ws.acquire(s, 1 << 20, 256), InvalidArgument);  // growing would allocate
    fake.capturing = false;
    for (std::uintptr_t i = 1; i <= 3; ++i) ws.acquire(stream(0x900 + i), 4096, 256);
    fake.capturing = true;  // a graph holds s's scratch: never evicted
    CHECK(ws.acquire(s, 4096, 256).scratch.partials == before.scratch.partials);
  }

  TEST_CASE("engine teardown: frees in stream order and synchronizes nothing") {
    fake.reset();
    const DriverApi d = fake_api();
    StreamWorkspaces ws(d);
    const WorkspaceLease a = ws.acquire(stream(0x100), 4096, 256);
    ws.acquire(stream(0x200), 4096, 256);
    release_engine(d, reinterpret_cast<CUcontext>(0x42), ws, {reinterpret_cast<CUlibrary>(0x77)});
    CHECK(fake.syncs == 0);
    CHECK(ws.size() == 0);
    int frees = 0, unloads = 0;
    bool waited = false;
    for (const std::string& s : fake.log) {
      frees += s.rfind("free ", 0) == 0;
      unloads += s == "unload " + hex(reinterpret_cast<void*>(0x77));
      waited = waited || s.rfind("wait " + hex(a.done), 0) == 0;
    }
    CHECK(frees == 4);
    CHECK(unloads == 1);
    CHECK(waited);
  }

  TEST_CASE("engine teardown: a deinitialized driver (process exit) throws nothing out of it") {
    fake.reset();
    const DriverApi d = fake_api();
    StreamWorkspaces ws(d);
    ws.acquire(stream(0x100), 4096, 256);
    fake.result = CUDA_ERROR_DEINITIALIZED;
    CHECK_THROWS_AS(ContextScope(d, reinterpret_cast<CUcontext>(0x42)), DriverError);  // what calls use
    CHECK_NOTHROW(release_engine(d, reinterpret_cast<CUcontext>(0x42), ws, {reinterpret_cast<CUlibrary>(0x77)}));
    CHECK(fake.syncs == 0);
  }
}
