// The arguments, options and result description of paged_attention; docs/contract.md
// explains every field and the semantics.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "pagedjit/tensor.hpp"

namespace pagedjit {

struct PagedAttentionArgs {
  // [num_seqs, num_heads, head_dim], or [num_seqs, q_len, num_heads, head_dim]
  // for 1..8 query tokens per sequence (speculative decoding): token i sees
  // the context up to position context_len - q_len + i (causal).
  TensorView query;
  TensorView key_cache;     // 4-D, see `layout`; the query's dtype, or e4m3 / e5m2
  TensorView value_cache;   // same shape and dtype as key_cache
  TensorView context_lens;  // [num_seqs] int32, device
  TensorView block_tables;  // [num_seqs, max_blocks] int32, device
  TensorView output;        // the query's shape
  CacheLayout layout = CacheLayout::blocks_heads;
  // The query's leading dims ([num_seqs, num_heads] or [num_seqs, q_len,
  // num_heads]) fp32, written when options.return_lse.
  TensorView lse;
  // fp8 caches only: fp32 device scales, [1] (per tensor) or [num_kv_heads];
  // the cache holds value / scale. Absent: 1.
  TensorView k_scale, v_scale;
  // Optional [num_heads] fp32: a logit per query head that joins each softmax
  // denominator only (out = sum e^l v / (e^sink + sum e^l)); lse then counts it too.
  TensorView sinks;
  // Optional scratch for split partials (Engine::workspace_bytes tells the
  // size). Zero-fill it before its first use, and again before using it for a
  // call of another shape: its first bytes count finished partitions, which
  // each call leaves at zero, but another shape puts them elsewhere.
  // Without it the engine keeps a zeroed buffer per stream, grown outside
  // stream capture; pass one to capture calls in CUDA graphs freely.
  void* workspace = nullptr;
  std::int64_t workspace_bytes = 0;
};

// Launch parameters the tuner (and the curious) may force; 0 = engine chooses.
struct KernelConfig {
  int tile_tokens = 0;   // tokens per pipeline stage; a multiple of 16 * warps (or of 16, where warps beyond
                         // tile_tokens / 16 split the output dims: tensor cores only)
  int warps = 0;         // 1..8
  int stages = 0;        // 2..8
  int chunk_tokens = 0;  // > 0: fixed partition length (splits = ceil(max_context_len / chunk))
  int v_dims = 0;        // output dims per CTA (a multiple of 16 <= head_dim, at most 256)
  // Device schedule (a batch of two or more sequences whose partitions the
  // engine chooses): work items per CTA slot of the GPU, 1..16. More items
  // balance ragged lengths better and cost more partial merges.
  int work_waves = 0;
};

// Launch values compiled into the decode kernel as constants
// (EngineOptions::specialize), each one kernel per distinct value instead of
// one for all; results are bitwise the same either way. For measuring what
// the constants buy (docs/performance.md, "Specialization").
struct KernelSpecialization {
  bool page = false;    // log2(page size)
  bool group = false;   // query heads per KV head
  bool splits = false;  // partitions per sequence, where the host schedule fixes them (not the device schedule)
  bool any() const { return page || group || splits; }
};

constexpr float kDefaultMaskValue = -2.381976426469702e38f;

// (Engine: an option that changes the plan must join attention::PlanKey,
// which decides when a call may reuse an earlier call's plan.)
struct PagedAttentionOptions {
  std::optional<float> attn_scale;              // default 1/sqrt(head_dim)
  std::optional<std::int64_t> max_context_len;  // host hint sizing the split grid
  int num_splits = 0;                           // 0: engine chooses; 1: none; n: n partitions
  float mask_value = kDefaultMaskValue;         // logit of masked positions (they get zero weight)
  std::optional<float> attn_logits_soft_cap;    // cap * tanh(logits / cap)
  std::optional<std::int64_t> sliding_window;   // attend the last W tokens
  std::optional<int> pages_per_compute_block;   // tuning override
  std::optional<std::string> megacore_mode;     // TPU only: any value is NotSupported
  bool inline_seq_dim = true;                   // false is NotSupported
  bool return_lse = false;                      // write args.lse
  // Partitions of a fixed length whatever else is in the batch, so a
  // sequence's output is bitwise the same in any batch (given max_context_len
  // absent or >= its length).
  bool batch_invariant = false;
  std::optional<KernelConfig> kernel_config;  // tuning override: tile shape, pipeline depth, partition length
};

// Two attention results over disjoint parts of the same contexts (a shared
// prefix and each sequence's own suffix, say), each with its natural-log
// sum-exp as paged_attention's `lse` gives it, for Engine::merge_attention_states.
// Leading dims are rows (any shape, e.g. [num_seqs, num_heads]); the last is
// head_dim (a multiple of 4).
struct MergeStatesArgs {
  TensorView out_a, lse_a;  // [rows..., head_dim] and fp32 [rows...]
  TensorView out_b, lse_b;  // the same shapes, out_a's dtype
  TensorView out;           // the same shape, any float dtype; may be out_a or out_b (in place)
  TensorView lse;           // optional (data null: not written): log(exp(lse_a) + exp(lse_b))
};

// Everything about a call except its pointers: what planning and compiling need.
struct ProblemShape {
  int num_seqs = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int page_size = 0, max_blocks = 0, num_blocks = 0;
  DType dtype = DType::bf16;     // query
  DType kv_dtype = DType::bf16;  // KV cache: the query's dtype, or e4m3 / e5m2
  DType out_dtype = DType::bf16;
  CacheLayout layout = CacheLayout::blocks_heads;
  std::int64_t max_context_len = 0;  // the hint, or max_blocks * page_size
  int q_len = 1;                     // query tokens per sequence (1..8); ragged: the longest (max_query_len)
  // ragged_paged_attention: query rows packed over the sequences (query_start),
  // total_tokens of them.
  bool ragged = false;
  std::int64_t total_tokens = 0;
  int group() const { return num_heads / num_kv_heads; }
};

// How a call is (or would be) executed: the plan the engine chose.
struct LaunchInfo {
  std::string decode_kernel;  // NVRTC name expression
  std::string compute;        // "mma" (tensor cores) or "simt"
  std::string source;         // "heuristic", "user" (options forced it), "batch-invariant", "profile"
  std::string profile;        // with source "profile": the level and file it came from
  int num_splits = 1;         // partitions per sequence; 0 with the device schedule (planned per call on the GPU)
  int chunk_tokens = 0;       // 0: each sequence split evenly
  int work_items = 0;         // device schedule: partitions per KV-head column, balanced over the lengths (grid y
                              // = sequences + this); 0: the host schedule (grid y = sequence, z = partition)
  int work_waves = 0;         // device schedule: work items per CTA slot (KernelConfig::work_waves)
  int tile_tokens = 0, warps = 0, stages = 0;
  // Query rows (query heads x query tokens of a KV head, not heads alone) per
  // CTA, and the CTAs of one KV head that share them out.
  int heads_per_cta = 0, head_chunks = 0;
  int v_dims = 0, dv_chunks = 1;  // output dims per CTA; CTAs per head chunk
  int grid[3] = {0, 0, 0};
  int cluster = 1;  // > 1: the partitions of a sequence form a cluster of this many CTAs (grid z)
  int threads = 0;
  int smem_bytes = 0;
  std::int64_t workspace_bytes = 0;
  std::string describe() const;  // one line for logs and the bench table
};

}  // namespace pagedjit
