// Device scratch the engine keeps per CUDA stream, for split calls that bring
// no workspace of their own: fp32 partials, and merge counters in a buffer of
// their own (calls of other shapes must never see partial data there).
//
// Keyed by the stream's driver id (cuStreamGetId), unique for the life of the
// process, not by its handle: a destroyed stream's handle may come back for a
// new stream while the old one's kernels still run, and CU_STREAM_PER_THREAD
// names a different stream on each thread. At most `max_streams` are kept;
// the least recently used is freed in stream order after its last launch.
#pragma once
#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "pagedjit/driver.hpp"

namespace pagedjit {

struct Scratch {
  CUdeviceptr counters = 0, partials = 0;
};

// What a launch may use, and the event to record on its stream once the
// launch is enqueued (null while the stream is being captured: an event
// recorded in a capture cannot be waited on outside it).
struct WorkspaceLease {
  Scratch scratch;
  CUevent done = nullptr;
};

class StreamWorkspaces {
 public:
  static constexpr std::size_t kMaxStreams = 64;

  explicit StreamWorkspaces(const DriverApi& d, std::size_t max_streams = kMaxStreams)
      : d_(d), max_streams_(max_streams) {}
  ~StreamWorkspaces() { release_all(); }
  StreamWorkspaces(const StreamWorkspaces&) = delete;
  StreamWorkspaces& operator=(const StreamWorkspaces&) = delete;

  // Scratch of at least `bytes` for partials and `counter_bytes` of zeroed
  // counters for a launch on `stream`. Allocates only outside stream capture:
  // a captured stream must have had a call before capture.
  WorkspaceLease acquire(CUstream stream, std::int64_t bytes, std::int64_t counter_bytes);

  // Frees every buffer in stream order after its last launch, waiting for
  // nothing on the host; the context must be current. Never throws (at
  // process exit the driver may be deinitialized: its memory is gone then).
  void release_all() noexcept;

  std::size_t size() const { return entries_.size(); }

 private:
  struct Key {
    unsigned long long stream_id = 0;
    std::uint64_t thread = 0;  // CU_STREAM_PER_THREAD only: never reused, unlike std::thread::id
    bool operator==(const Key& o) const { return stream_id == o.stream_id && thread == o.thread; }
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const {
      return std::hash<unsigned long long>()(k.stream_id) ^ (std::hash<std::uint64_t>()(k.thread) << 1);
    }
  };
  struct Entry {
    CUdeviceptr partials = 0, counters = 0;
    std::int64_t bytes = 0, counter_bytes = 0;
    CUevent last_use = nullptr;  // recorded after each launch outside capture
    CUstream handle = nullptr;   // the handle last seen for this id
    std::uint64_t tick = 0;      // last use, for eviction
    bool captured = false;       // a graph may hold it: never evicted
  };

  Key key_of(CUstream stream, bool capturing, std::int64_t bytes) const;
  void evict_one(CUstream stream);
  void grow(Entry& e, CUstream stream, std::int64_t bytes, std::int64_t counter_bytes);

  const DriverApi& d_;
  std::size_t max_streams_;
  std::unordered_map<Key, Entry, KeyHash> entries_;
  std::uint64_t tick_ = 0;
};

// An engine's teardown, with its context current: frees the workspaces and
// unloads the libraries, synchronizing nothing (other users' streams keep
// running). Never throws: at process exit the driver may be deinitialized.
void release_engine(const DriverApi& d, CUcontext ctx, StreamWorkspaces& workspaces,
                    const std::vector<CUlibrary>& libraries) noexcept;

}  // namespace pagedjit
