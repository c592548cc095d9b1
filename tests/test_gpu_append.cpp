// append_kv on the GPU against the CPU reference, bit for bit. Every cache
// starts poisoned with a byte pattern, and the whole cache is compared after
// the call: the new tokens' slots must hold the reference's bits and every
// other byte must still hold the poison.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

#include "append_problem.hpp"
#include "gpu.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"

using namespace pagedjit;
using pjtest::AppendConfig;
using pjtest::HostAppend;

namespace {

template <class T>
DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  if (!v.empty()) b.upload(v.data(), b.size());
  return b;
}

// A HostAppend's arrays on the device.
struct DeviceAppend {
  DeviceBuffer keys, values, key_cache, value_cache, starts, lens, table, k_scale, v_scale, count;
  explicit DeviceAppend(const HostAppend& h)
      : keys(upload(h.keys)),
        values(upload(h.values)),
        key_cache(upload(h.key_cache)),
        value_cache(upload(h.value_cache)),
        starts(upload(h.starts)),
        lens(upload(h.lens)),
        table(upload(h.table)),
        k_scale(upload(h.k_scale)),
        v_scale(upload(h.v_scale)),
        count(upload(h.count)) {}
  AppendKvArgs args(const HostAppend& h) const {
    return h.args(keys.data(), values.data(), key_cache.data(), value_cache.data(), starts.data(), lens.data(),
                  table.data(), k_scale.data(), v_scale.data(), count.data());
  }
  // Replaces every array with `h`'s (the same sizes): a captured graph then runs on new data.
  void refill(const HostAppend& h) {
    keys.upload(h.keys.data(), h.keys.size());
    values.upload(h.values.data(), h.values.size());
    key_cache.upload(h.key_cache.data(), h.key_cache.size());
    value_cache.upload(h.value_cache.data(), h.value_cache.size());
    starts.upload(h.starts.data(), h.starts.size() * 4);
    lens.upload(h.lens.data(), h.lens.size() * 4);
    table.upload(h.table.data(), h.table.size() * 4);
    if (!h.count.empty()) count.upload(h.count.data(), 4);
  }
  std::vector<std::uint8_t> download(const DeviceBuffer& b) const {
    std::vector<std::uint8_t> r(b.size());
    b.download(r.data(), r.size());
    return r;
  }
};

// Bytes where `got` differs from `want`, and where the poison changed.
struct CacheDiff {
  std::int64_t wrong = 0, first_wrong = -1, written = 0;
};
CacheDiff diff(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& want,
               const std::vector<std::uint8_t>& poison) {
  CacheDiff d;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && d.wrong++ == 0) d.first_wrong = std::int64_t(i);
    d.written += want[i] != poison[i];
  }
  return d;
}

// Runs `h` on the device (on `stream`) and the reference on the host; checks
// both caches bit for bit. Returns the bytes the reference wrote.
std::int64_t run_and_compare(HostAppend& h, CUstream stream = nullptr, Engine* engine = nullptr) {
  DeviceAppend d(h);
  (engine ? *engine : pjtest::engine()).append_kv(d.args(h), stream);
  check(driver().cuStreamSynchronize(stream), "cuStreamSynchronize");
  const std::vector<std::uint8_t> poison_k = h.key_cache, poison_v = h.value_cache;
  reference_append_kv(h.host_args());
  const CacheDiff k = diff(d.download(d.key_cache), h.key_cache, poison_k);
  const CacheDiff v = diff(d.download(d.value_cache), h.value_cache, poison_v);
  INFO("key cache: " << k.wrong << " wrong bytes, first at " << k.first_wrong);
  INFO("value cache: " << v.wrong << " wrong bytes, first at " << v.first_wrong);
  CHECK(k.wrong == 0);
  CHECK(v.wrong == 0);
  return k.written + v.written;
}

std::string describe(const AppendConfig& c) {
  return fmt::format("{}->{} {} d{} page{} heads{} pad{} scales{} q_lens [{}] lens [{}] seed {}", dtype_name(c.src),
                     dtype_name(c.kv), layout_name(c.layout), c.head_dim, c.page_size, c.num_kv_heads, c.pad,
                     c.kv_scales, fmt::join(c.q_lens, ", "), fmt::join(c.context_lens, ", "), c.seed);
}

