#include "append_bench.hpp"

#include <fmt/format.h>

#include <vector>

#include "../common/timing.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"

namespace pjbench {
namespace {

// 8 sequences of 512 new tokens each after 1000 cached ones: the new tokens
// start mid-page, as in a chunked prefill.
constexpr int kSeqs = 8, kNew = 512, kCached = 1000, kHeads = 8, kDim = 128, kPage = 16;
constexpr int kBlocksPerSeq = (kCached + kNew + kPage - 1) / kPage;

}  // namespace

Json run_append(pagedjit::Engine& engine, const Bandwidth& bw, const RunSettings& s, CUstream stream) {
  using namespace pagedjit;
  const DriverApi& d = driver();
  const std::int64_t tokens = std::int64_t(kSeqs) * kNew;
  const std::int64_t row_bytes = std::int64_t(kHeads) * kDim * 2;  // bf16
  const std::int64_t moved = 2 * 2 * tokens * row_bytes;           // K and V, read and written
  const std::int64_t blocks = std::int64_t(kSeqs) * kBlocksPerSeq;
  const std::int64_t cache_bytes = blocks * kPage * row_bytes;
  // Input sets rotated so that the timed bytes stay out of L2, as for the cases.
  RunSettings rotate = s;
  rotate.l2 = L2Mode::rotate;
  const L2Plan l2 = plan_l2(moved, 2 * (tokens * row_bytes + cache_bytes), engine.device().l2_bytes, rotate);

  std::vector<int> starts, lens, table;
  for (int i = 0; i <= kSeqs; ++i) starts.push_back(i * kNew);
  for (int i = 0; i < kSeqs; ++i) {
    lens.push_back(kCached + kNew);
    for (int b = 0; b < kBlocksPerSeq; ++b) table.push_back(i * kBlocksPerSeq + b);
  }
  DeviceBuffer starts_d(starts.size() * 4), lens_d(lens.size() * 4), table_d(table.size() * 4);
  starts_d.upload(starts.data(), starts_d.size());
  lens_d.upload(lens.data(), lens_d.size());
  table_d.upload(table.data(), table_d.size());
  struct Set {
    DeviceBuffer keys, values, key_cache, value_cache;
  };
  std::vector<Set> sets;
  std::vector<AppendKvArgs> args;
  for (int i = 0; i < l2.sets; ++i) {
    Set set{DeviceBuffer(std::size_t(tokens * row_bytes)), DeviceBuffer(std::size_t(tokens * row_bytes)),
            DeviceBuffer(std::size_t(cache_bytes)), DeviceBuffer(std::size_t(cache_bytes))};
    check(d.cuMemsetD32(set.keys.ptr(), 0x3f803f80u, set.keys.size() / 4), "cuMemsetD32");  // bf16 1.0
    check(d.cuMemsetD32(set.values.ptr(), 0xbf80bf80u, set.values.size() / 4), "cuMemsetD32");
    AppendKvArgs a;
    a.keys = TensorView(set.keys.data(), DType::bf16, {tokens, kHeads, kDim});
    a.values = TensorView(set.values.data(), DType::bf16, {tokens, kHeads, kDim});
    a.key_cache = TensorView(set.key_cache.data(), DType::bf16, {blocks, kHeads, kPage, kDim});
    a.value_cache = TensorView(set.value_cache.data(), DType::bf16, {blocks, kHeads, kPage, kDim});
    a.query_start = TensorView(starts_d.data(), DType::i32, {kSeqs + 1});
    a.context_lens = TensorView(lens_d.data(), DType::i32, {kSeqs});
    a.block_tables = TensorView(table_d.data(), DType::i32, {kSeqs, kBlocksPerSeq});
    sets.push_back(std::move(set));
    args.push_back(a);
  }
  const std::vector<double> ms = time_calls(stream, std::max(s.warmup, l2.sets), s.reps, [&](int i) {
    engine.append_kv(args[std::size_t(i) % args.size()], stream);
  });
  const Stats st = summarize(ms);
  const double gbps = double(moved) / (st.median * 1e-3) / 1e9;
  const std::string shape =
      fmt::format("{} tokens ({} sequences x {} after {} cached) x {} KV heads x d{} bf16, page {}", tokens, kSeqs,
                  kNew, kCached, kHeads, kDim, kPage);
  fmt::print("  append_kv {}: {:.4f} ms, {:.1f} GB/s = {:.3f} of copy ({})\n", shape, st.median, gbps,
             gbps / bw.copy_GBps, l2.text);
  return Json{{"case", shape},
              {"bytes", moved},
              {"method", fmt::format("median of {} calls timed with events; bytes = new keys and values read + "
                                     "written; {}",
                                     st.n, l2.text)},
              {"time_ms", st.median},
              {"min_ms", st.min},
              {"p90_ms", st.p90},
              {"GBps", gbps},
              {"frac_copy", gbps / bw.copy_GBps}};
}

}  // namespace pjbench
