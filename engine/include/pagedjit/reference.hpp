// A CPU implementation of docs/contract.md's semantics in float64: the oracle the tests
// and tools compare the kernels with. Useful for users' own tests too.
#pragma once
#include <cstdint>
#include <vector>

#include "pagedjit/paged_attention.hpp"
#include "pagedjit/ragged_attention.hpp"

namespace pagedjit {

struct ReferenceOutputs {
  std::vector<int> seqs;       // the sequences computed, in order
  std::vector<double> output;  // [seqs.size(), q_len, num_heads, head_dim]
  std::vector<double> lse;     // [seqs.size(), q_len, num_heads], natural log; -inf for empty rows
};

// `host_args` is a call whose TensorViews point to host memory (same shapes,
// dtypes and strides as the device call; k_scale / v_scale too). `seqs`
// selects sequences (all when empty).
ReferenceOutputs reference_paged_attention(const PagedAttentionArgs& host_args, const PagedAttentionOptions& options,
                                           std::vector<int> seqs = {});

// append_kv on host memory: `host_args`'s views (caches included) point to
// host arrays laid out as on the device; the caches are written in place.
// The same rows are written as by the kernel, with the same bits.
void reference_append_kv(const AppendKvArgs& host_args);

// The ragged call (ragged_attention.hpp) with host views, query_start,
// context_lens, block_tables and seq_count included. `output` is
// [total_tokens, num_heads, head_dim] like the query and `lse`
// [total_tokens, num_heads]; `seqs` lists the sequences computed (the first
// *seq_count). Rows no computed sequence owns stay 0 with lse -inf.
// query_start is read as the kernels read it: each entry clamped into
// [0, total_tokens], a decreasing pair empty.
ReferenceOutputs reference_ragged_attention(const RaggedAttentionArgs& host_args, const PagedAttentionOptions& options);

// Rounds a float to the nearest value of `dtype` (fp16/bf16 round to nearest even).
float round_to_dtype(float x, DType dtype);
// Encodes/decodes one element of `dtype` to/from its bit pattern in memory.
void store_element(void* base, std::int64_t index, float x, DType dtype);
float load_element(const void* base, std::int64_t index, DType dtype);

}  // namespace pagedjit