const std::vector<std::pair<DType, DType>>& dtype_pairs() {
  static const std::vector<std::pair<DType, DType>> p = {
      {DType::bf16, DType::bf16}, {DType::f16, DType::f16},  {DType::f32, DType::f32},
      {DType::bf16, DType::e4m3}, {DType::f16, DType::e5m2}, {DType::f32, DType::e4m3},
      {DType::bf16, DType::e5m2}, {DType::f16, DType::e4m3}, {DType::f32, DType::e5m2}};
  return p;
}

// Values that exercise fp8 saturation: beyond 448 * scale for e4m3 and
// 57344 * scale for e5m2 (scales are 0.25..2; fp16 keys stay below 65504).
float range_for(DType kv) {
  return kv == DType::e4m3 ? 1200.f : kv == DType::e5m2 ? 60000.f : 4.f;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu append: every layout, dtype pair, page size and head dim, bit for bit" * pjtest::skip_without_gpu()) {
    std::mt19937_64 rng(7);
    int index = 0;
    for (CacheLayout layout : {CacheLayout::blocks_heads, CacheLayout::heads_blocks, CacheLayout::blocks_tokens})
      for (const auto& [src, kv] : dtype_pairs())
        for (int page : {1, 16, 256})
          for (int d : {64, 128, 96, 512}) {
            AppendConfig c;
            c.src = src, c.kv = kv, c.layout = layout, c.page_size = page, c.head_dim = d;
            c.num_kv_heads = 1 + index % 3;
            c.pad = index % 4 == 1 ? 16 : 0;
            c.kv_scales = index % 3 == 0 ? 1 : 2;
            if (index % 7 == 3) c.kv_scales = 0;
            c.range = range_for(kv);
            c.q_lens = {int(rng() % 3), 1, 0, 1 + int(rng() % 40), int(rng() % 300)};
            const std::vector<int> prefix = {int(rng() % 50), 0, int(rng() % 20), int(rng() % 700), page - 1};
            c.context_lens = pjtest::lens_after(prefix, c.q_lens);
            c.seed = std::uint64_t(++index);
            CAPTURE(describe(c));
            HostAppend h(c);
            CHECK(run_and_compare(h) > 0);
          }
  }

  TEST_CASE("gpu append: a 4096-token chunk beside decodes and an empty sequence" * pjtest::skip_without_gpu()) {
    int index = 0;
    for (const auto& [src, kv] : dtype_pairs()) {
      AppendConfig c;
      c.src = src, c.kv = kv;
      c.layout = std::array{CacheLayout::blocks_heads, CacheLayout::heads_blocks,
                            CacheLayout::blocks_tokens}[std::size_t(index % 3)];
      c.num_kv_heads = 8;
      c.head_dim = 128;
      c.page_size = 16;
      c.range = range_for(kv);
      c.q_lens = {1, 4096, 0, 1, 3};
      c.context_lens = pjtest::lens_after({900, 123, 40, 0, 5000}, c.q_lens);
      c.seed = std::uint64_t(100 + index++);
      CAPTURE(describe(c));
      HostAppend h(c);
      CHECK(run_and_compare(h) > 0);
    }
  }

  TEST_CASE("gpu append: bad pages, positions outside the table, seq_count and hostile starts are skipped" *
            pjtest::skip_without_gpu()) {
    AppendConfig c;
    c.kv = DType::e4m3;
    c.range = range_for(c.kv);
    c.page_size = 16;
    c.max_blocks = 4;  // capacity 64
    c.q_lens = {20, 6, 10, 4, 7, 5};
    // 1: q_len > context_len (its first two tokens have no position); 3: the
    // context passes the table's capacity (its last tokens have no page); 5:
    // beyond seq_count.
    c.context_lens = {40, 4, 30, 66, 50, 9};
    HostAppend h(c);
    const int mb = h.max_blocks;
    h.table[std::size_t(0 * mb + 1)] = -1;                               // sequence 0, positions 20..31
    h.table[std::size_t(2 * mb + 1)] = int(h.num_blocks);                // sequence 2, positions 20..29
    h.table[std::size_t(4 * mb + 2)] = std::numeric_limits<int>::min();  // sequence 4, positions 43..49
    h.count = {5};
    CHECK(run_and_compare(h) > 0);

    // Starts that are not sorted, negative or past the rows: the kernel reads
    // no row outside [0, total_tokens) and writes only inside the table.
    for (std::vector<int> starts :
         {std::vector<int>{0, 30, 10, 52, -5, 100, 8}, {5, 3, 1000, 20, 20, 52, 52}, {-100, -1, 0, 0, 60, 60, 200}}) {
      HostAppend g(c);
      g.starts = starts;
      CAPTURE(fmt::format("{}", fmt::join(starts, ", ")));
      run_and_compare(g);
    }
  }

  TEST_CASE("gpu append: one captured graph replays with new starts, lengths and tables" * pjtest::skip_without_gpu()) {
    const DriverApi& drv = driver();
    // The same shapes every time: 600 rows, 4 sequences, 64 table entries, 200 pages.
    auto config = [](std::vector<int> q_lens, std::vector<int> prefix, int count, std::uint64_t seed) {
      AppendConfig c;
      c.num_kv_heads = 4;
      c.head_dim = 128;
      c.page_size = 16;
      c.max_blocks = 64;
      c.q_lens = std::move(q_lens);
      c.context_lens = pjtest::lens_after(prefix, c.q_lens);
      int used = 0;
      for (int l : c.context_lens) used += (l + 15) / 16;
      c.spare_blocks = 200 - used;
      c.seed = seed;
      HostAppend h(c);
      h.count = {count};
      return h;
    };
    HostAppend first = config({100, 300, 0, 200}, {0, 50, 10, 400}, 4, 1);
    DeviceAppend dev(first);
    const AppendKvArgs args = dev.args(first);
    CUstream s;
    check(drv.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    CUgraph graph;
    CUgraphExec exec;
    check(drv.cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
    pjtest::engine().append_kv(args, s);
    check(drv.cuStreamEndCapture(s, &graph), "cuStreamEndCapture");
    check(drv.cuGraphInstantiate(&exec, graph, 0), "cuGraphInstantiate");
    int replay = 0;
    for (HostAppend h :
         {config({100, 300, 0, 200}, {0, 50, 10, 400}, 4, 1), config({1, 1, 597, 1}, {700, 3, 0, 1000}, 4, 2),
          config({600, 0, 0, 0}, {424, 9, 9, 9}, 4, 3), config({200, 200, 100, 100}, {5, 6, 7, 8}, 2, 4)}) {
      CAPTURE(replay++);
      dev.refill(h);
      check(drv.cuGraphLaunch(exec, s), "cuGraphLaunch");
      check(drv.cuStreamSynchronize(s), "cuStreamSynchronize");
      const std::vector<std::uint8_t> poison_k = h.key_cache, poison_v = h.value_cache;
      reference_append_kv(h.host_args());
      const CacheDiff k = diff(dev.download(dev.key_cache), h.key_cache, poison_k);
      const CacheDiff v = diff(dev.download(dev.value_cache), h.value_cache, poison_v);
      CHECK(k.wrong == 0);
      CHECK(v.wrong == 0);
      CHECK(k.written > 0);
    }
    drv.cuGraphExecDestroy(exec);
    drv.cuGraphDestroy(graph);
    drv.cuStreamDestroy(s);
  }

  TEST_CASE("gpu append: paged_attention reads back what append_kv wrote" * pjtest::skip_without_gpu()) {
    for (DType kv : {DType::bf16, DType::e4m3, DType::f32}) {
      CAPTURE(dtype_name(kv));
      testing::ProblemConfig pc;
      pc.dtype = pc.out_dtype = kv == DType::f32 ? DType::f32 : DType::bf16;
      if (is_fp8(kv)) pc.kv_dtype = kv;
      pc.num_heads = 8;
      pc.num_kv_heads = 2;
      pc.head_dim = 128;
      pc.layout = kv == DType::e4m3 ? CacheLayout::blocks_tokens : CacheLayout::blocks_heads;
      pc.context_lens = {50, 300, 17};
      testing::HostProblem host(pc);
      testing::DeviceProblem dev(host);  // the cache before the append
      // New tokens: the last 5, 64 and 17 positions (all of sequence 2).
      AppendConfig ac;
      ac.src = pc.dtype;
      ac.kv = kv;
      ac.num_kv_heads = 2;
      ac.head_dim = 128;
      ac.q_lens = {5, 64, 17};
      ac.context_lens = pc.context_lens;
      ac.range = 2.f;
      ac.seed = 11;
      HostAppend fresh(ac);  // its keys, values and starts; the caches are the problem's
      DeviceBuffer keys = upload(fresh.keys), values = upload(fresh.values), starts = upload(fresh.starts);
      const PagedAttentionArgs d = dev.args();
      AppendKvArgs a;
      a.keys = TensorView(keys.data(), ac.src, {fresh.total, 2, 128});
      a.values = TensorView(values.data(), ac.src, {fresh.total, 2, 128});
      a.query_start = TensorView(starts.data(), DType::i32, {4});
      a.context_lens = d.context_lens;
      a.block_tables = d.block_tables;
      a.key_cache = d.key_cache;
      a.value_cache = d.value_cache;
      a.layout = pc.layout;
      a.k_scale = d.k_scale;
      a.v_scale = d.v_scale;
      pjtest::engine().append_kv(a, nullptr);
      pjtest::engine().paged_attention(d, {}, nullptr);
      check(driver().cuCtxSynchronize(), "cuCtxSynchronize");

      const ReferenceOutputs before = reference_paged_attention(host.args(), {});
      AppendKvArgs ha = a;
      const PagedAttentionArgs hp = host.args();
      ha.keys.data = fresh.keys.data();
      ha.values.data = fresh.values.data();
      ha.query_start.data = fresh.starts.data();
      ha.context_lens = hp.context_lens;
      ha.block_tables = hp.block_tables;
      ha.key_cache = hp.key_cache;
      ha.value_cache = hp.value_cache;
      ha.k_scale = hp.k_scale;
      ha.v_scale = hp.v_scale;
      reference_append_kv(ha);
      const ReferenceOutputs after = reference_paged_attention(host.args(), {});
      const std::vector<float> got = dev.output();
      const testing::ErrorStats e = testing::compare(got, after.output);
      CHECK(e.nonfinite == 0);
      CHECK(e.rel_l2 < 1e-2);
      // The appended tokens matter: the result before the append is far off.
      CHECK(testing::compare(got, before.output).rel_l2 > 0.05);
    }
  }

  TEST_CASE("gpu append: validation mode names the first sequence whose tokens would be lost" *
            pjtest::skip_without_gpu()) {
    EngineOptions eo;
    eo.validate_device_data = true;
    Engine checked(0, eo);
    AppendConfig c;
    c.q_lens = {3, 4, 5};
    c.context_lens = {10, 20, 30};
    {
      HostAppend h(c);
      CHECK(run_and_compare(h, nullptr, &checked) > 0);  // good data passes
    }
    auto expect = [&](HostAppend h, int seq, const std::string& text) {
      DeviceAppend d(h);
      try {
        checked.append_kv(d.args(h), nullptr);
        FAIL("bad device data not reported: ", text);
      } catch (const DeviceDataError& e) {
        CHECK(e.sequence() == seq);
        CHECK(std::string(e.what()).find(text) != std::string::npos);
      }
    };
    HostAppend bad_page(c);
    bad_page.table[std::size_t(1 * bad_page.max_blocks + 1)] = -1;  // sequence 1, positions 16..19
    expect(bad_page, 1, "block_tables[1][1]");
    HostAppend short_ctx(c);
    short_ctx.lens[2] = 4;  // 5 new tokens, context 4
    expect(short_ctx, 2, "context_lens[2]");
    HostAppend long_ctx(c);
    long_ctx.lens[0] = 1000;
    expect(long_ctx, 0, "capacity");
    HostAppend bad_start(c);
    bad_start.starts[1] = 100;
    expect(bad_start, 0, "query_start");
    HostAppend counted(bad_page);  // the bad sequence is past seq_count: fine
    counted.count = {1};
    DeviceAppend d(counted);
    CHECK_NOTHROW(checked.append_kv(d.args(counted), nullptr));
  }
}
