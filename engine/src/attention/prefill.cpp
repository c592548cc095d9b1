#include "attention/prefill.hpp"

#include <fmt/format.h>

#include "attention/launch.hpp"
#include "attention/validate.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "pagedjit/errors.hpp"

namespace pagedjit::attention {
namespace {

// Keys per tile, warps (16 query rows each) and pipeline depth.
struct BlockShape {
  int keys, warps, stages;
};

// The accumulator of a warp's 16 rows lives in registers (head_dim / 2
// floats a lane), so wider heads take narrower key tiles. Blocks of 4 warps
// (64 rows): ptxas needs about 140 registers a thread at 64 dims and 220-250
// from 128 dims, so 8-warp blocks would hold one CTA an SM (or spill when
// bounded to two), while 4-warp blocks keep two or three CTAs an SM, one
// computing while another waits at a barrier. fp8 tiles are half the bytes:
// one stage more.
BlockShape default_shape(int head_dim, bool fp8) {
  if (head_dim <= 64) return {64, 4, 3};
  if (head_dim <= 128) return {64, 4, fp8 ? 3 : 2};
  return {32, 4, 2};
}

DType kv_dtype_of(const ProblemShape& s) {
  return is_fp8(s.kv_dtype) ? s.kv_dtype : s.dtype;
}

int smem_of(const ProblemShape& s, const BlockShape& b) {
  return pj::prefill_smem(s.head_dim, 2, int(dtype_size(kv_dtype_of(s))), pj::kPrefillWarpRows * b.warps, b.keys,
                          b.stages)
      .total;
}

// Why the kernel cannot take this shape ("" when it can).
std::string unsupported_reason(const ProblemShape& s, const DeviceInfo& d) {
  if (s.dtype != DType::f16 && s.dtype != DType::bf16)
    return fmt::format("the prefill kernel takes fp16 or bf16 queries, not {}", dtype_name(s.dtype));
  const DType kv = kv_dtype_of(s);  // (a cache that is not fp8 has the query's dtype: validated)
  if (is_fp8(kv) && d.cc_major * 10 + d.cc_minor < 89)
    return fmt::format("{} caches need an sm_89+ GPU", dtype_name(kv));
  if (s.out_dtype != DType::f32 && s.out_dtype != DType::f16 && s.out_dtype != DType::bf16)
    return fmt::format("a {} output", dtype_name(s.out_dtype));
  if (s.head_dim <= 0 || s.head_dim % 16 != 0 || s.head_dim > pj::kPrefillMaxHeadDim)
    return fmt::format("head_dim {} (the prefill kernel takes multiples of 16 up to {})", s.head_dim,
                       pj::kPrefillMaxHeadDim);
  if (s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads != 0)
    return fmt::format("{} query heads over {} KV heads", s.num_heads, s.num_kv_heads);
  // Row indices (tokens x heads) are 32-bit in the kernel.
  if (s.total_tokens < 0 || s.total_tokens * s.num_heads > 0x7fffffff)
    return fmt::format("{} tokens x {} heads: more query rows than 2^31", s.total_tokens, s.num_heads);
  return "";
}

jit::KernelSpec prefill_spec(const ProblemShape& s, const BlockShape& b, const std::string& arch) {
  jit::KernelSpec k;
  k.kind = jit::KernelKind::prefill;
  k.q_dtype = s.dtype;
  k.kv_dtype = kv_dtype_of(s);
  k.out_dtype = s.out_dtype;
  k.head_dim = s.head_dim;
  k.v_dims = s.head_dim;
  k.tile_tokens = b.keys;
  k.warps = b.warps;
  k.stages = b.stages;
  k.compute = jit::Compute::mma;
  k.arch = arch;
  return k;
}

}  // namespace

PrefillPlan plan_prefill(const ProblemShape& s, const PagedAttentionOptions& o, const DeviceInfo& d,
                         const std::string& arch) {
  PrefillPlan plan;
  plan.why_not = unsupported_reason(s, d);
  if (!plan.why_not.empty()) return plan;
  const KernelConfig forced = o.kernel_config.value_or(KernelConfig{});
  const bool is_forced = forced.tile_tokens > 0 && forced.warps > 0 && forced.stages > 0;
  BlockShape b = is_forced ? BlockShape{forced.tile_tokens, forced.warps, forced.stages}
                           : default_shape(s.head_dim, is_fp8(s.kv_dtype));
  plan.spec = prefill_spec(s, b, arch);
  plan.spec.check();  // a forced shape the kernel cannot take is the caller's error
  while (!is_forced && b.stages > 2 && smem_of(s, b) > d.max_smem_per_block) --b.stages;
  plan.smem_bytes = smem_of(s, b);
  if (plan.smem_bytes > d.max_smem_per_block) {
    plan.why_not =
        fmt::format("{} bytes of shared memory; {} offers {}", plan.smem_bytes, d.name, d.max_smem_per_block);
    return plan;
  }
  plan.spec = prefill_spec(s, b, arch);
  plan.block_rows = pj::kPrefillWarpRows * b.warps;
  plan.threads = 32 * b.warps;
  const long long blocks = pj::prefill_block_bound(s.total_tokens, s.group(), plan.block_rows, s.num_seqs);
  if (blocks > 65535) {
    plan.why_not =
        fmt::format("{} query blocks of {} rows: more than a grid's y dimension holds", blocks, plan.block_rows);
    return plan;
  }
  plan.grid[0] = s.num_kv_heads;
  plan.grid[1] = int(blocks);
  plan.grid[2] = 1;
  plan.supported = true;
  return plan;
}

LaunchInfo PrefillPlan::launch_info(const PagedAttentionOptions& options) const {
  LaunchInfo info;
  info.decode_kernel = spec.name_expression();
  info.compute = "mma";
  info.source = options.kernel_config && options.kernel_config->tile_tokens ? "user" : "heuristic";
  info.num_splits = 1;
  info.tile_tokens = spec.tile_tokens, info.warps = spec.warps, info.stages = spec.stages;
  info.heads_per_cta = block_rows;
  info.head_chunks = 0;  // (blocks are found on the device)
  info.v_dims = spec.head_dim;
  for (int i = 0; i < 3; ++i) info.grid[i] = grid[i];
  info.threads = threads;
  info.smem_bytes = smem_bytes;
  return info;
}

PrefillPlan plan_prefill(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device) {
  return plan_prefill(shape, options, device, jit::clamp_arch(device.arch()));
}

pj::DecodeParams prefill_params(const RaggedAttentionArgs& a, const PagedAttentionOptions& o, const ProblemShape& s,
                                const PrefillPlan& prefill) {
  // The cache, table, scales and options read as in a batched call; the rows
  // are then re-addressed through query_start.
  pj::DecodeParams p = decode_params(paged_view(a), o, s, Plan{}, 0, 0);
  apply_ragged(p, a, o, s);
  p.rows_per_cta = prefill.block_rows;
  p.row_chunks = 0;
  p.dv_chunks = 1;
  p.num_splits = 1;
  p.chunk_tokens = 0;
  p.work_items = 0;
  return p;
}

}  // namespace pagedjit::attention
