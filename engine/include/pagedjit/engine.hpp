// The engine: bound to one device, it validates a call, plans it, compiles
// (or fetches) the specialized kernels and launches them on the caller's stream.
#pragma once
#include <cuda.h>

#include <memory>
#include <optional>
#include <string>

#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/ragged_attention.hpp"

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
  // Launch values compiled into the decode kernel (page size, GQA group,
  // split count): more kernels to compile, the same results. Default: none.
  KernelSpecialization specialize;
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

  // Attention for a step of packed queries of any lengths (decodes, draft
  // verifications, prefill chunks), causal within each sequence. Every
  // option of paged_attention applies. Asynchronous; reads no device data on
  // the host, so one captured graph serves any mix of the same shapes.
  LaunchInfo ragged_paged_attention(const RaggedAttentionArgs& args, const PagedAttentionOptions& options = {},
                                    CUstream stream = nullptr);
  std::int64_t workspace_bytes(const RaggedAttentionArgs& args, const PagedAttentionOptions& options = {}) const;
  LaunchInfo plan(const RaggedAttentionArgs& args, const PagedAttentionOptions& options = {}) const;

  // Writes each sequence's new keys and values into their pages (positions
  // context_len - q_len .. context_len - 1), converting to the cache's dtype.
  // One launch, no synchronization; graph-capturable.
  void append_kv(const AppendKvArgs& args, CUstream stream = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pagedjit
