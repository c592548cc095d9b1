// The rules a call must satisfy before anything is launched (validate.cpp).
#pragma once
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/ragged_attention.hpp"

namespace pagedjit {

// Where a paged cache of a layout keeps what (the layouts differ only in the
// order of their first three axes; head_dim is last).
struct CacheAxes {
  int block_axis, head_axis, slot_axis;
  const char* dims;  // the shape in words
};

constexpr CacheAxes cache_axes(CacheLayout layout) {
  return layout == CacheLayout::heads_blocks    ? CacheAxes{1, 0, 2, "[num_kv_heads, num_blocks, page_size, head_dim]"}
         : layout == CacheLayout::blocks_tokens ? CacheAxes{0, 2, 1, "[num_blocks, page_size, num_kv_heads, head_dim]"}
                                                : CacheAxes{0, 1, 2, "[num_blocks, num_kv_heads, page_size, head_dim]"};
}

// Validates a call's arguments (shapes, dtypes, strides, alignment, options)
// and returns its pointer-free description. Throws InvalidArgument or NotSupported.
ProblemShape validate_call(const PagedAttentionArgs& args, const PagedAttentionOptions& options);
// The same for a ragged call; the shape has `ragged` set, q_len = the longest
// query (the max_query_len hint, else total_tokens) and total_tokens.
ProblemShape validate_ragged(const RaggedAttentionArgs& args, const PagedAttentionOptions& options);
// The ragged call seen as a decode call: the paged arguments it shares (its
// query and output stay [total_tokens, num_heads, head_dim]).
PagedAttentionArgs paged_view(const RaggedAttentionArgs& args);

}  // namespace pagedjit
