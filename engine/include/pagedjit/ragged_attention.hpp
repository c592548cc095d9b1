// The arguments of ragged_paged_attention (one call for a serving step that
// mixes decodes, draft verifications and prefill chunks) and of append_kv
// (writing a step's new keys and values into their pages). docs/contract.md
// explains every field and the semantics.
#pragma once
#include <cstdint>

#include "pagedjit/paged_attention.hpp"
#include "pagedjit/tensor.hpp"

namespace pagedjit {

struct RaggedAttentionArgs {
  // [total_tokens, num_heads, head_dim]: every sequence's new tokens, packed
  // in sequence order.
  TensorView query;
  // [num_seqs + 1] int32, device: sequence s owns query rows
  // query_start[s] .. query_start[s + 1] (q_len(s), 0 allowed).
  TensorView query_start;
  TensorView key_cache;    // 4-D, see `layout`; the query's dtype, or e4m3 / e5m2
  TensorView value_cache;  // same shape and dtype as key_cache
  // [num_seqs] int32, device: the tokens in the cache *including* this
  // step's q_len(s). Query token i of s is at position
  // context_len - q_len + i and sees keys up to it (causal).
  TensorView context_lens;
  TensorView block_tables;  // [num_seqs, max_blocks] int32, device
  TensorView output;        // the query's shape
  CacheLayout layout = CacheLayout::blocks_heads;
  TensorView lse;               // [total_tokens, num_heads] fp32, written when options.return_lse
  TensorView k_scale, v_scale;  // fp8 caches: as in PagedAttentionArgs
  // Optional [num_heads] fp32: a logit per query head that joins each softmax
  // denominator only (out = sum e^l v / (e^sink + sum e^l)).
  TensorView sinks;
  // Optional [1] int32, device: how many of the num_seqs sequences this step
  // has; later ones are skipped (their output rows are not written). Absent:
  // all of them. Lets one captured graph serve steps of fewer sequences.
  TensorView seq_count;
  // Host-side bound, never read back from the device: no sequence has more
  // query tokens (0: total_tokens). It picks the kernel and sizes the grid;
  // the decode kernel computes only the first max_query_len tokens of a
  // longer sequence (the validation mode reports one).
  std::int64_t max_query_len = 0;
  // Optional scratch, as in PagedAttentionArgs (Engine::workspace_bytes).
  void* workspace = nullptr;
  std::int64_t workspace_bytes = 0;
};

struct AppendKvArgs {
  // [total_tokens, num_kv_heads, head_dim], fp32 / fp16 / bf16 (the cache's
  // dtype, or any of them for an fp8 cache): packed like a ragged query.
  TensorView keys, values;
  TensorView query_start;   // [num_seqs + 1] int32, device (RaggedAttentionArgs)
  TensorView context_lens;  // [num_seqs] int32, device: including the new tokens
  TensorView block_tables;  // [num_seqs, max_blocks] int32, device
  TensorView key_cache, value_cache;
  CacheLayout layout = CacheLayout::blocks_heads;
  // fp8 caches: the cache receives value / scale, saturated to the format's
  // largest finite value. Absent: 1.
  TensorView k_scale, v_scale;
  TensorView seq_count;  // optional, as in RaggedAttentionArgs
};

}  // namespace pagedjit
