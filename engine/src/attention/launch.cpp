#include "attention/launch.hpp"

#include <cmath>

#include "attention/cache_params.hpp"
#include "attention/validate.hpp"

namespace pagedjit::attention {

pj::DecodeParams decode_params(const PagedAttentionArgs& a, const PagedAttentionOptions& o, const ProblemShape& s,
                               const Plan& plan, CUdeviceptr counters, CUdeviceptr partials) {
  pj::DecodeParams p{};
  // Rank 3 is rank 4 with q_len 1.
  const bool multi = a.query.rank == 4;
  p.q = a.query.data;
  p.q_stride_seq = a.query.strides[0];
  p.q_stride_tok = multi ? a.query.strides[1] : 0;
  p.q_stride_head = a.query.strides[multi ? 2 : 1];
  set_paged_cache(p, {a.key_cache, a.value_cache, a.context_lens, a.block_tables, a.k_scale, a.v_scale, s.layout,
                      s.max_blocks, s.num_blocks});
  p.out = a.output.data;
  p.o_stride_seq = a.output.strides[0];
  p.o_stride_tok = multi ? a.output.strides[1] : 0;
  p.o_stride_head = a.output.strides[multi ? 2 : 1];
  p.lse = o.return_lse ? static_cast<float*>(a.lse.data) : nullptr;
  p.lse_stride_seq = o.return_lse ? a.lse.strides[0] : 0;
  p.lse_stride_tok = o.return_lse && multi ? a.lse.strides[1] : 0;
  if (plan.info.num_splits > 1 || plan.info.work_items > 0) {
    // `partials` is the workspace itself or a buffer laid out like it.
    p.part_o = reinterpret_cast<float*>(partials + plan.part_o_offset);
    p.part_lse = reinterpret_cast<float*>(partials + plan.part_lse_offset);
    p.counters = reinterpret_cast<unsigned*>(counters);
  }
  p.num_seqs = s.num_seqs;
  p.work_items = plan.info.work_items;  // the launch may lower it to the kernel's real occupancy
  p.num_heads = s.num_heads;
  p.group = s.group();
  p.q_len = s.q_len;
  p.rows_per_cta = plan.info.heads_per_cta;  // (query rows)
  p.row_chunks = plan.info.head_chunks;
  p.dv_chunks = plan.info.dv_chunks;
  p.page_shift = page_shift_of(s.page_size);
  p.num_splits = plan.info.num_splits;
  p.chunk_tokens = plan.info.chunk_tokens;
  p.window = o.sliding_window ? int(*o.sliding_window) : 0;
  p.scale = o.attn_scale ? *o.attn_scale : float(1.0 / std::sqrt(double(s.head_dim)));
  p.soft_cap = o.attn_logits_soft_cap ? *o.attn_logits_soft_cap : 0.f;
  p.sinks = static_cast<const float*>(a.sinks.data);
  return p;
}

void apply_ragged(pj::DecodeParams& p, const RaggedAttentionArgs& r, const PagedAttentionOptions& o,
                  const ProblemShape& s) {
  // Rows are packed: a sequence's token i is row query_start[s] + i.
  p.q_stride_seq = 0, p.q_stride_tok = r.query.strides[0];
  p.o_stride_seq = 0, p.o_stride_tok = r.output.strides[0];
  p.lse_stride_seq = 0;
  p.lse_stride_tok = o.return_lse ? r.lse.strides[0] : 0;
  p.query_start = static_cast<const int*>(r.query_start.data);
  p.seq_count = static_cast<const int*>(r.seq_count.data);
  p.total_tokens = int(s.total_tokens);
}

}  // namespace pagedjit::attention
