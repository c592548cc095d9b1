// Splitting a paged-attention problem by heads (tensor parallelism). Host
// code only: pagedjit-tp uses it, and the CPU tests check it against the
// reference without a GPU.
//
// Shard s of N holds query heads [s*H/N, (s+1)*H/N) and KV heads
// [s*KH/N, (s+1)*KH/N) -- whole GQA groups -- with the same block tables and
// context lengths and its own slice of the paged KV cache. It writes its
// output head-major ([heads, seqs, head_dim], through the output view's
// strides) into its slice of a full-size buffer: the shards' slices, laid end
// to end, are the whole output, head-major, so gathering is concatenating.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "pagedjit/paged_attention.hpp"
#include "pagedjit/testing.hpp"

namespace pjtp {

// Throws std::invalid_argument unless the problem can be split into `shards`:
// blocks_heads layout, no padding, and `shards` dividing the KV heads.
void check_shardable(const pagedjit::testing::ProblemConfig& cfg, int shards);

// Shard s's query and KV cache, in storage format: query [seqs, H/N, head_dim],
// caches [num_blocks, KH/N, page_size, head_dim].
struct ShardData {
  std::vector<std::uint8_t> q, k, v;
};
ShardData slice_shard(const pagedjit::testing::HostProblem& host, int shards, int s);

// Bytes of the whole output, and of one shard's slice of it.
std::size_t output_bytes(const pagedjit::testing::ProblemConfig& cfg);
std::size_t slice_bytes(const pagedjit::testing::ProblemConfig& cfg, int shards);

// Shard s's call: its query and caches at q, k, v (as slice_shard lays them
// out), the problem's context lengths and block tables at lens and table, and
// its output in its slice of the head-major buffer at `output`.
pagedjit::PagedAttentionArgs shard_args(const pagedjit::testing::ProblemConfig& cfg, std::int64_t num_blocks,
                                        int shards, int s, void* q, void* k, void* v, void* lens, void* table,
                                        void* output);

// A head-major output ([heads, seqs, head_dim], storage bytes) as floats in
// the order of the reference and of an unsharded call: [seqs, heads, head_dim].
std::vector<float> head_major_to_seq_major(const std::vector<std::uint8_t>& head_major,
                                           const pagedjit::testing::ProblemConfig& cfg);

}  // namespace pjtp
