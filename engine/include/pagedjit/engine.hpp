// The engine: bound to one device, it validates a call, plans it, compiles
// (or fetches) the specialized kernels and launches them on the caller's stream.
#pragma once
#include <cuda.h>

#include <memory>
#include <optional>
#include <string>

#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"

namespace pagedjit {

struct EngineOptions {
  // Check device data (context_lens, block tables) before each launch and
  // throw DeviceDataError naming the first bad sequence. Synchronizes: debug only.
  bool validate_device_data = false;
  // Tuned launch configurations: files in $PAGEDJIT_PROFILE_PATH, then the
  // shipped profile of this GPU model, then one of its architecture, then the
  // built-in heuristic. false: the heuristic only.
  bool use_profiles = true;
};

class Engine {
 public:
  // Binds to device `ordinal` (its primary context), and makes that context
  // current on the calling thread if the thread has none. Calls push the
  // engine's context when another one is current, and restore it after.
  // Throws DriverError when there is no driver or no such device.
  explicit Engine(int ordinal = 0, EngineOptions options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const DeviceInfo& device() const;

  // Runs paged attention on `stream`. Asynchronous: returns once the kernels
  // are enqueued. Throws InvalidArgument / NotSupported before any launch.
  LaunchInfo paged_attention(const PagedAttentionArgs& args, const PagedAttentionOptions& options = {},
                             CUstream stream = nullptr);

  // Scratch bytes a call needs in PagedAttentionArgs::workspace (0: none).
  std::int64_t workspace_bytes(const PagedAttentionArgs& args, const PagedAttentionOptions& options = {}) const;

  // The plan paged_attention would use, without compiling or launching.
  LaunchInfo plan(const PagedAttentionArgs& args, const PagedAttentionOptions& options = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Validates a call's arguments (shapes, dtypes, strides, alignment, options)
// and returns its pointer-free description. Throws InvalidArgument or NotSupported.
ProblemShape validate_call(const PagedAttentionArgs& args, const PagedAttentionOptions& options);

// Plans a problem for a device without one being present.
LaunchInfo plan_problem(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device);

// Compiles (or finds in the cache) every kernel `plan_problem` picks for this
// problem on `device`; works without a GPU. Returns the plan.
LaunchInfo precompile(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device);

}  // namespace pagedjit
