#include "attention/append.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "attention/cache_params.hpp"
#include "attention/planner.hpp"
#include "attention/validate.hpp"
#include "pagedjit/errors.hpp"

namespace pagedjit::attention {
namespace {

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
  set_paged_cache(p, {a.key_cache, a.value_cache, a.context_lens, a.block_tables, a.k_scale, a.v_scale, s.layout,
                      s.max_blocks, s.num_blocks});
  p.query_start = static_cast<const int*>(a.query_start.data);
  p.seq_count = static_cast<const int*>(a.seq_count.data);
  p.total_tokens = int(s.total_tokens);  // < 2^31: validated
  p.num_seqs = s.num_seqs;
  p.page_shift = page_shift_of(s.page_size);
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
