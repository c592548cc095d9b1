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
  // sm_90+: launch the decode kernel with programmatic stream serialization,
  // so its CTAs start during the previous kernel's tail and wait in the kernel
  // (griddepcontrol.wait, before any memory access) for it to finish. Results
  // are the same either way; false: a plain launch.
  bool programmatic_launch = true;
  // sm_90+: a call split into 2..8 partitions launches each sequence's
  // partitions as one thread-block cluster, merged through distributed
  // shared memory (no workspace). false: fp32 partials in the workspace,
  // merged by the last partition to finish. Results are bitwise the same.
  bool cluster_merge = true;
  // A batch of two or more sequences whose partitions the engine chooses is
  // cut into work items by the decode kernel itself, from the context lengths
  // on the device: balanced for ragged lengths, still one launch with a grid
  // fixed by the shapes (graph-safe), the same bits for the same inputs.
  // false: partitions from the shapes alone, as the host plans them.
  bool device_schedule = true;
};

// Two attention results over disjoint parts of the same contexts (a shared
// prefix and each sequence's own suffix, say), each with its natural-log
// sum-exp as paged_attention's `lse` gives it. Leading dims are rows (any
// shape, e.g. [num_seqs, num_heads]); the last is head_dim (a multiple of 4).
struct MergeStatesArgs {
  TensorView out_a, lse_a;  // [rows..., head_dim] and fp32 [rows...]
  TensorView out_b, lse_b;  // the same shapes, out_a's dtype
  TensorView out;           // the same shape, any float dtype; may be out_a or out_b (in place)
  TensorView lse;           // optional (data null: not written): log(exp(lse_a) + exp(lse_b))
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

  // out = (e^lse_a * out_a + e^lse_b * out_b) / (e^lse_a + e^lse_b): the
  // attention over both parts (cascade / prefix-sharing attention). A part
  // with lse -inf (no tokens) has weight 0; both empty gives zeros and -inf.
  // Asynchronous; graph-capturable (no allocation, no synchronization).
  void merge_attention_states(const MergeStatesArgs& args, CUstream stream = nullptr);

  // The plan paged_attention would use, without compiling or launching.
  LaunchInfo plan(const PagedAttentionArgs& args, const PagedAttentionOptions& options = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Validates a call's arguments (shapes, dtypes, strides, alignment, options)
// and returns its pointer-free description. Throws InvalidArgument or NotSupported.
ProblemShape validate_call(const PagedAttentionArgs& args, const PagedAttentionOptions& options);

// Plans a problem for a device without one being present. `cluster_merge`:
// as EngineOptions::cluster_merge of the engine that would run it (the merge
// mode is part of the kernel).
LaunchInfo plan_problem(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                        bool cluster_merge = true, bool device_schedule = true);

// Compiles (or finds in the cache) every kernel an Engine with default
// options launches for this problem on `device`: planned from the tuned
// profiles for that GPU, then the heuristic (plan_problem uses the heuristic
// only). Works without a GPU. Returns the plan. An engine made with
// EngineOptions::cluster_merge = false needs `cluster_merge` false here.
LaunchInfo precompile(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                      bool cluster_merge = true, bool device_schedule = true);

}  // namespace pagedjit
