// append_kv's semantics (docs/contract.md) on the CPU.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <tuple>

#include "attention/append.hpp"
#include "attention/validate.hpp"
#include "pagedjit/reference.hpp"

namespace pagedjit {

void reference_append_kv(const AppendKvArgs& a) {
  const attention::AppendShape s = attention::validate_append(a);
  const CacheAxes axes = cache_axes(s.layout);
  const auto* starts = static_cast<const std::int32_t*>(a.query_start.data);
  const auto* lens = static_cast<const std::int32_t*>(a.context_lens.data);
  const auto* table = static_cast<const std::int32_t*>(a.block_tables.data);
  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  const std::size_t elem = dtype_size(s.kv_dtype);
  int count = s.num_seqs;
  if (a.seq_count.data) count = std::clamp(*static_cast<const std::int32_t*>(a.seq_count.data), 0, s.num_seqs);
  auto start = [&](int i) { return std::clamp<std::int64_t>(starts[i], 0, s.total_tokens); };
  auto scale_of = [&](const TensorView& t, int h) {
    return t.data ? static_cast<const float*>(t.data)[t.shape[0] > 1 ? h : 0] : 1.f;
  };
  for (std::int64_t row = 0; row < s.total_tokens; ++row) {
    // The kernel's binary search, step for step: for sorted starts, the last
    // sequence starting at or before the row; any starts give one sequence,
    // and the row must end before its end.
    int seq = -1, hi = count;
    while (hi - seq > 1) {
      const int mid = (seq + hi) / 2;
      (start(mid) <= row ? seq : hi) = mid;
    }
    if (seq < 0 || row >= start(seq + 1)) continue;
    const std::int64_t q_len = start(seq + 1) - start(seq);
    const std::int64_t pos = std::int64_t(lens[seq]) - q_len + (row - start(seq));
    if (pos < 0 || pos >= capacity) continue;
    const std::int32_t page = table[seq * a.block_tables.strides[0] + pos / s.page_size];
    if (page < 0 || page >= s.num_blocks) continue;
    const std::int64_t slot = pos % s.page_size;
    for (auto [src, dst, sc] : {std::tuple{&a.keys, &a.key_cache, &a.k_scale}, {&a.values, &a.value_cache, &a.v_scale}})
      for (int h = 0; h < s.num_kv_heads; ++h) {
        const std::int64_t from = row * src->strides[0] + h * src->strides[1];
        const std::int64_t to = page * dst->strides[axes.block_axis] + h * dst->strides[axes.head_axis] +
                                slot * dst->strides[axes.slot_axis];
        if (s.src_dtype == s.kv_dtype) {  // a copy, bit for bit (NaN payloads too)
          std::memcpy(static_cast<char*>(dst->data) + to * std::int64_t(elem),
                      static_cast<const char*>(src->data) + from * std::int64_t(elem), std::size_t(s.head_dim) * elem);
          continue;
        }
        const float scale = scale_of(*sc, h);
        for (int d = 0; d < s.head_dim; ++d) {
          float x = load_element(src->data, from + d, s.src_dtype) / scale;
          // Saturating like the kernel's conversion: infinities too (store_element keeps e5m2's).
          if (std::isinf(x)) x = std::copysign(FLT_MAX, x);
          store_element(dst->data, to + d, x, s.kv_dtype);
        }
      }
  }
}

}  // namespace pagedjit
