// The paged cache as every kernel reads it, filled into any kernel's
// parameter struct that names these fields alike (pj::DecodeParams,
// pj::AppendParams): pointers, (page, head, slot) strides whatever the
// layout, the block table and the fp8 scales.
#pragma once
#include "attention/validate.hpp"
#include "pagedjit/tensor.hpp"

namespace pagedjit::attention {

struct PagedCache {
  const TensorView &key_cache, &value_cache, &context_lens, &block_tables, &k_scale, &v_scale;
  CacheLayout layout;
  int max_blocks, num_blocks;
};

template <class P>
void set_paged_cache(P& p, const PagedCache& c) {
  // The layouts differ only in which axis holds blocks, heads and slots.
  const CacheAxes axes = cache_axes(c.layout);
  p.k = c.key_cache.data;
  p.v = c.value_cache.data;
  p.k_stride_page = unsigned(c.key_cache.strides[axes.block_axis]);  // < 2^31: validated
  p.k_stride_head = c.key_cache.strides[axes.head_axis];
  p.k_stride_slot = unsigned(c.key_cache.strides[axes.slot_axis]);
  p.v_stride_page = unsigned(c.value_cache.strides[axes.block_axis]);
  p.v_stride_head = c.value_cache.strides[axes.head_axis];
  p.v_stride_slot = unsigned(c.value_cache.strides[axes.slot_axis]);
  p.context_lens = static_cast<const int*>(c.context_lens.data);
  p.block_tables = static_cast<const int*>(c.block_tables.data);
  p.bt_stride = c.block_tables.strides[0];
  p.max_blocks = c.max_blocks;
  p.num_blocks = c.num_blocks;
  p.k_scale = static_cast<const float*>(c.k_scale.data);
  p.v_scale = static_cast<const float*>(c.v_scale.data);
  p.k_scale_stride = c.k_scale.rank == 1 && c.k_scale.shape[0] > 1 ? 1 : 0;
  p.v_scale_stride = c.v_scale.rank == 1 && c.v_scale.shape[0] > 1 ? 1 : 0;
}

}  // namespace pagedjit::attention
