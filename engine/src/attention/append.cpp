#include "attention/append.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "attention/validate.hpp"
#include "pagedjit/errors.hpp"

namespace pagedjit::attention {
namespace {

int log2_exact(int x) {
  int s = 0;
  while ((1 << s) < x) ++s;
  return s;
}

std::vector<int> download_ints(const DriverApi& drv, const TensorView& t, std::int64_t count, const char* what) {
  std::vector<int> v(static_cast<std::size_t>(count));
  if (count > 0)
    check(drv.cuMemcpyDtoH(v.data(), reinterpret_cast<CUdeviceptr>(t.data), v.size() * 4),
          fmt::format("cuMemcpyDtoH({})", what).c_str());
  return v;
}

}  // namespace

AppendLaunch append_launch(const AppendKvArgs& a, const AppendShape& s) {
  AppendLaunch l;
  pj::AppendParams& p = l.params;
  p.k_src = a.keys.data;
  p.v_src = a.values.data;
  p.k_src_stride_tok = a.keys.strides[0];
  p.k_src_stride_head = a.keys.strides[1];
  p.v_src_stride_tok = a.values.strides[0];
  p.v_src_stride_head = a.values.strides[1];
  // The layouts differ only in which axis holds blocks, heads and slots.
  const CacheAxes axes = cache_axes(s.layout);
  p.k = a.key_cache.data;
  p.v = a.value_cache.data;
  p.k_stride_head = a.key_cache.strides[axes.head_axis];
  p.v_stride_head = a.value_cache.strides[axes.head_axis];
  p.k_stride_page = unsigned(a.key_cache.strides[axes.block_axis]);  // < 2^31: validated
  p.k_stride_slot = unsigned(a.key_cache.strides[axes.slot_axis]);
  p.v_stride_page = unsigned(a.value_cache.strides[axes.block_axis]);
  p.v_stride_slot = unsigned(a.value_cache.strides[axes.slot_axis]);
  p.query_start = static_cast<const int*>(a.query_start.data);
  p.context_lens = static_cast<const int*>(a.context_lens.data);
  p.block_tables = static_cast<const int*>(a.block_tables.data);
  p.seq_count = static_cast<const int*>(a.seq_count.data);
  p.bt_stride = a.block_tables.strides[0];
  p.max_blocks = s.max_blocks;
  p.num_blocks = s.num_blocks;
  p.k_scale = static_cast<const float*>(a.k_scale.data);
  p.v_scale = static_cast<const float*>(a.v_scale.data);
  p.k_scale_stride = a.k_scale.rank == 1 && a.k_scale.shape[0] > 1 ? 1 : 0;
  p.v_scale_stride = a.v_scale.rank == 1 && a.v_scale.shape[0] > 1 ? 1 : 0;
  p.total_tokens = int(s.total_tokens);  // < 2^31: validated
  p.num_seqs = s.num_seqs;
  p.page_shift = log2_exact(s.page_size);
  // One thread per 16 bytes of a cache row (at most 512 * 4 / 16 = 128), as
  // many rows as fill the CTA; no more rows than the call has.
  const int columns = s.head_dim * int(dtype_size(s.kv_dtype)) / 16;
  int rows = int(std::min<std::int64_t>(pj::kAppendThreads / columns, s.total_tokens));
  // The kernel's row index, blockIdx.x * rows + threadIdx.y, is an int: near
  // 2^31 tokens, rows that do not divide 2^31 would take the last CTA's
  // indices past it. A power of two does (total_tokens < 2^31: validated).
  if ((s.total_tokens + rows - 1) / rows * rows - 1 > 0x7fffffff)
    while ((rows & (rows - 1)) != 0) rows &= rows - 1;
  l.block = {unsigned(columns), unsigned(rows)};
  l.grid = {unsigned((s.total_tokens + rows - 1) / rows), unsigned(s.num_kv_heads)};
  return l;
}

void check_append_data(const DriverApi& drv, const AppendKvArgs& a, const AppendShape& s, CUstream stream) {
  check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize");
  int count = s.num_seqs;
  if (a.seq_count.data) {
    count = download_ints(drv, a.seq_count, 1, "seq_count")[0];
    if (count < 0 || count > s.num_seqs)
      throw DeviceDataError(0, fmt::format("seq_count = {} is outside [0, {}] (num_seqs)", count, s.num_seqs));
  }
  const std::vector<int> starts = download_ints(drv, a.query_start, std::int64_t(count) + 1, "query_start");
  const std::vector<int> lens = download_ints(drv, a.context_lens, count, "context_lens");
  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  std::vector<int> row(std::size_t(s.max_blocks));
  for (int i = 0; i < count; ++i) {
    const int b = starts[std::size_t(i)], e = starts[std::size_t(i) + 1];
    if (b < 0 || e < b || e > s.total_tokens)
      throw DeviceDataError(i, fmt::format("query_start[{}..{}] = {}, {} is not a range inside [0, {}] "
                                           "(total_tokens); its rows would be skipped",
                                           i, i + 1, b, e, s.total_tokens));
    const int len = lens[std::size_t(i)], q_len = e - b;
    if (q_len == 0) continue;
    if (len < q_len)
      throw DeviceDataError(i, fmt::format("context_lens[{}] = {} is below the sequence's {} new tokens; the tokens "
                                           "before position 0 would be skipped",
                                           i, len, q_len));
    if (len > capacity)
      throw DeviceDataError(i, fmt::format("context_lens[{}] = {} exceeds the block table's capacity {} "
                                           "(max_blocks {} x page_size {}); the tokens past it would be skipped",
                                           i, len, capacity, s.max_blocks, s.page_size));
    const int first = (len - q_len) / s.page_size, last = (len - 1) / s.page_size;
    const auto base = reinterpret_cast<CUdeviceptr>(a.block_tables.data) +
                      CUdeviceptr((std::int64_t(i) * a.block_tables.strides[0] + first) * 4);
    check(drv.cuMemcpyDtoH(row.data(), base, std::size_t(last - first + 1) * 4), "cuMemcpyDtoH(block_tables)");
    for (int j = first; j <= last; ++j)
      if (row[std::size_t(j - first)] < 0 || row[std::size_t(j - first)] >= s.num_blocks)
        throw DeviceDataError(i, fmt::format("block_tables[{}][{}] = {} is outside [0, {}) but receives new tokens "
                                             "(positions {}..{}); they would not be written",
                                             i, j, row[std::size_t(j - first)], s.num_blocks, len - q_len, len - 1));
  }
}

}  // namespace pagedjit::attention
