#include "stream_workspaces.hpp"

#include <fmt/format.h>

#include <atomic>

#include "context_scope.hpp"
#include "pagedjit/errors.hpp"

namespace pagedjit {
namespace {

InvalidArgument capture_error(std::int64_t bytes) {
  return InvalidArgument("workspace",
                         fmt::format("a caller-provided workspace of >= {} bytes, or one call on this stream "
                                     "before capture (the engine does not allocate during stream capture)",
                                     bytes),
                         "none, and the stream is being captured");
}

// A number for the calling thread, unique for the life of the process.
std::uint64_t thread_token() {
  static std::atomic<std::uint64_t> next{1};
  thread_local const std::uint64_t token = next++;
  return token;
}

// The legacy stream has two handles.
CUstream canonical(CUstream s) {
  return s == CU_STREAM_LEGACY ? nullptr : s;
}

}  // namespace

void StreamWorkspaces::release_all() noexcept {
  if (entries_.empty()) return;
  CUstream s = nullptr;
  if (d_.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS) {
    for (auto& [key, e] : entries_) {
      d_.cuStreamWaitEvent(s, e.last_use, 0);
      if (e.partials) d_.cuMemFreeAsync(e.partials, s);
      if (e.counters) d_.cuMemFreeAsync(e.counters, s);
      d_.cuEventDestroy(e.last_use);
    }
    d_.cuStreamDestroy(s);
  }
  entries_.clear();
}

StreamWorkspaces::Key StreamWorkspaces::key_of(CUstream stream, bool capturing, std::int64_t bytes) const {
  Key k;
  // The driver may report one id for every thread's per-thread stream.
  if (stream == CU_STREAM_PER_THREAD) k.thread = thread_token();
  const CUresult r = d_.cuStreamGetId(stream, &k.stream_id);
  if (r == CUDA_SUCCESS) return k;
  if (!capturing) check(r, "cuStreamGetId");
  // A capturing stream may not tell its id: it is the one last seen with its handle.
  const Entry* best = nullptr;
  for (const auto& [key, e] : entries_)
    if (e.handle == canonical(stream) && key.thread == k.thread && (!best || e.tick > best->tick)) {
      best = &e;
      k = key;
    }
  if (!best) throw capture_error(bytes);
  return k;
}

void StreamWorkspaces::evict_one(CUstream stream) {
  auto victim = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (!it->second.captured && (victim == entries_.end() || it->second.tick < victim->second.tick)) victim = it;
  if (victim == entries_.end()) return;  // all held by graphs
  Entry& e = victim->second;
  // In stream order after the victim's last launch, wherever that ran.
  check(d_.cuStreamWaitEvent(stream, e.last_use, 0), "cuStreamWaitEvent");
  for (CUdeviceptr* p : {&e.partials, &e.counters}) {
    if (*p) check(d_.cuMemFreeAsync(*p, stream), "cuMemFreeAsync");
    *p = 0;
  }
  d_.cuEventDestroy(e.last_use);
  entries_.erase(victim);
}

// Growing frees the old buffers in stream order: only this stream used them.
void StreamWorkspaces::grow(Entry& e, CUstream stream, std::int64_t bytes, std::int64_t counter_bytes) {
  if (e.bytes < bytes) {
    if (e.partials) check(d_.cuMemFreeAsync(e.partials, stream), "cuMemFreeAsync");
    e.partials = 0, e.bytes = 0;
    check(d_.cuMemAllocAsync(&e.partials, size_t(bytes), stream), "cuMemAllocAsync");
    e.bytes = bytes;
  }
  if (e.counter_bytes < counter_bytes) {
    if (e.counters) check(d_.cuMemFreeAsync(e.counters, stream), "cuMemFreeAsync");
    e.counters = 0, e.counter_bytes = 0;
    check(d_.cuMemAllocAsync(&e.counters, size_t(counter_bytes), stream), "cuMemAllocAsync");
    check(d_.cuMemsetD8Async(e.counters, 0, size_t(counter_bytes), stream), "cuMemsetD8Async");
    e.counter_bytes = counter_bytes;
  }
}

WorkspaceLease StreamWorkspaces::acquire(CUstream stream, std::int64_t bytes, std::int64_t counter_bytes) {
  CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
  check(d_.cuStreamIsCapturing(stream, &capture), "cuStreamIsCapturing");
  const bool capturing = capture != CU_STREAM_CAPTURE_STATUS_NONE;
  const Key key = key_of(stream, capturing, bytes);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (capturing) throw capture_error(bytes);
    if (entries_.size() >= max_streams_) evict_one(stream);
    Entry e;
    check(d_.cuEventCreate(&e.last_use, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
    it = entries_.emplace(key, e).first;
  }
  Entry& e = it->second;
  e.handle = canonical(stream);
  e.tick = ++tick_;
  if (e.bytes < bytes || e.counter_bytes < counter_bytes) {
    if (capturing) throw capture_error(bytes);
    grow(e, stream, bytes, counter_bytes);
  }
  e.captured = e.captured || capturing;
  return {{e.counters, e.partials}, capturing ? nullptr : e.last_use};
}

void release_engine(const DriverApi& d, CUcontext ctx, StreamWorkspaces& workspaces,
                    const std::vector<CUlibrary>& libraries) noexcept {
  ContextScope scope(d, ctx, std::nothrow);
  workspaces.release_all();
  for (CUlibrary l : libraries) d.cuLibraryUnload(l);
}

}  // namespace pagedjit
