// A planning-only problem description for the CPU tests (no pointers).
#pragma once
#include "pagedjit/paged_attention.hpp"

namespace pjtest {

// `seqs` sequences of up to `ctx` tokens in 16-token pages, one table row each.
inline pagedjit::ProblemShape test_shape(int seqs, int heads, int kv_heads, int ctx, int head_dim = 128,
                                         pagedjit::DType dt = pagedjit::DType::bf16) {
  pagedjit::ProblemShape s;
  s.num_seqs = seqs;
  s.num_heads = heads;
  s.num_kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.page_size = 16;
  s.max_blocks = (ctx + 15) / 16;
  s.num_blocks = seqs * s.max_blocks;
  s.dtype = s.out_dtype = s.kv_dtype = dt;
  s.max_context_len = ctx;
  return s;
}

}  // namespace pjtest
