// Plans the prefill kernel (kernel_templates/paged_prefill.cuh) for a ragged
// call: long queries tiled over query blocks and key tiles. Pure host code,
// like the planner.
#pragma once
#include <cstdint>
#include <string>

#include "attention/planner.hpp"
#include "jit/kernel_spec.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/ragged_attention.hpp"
#include "pj_params.cuh"

namespace pagedjit::attention {

struct PrefillPlan {
  // Whether the prefill kernel takes this shape; if not, `why_not` says why
  // (the engine then uses another kernel).
  bool supported = false;
  std::string why_not;
  jit::KernelSpec spec;     // kind prefill
  int block_rows = 0;       // query rows per CTA: (token, query head) pairs of one KV head
  int grid[3] = {0, 0, 0};  // x: KV heads; y: query blocks of all sequences (an upper bound); z: 1
  int threads = 0;
  int smem_bytes = 0;  // dynamic shared memory (above 48 KiB: raise the kernel's limit first)
  LaunchInfo launch_info(const PagedAttentionOptions& options) const;  // what the call reports
};

// `shape`: a ragged call (total_tokens packed rows; q_len = the longest query).
// Options forcing kernel_config's tile_tokens, warps and stages (all three)
// pick the block shape: key tiles, warps (16 query rows each), pipeline depth.
PrefillPlan plan_prefill(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                         const std::string& arch);
// The same for the device's own target (jit::clamp_arch(device.arch())).
PrefillPlan plan_prefill(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device);

// The kernel's parameters for a validated ragged call and its prefill plan:
// rows addressed by (query_start[s] + i) * the token stride (the per-sequence
// strides are 0), query_start / seq_count / sinks passed through.
pj::DecodeParams prefill_params(const RaggedAttentionArgs& args, const PagedAttentionOptions& options,
                                const ProblemShape& shape, const PrefillPlan& plan);

}  // namespace pagedjit::attention
