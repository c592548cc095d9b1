// fp8 KV caches and multi-token queries against the float64 CPU
// reference, which dequantizes the cache with the same scales. Outputs are
// poisoned before every run.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gpu.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/reference.hpp"
#include "pagedjit/testing.hpp"

using namespace pagedjit;

namespace {

struct Call {
  testing::ProblemConfig cfg;
  PagedAttentionOptions opts;
  std::string describe() const {
    return fmt::format("{} splits={} window={} softcap={} lse={}", cfg.describe(), opts.num_splits,
                       opts.sliding_window ? *opts.sliding_window : 0,
                       opts.attn_logits_soft_cap ? *opts.attn_logits_soft_cap : 0.f, cfg.with_lse);
  }
};

double tolerance(const testing::ProblemConfig& c) {
  const DType worst = c.dtype == DType::f32 && c.out_dtype == DType::f32     ? DType::f32
                      : c.dtype == DType::bf16 || c.out_dtype == DType::bf16 ? DType::bf16
                                                                             : DType::f16;
  return worst == DType::f32 ? 1e-5 : worst == DType::f16 ? 2e-3 : 1e-2;
}

testing::ErrorStats run(const Call& c) {
  testing::DeviceProblem prob(c.cfg);
  PagedAttentionOptions o = c.opts;
  o.return_lse = c.cfg.with_lse;
  prob.poison_outputs();
  const LaunchInfo info = pjtest::engine().paged_attention(prob.args(), o);
  check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
  const testing::ErrorStats e = prob.check(o);
  INFO(c.describe());
  INFO(info.describe());
  INFO(fmt::format("rel_l2={:.3e} max_abs={:.3e} nonfinite={} lse_ok={} lse_max_abs={:.3e}", e.rel_l2, e.max_abs,
                   e.nonfinite, e.lse_ok, e.lse_max_abs));
  CHECK(e.nonfinite == 0);
  CHECK(e.rel_l2 < tolerance(c.cfg));
  CHECK(e.lse_ok);
  CHECK(e.lse_max_abs < (c.cfg.dtype == DType::f32 && !c.cfg.kv_dtype ? 1e-4 : 2e-2));
  return e;
}

// Random calls: fp8 caches (fp8 = true) or multi-token queries over every dtype.
Call random_call(std::uint64_t seed, bool fp8, bool multi) {
  std::mt19937_64 rng(seed);
  auto uni = [&](int lo, int hi) { return lo + int(rng() % std::uint64_t(hi - lo + 1)); };
  auto pick = [&](std::initializer_list<int> v) { return *(v.begin() + std::ptrdiff_t(rng() % v.size())); };
  Call c;
  testing::ProblemConfig& g = c.cfg;
  g.seed = seed;
  if (fp8) {
    g.dtype = rng() % 2 ? DType::bf16 : DType::f16;
    g.kv_dtype = rng() % 3 ? DType::e4m3 : DType::e5m2;
    g.kv_scales = uni(0, 2);
  } else {
    g.dtype = std::array<DType, 3>{DType::bf16, DType::f16, DType::f32}[rng() % 3];
  }
  g.out_dtype = rng() % 3 == 0 ? std::array<DType, 3>{DType::bf16, DType::f16, DType::f32}[rng() % 3] : g.dtype;
  g.q_len = multi ? uni(1, 8) : 1;
  g.head_dim = pick({64, 128, 128, 256, 16, 48, 80, 112, 272, 512});
  g.page_size = rng() % 2 ? 16 : 1 << uni(0, 8);
  g.num_kv_heads = uni(1, 3);
  g.num_heads = g.num_kv_heads * pick({1, 2, 4, 5, 8, 16, 24});
  g.layout = std::array<CacheLayout, 3>{CacheLayout::blocks_heads, CacheLayout::heads_blocks,
                                        CacheLayout::blocks_tokens}[rng() % 3];
  g.pad_elems = rng() % 4 == 0 ? 16 : 0;
  g.context_lens.clear();
  for (int s = uni(1, 5); s > 0; --s) g.context_lens.push_back(rng() % 5 == 0 ? uni(0, 9) : uni(1, 900));
  g.holes = rng() % 6 == 0 ? 1 : 0;
  g.with_lse = rng() % 2 == 0;
  PagedAttentionOptions& o = c.opts;
  o.num_splits = pick({0, 0, 1, 2, 3, 7, 64});
  if (rng() % 4 == 0) o.sliding_window = pick({1, 3, 9, 100, 700});
  if (rng() % 5 == 0) o.attn_logits_soft_cap = float(pick({2, 30}));
  if (rng() % 4 == 0) o.attn_scale = 0.05f * float(uni(1, 30));
  return c;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu: fp8 caches (e4m3, e5m2) with per-tensor and per-head scales" * pjtest::skip_without_gpu()) {
    const int n =
        std::getenv("PAGEDJIT_TEST_CONFIGS") ? std::max(8, std::atoi(std::getenv("PAGEDJIT_TEST_CONFIGS")) / 4) : 160;
    double worst = 0;
    for (int i = 0; i < n; ++i) {
      const Call c = random_call(0xF8000 + std::uint64_t(i), true, i % 4 == 3);
      worst = std::max(worst, run(c).rel_l2 / tolerance(c.cfg));
    }
    MESSAGE(fmt::format("fp8: {} random calls, worst error/tolerance {:.3f}", n, worst));
  }

  TEST_CASE("gpu: multi-token queries (q_len 1..8, causal among them)" * pjtest::skip_without_gpu()) {
    const int n =
        std::getenv("PAGEDJIT_TEST_CONFIGS") ? std::max(8, std::atoi(std::getenv("PAGEDJIT_TEST_CONFIGS")) / 4) : 160;
    double worst = 0;
    for (int i = 0; i < n; ++i) {
      const Call c = random_call(0x9900 + std::uint64_t(i), false, true);
      worst = std::max(worst, run(c).rel_l2 / tolerance(c.cfg));
    }
    MESSAGE(fmt::format("multi-token: {} random calls, worst error/tolerance {:.3f}", n, worst));
  }

  TEST_CASE("gpu: multi-token edges: fewer tokens than query tokens, windows of one" * pjtest::skip_without_gpu()) {
    for (int q_len : {2, 5, 8})
      for (int splits : {1, 3}) {
        Call c;
        c.cfg.q_len = q_len;
        c.cfg.num_heads = 8, c.cfg.num_kv_heads = 2, c.cfg.head_dim = 64;
        c.cfg.context_lens = {0, 1, q_len - 1, q_len, q_len + 1, 40};  // early tokens of short ones see nothing
        c.cfg.with_lse = true;
        c.opts.num_splits = splits;
        run(c);
        c.opts.sliding_window = 1;  // each query token sees only itself
        run(c);
      }
  }

  TEST_CASE("gpu: fp8 cache equals the same data as a bf16 cache holding the dequantized values" *
            pjtest::skip_without_gpu()) {
    // The fp8 call and a bf16 call on the widened values (exactly
    // representable: e4m3 times a power-of-two scale) must agree closely:
    // the fp8 path is a faithful dequantization, not merely within tolerance.
    testing::ProblemConfig cfg;
    cfg.num_heads = 32, cfg.num_kv_heads = 4, cfg.head_dim = 128;
    cfg.context_lens = {1000, 333, 1};
    cfg.kv_dtype = DType::e4m3;
    cfg.kv_scales = 0;
    cfg.out_dtype = DType::f32;
    cfg.poison_unused = false;
    testing::DeviceProblem f8(cfg);
    testing::ProblemConfig cfg16 = cfg;
    cfg16.kv_dtype.reset();
    testing::HostProblem h16(cfg16);  // same shapes; overwrite its cache with the widened fp8 data
    const testing::HostProblem& h8 = f8.host();
    REQUIRE(h16.k.size() == 2 * h8.k.size());
    for (std::size_t i = 0; i < h8.k.size(); ++i) {
      store_element(h16.k.data(), std::int64_t(i), load_element(h8.k.data(), std::int64_t(i), DType::e4m3),
                    DType::bf16);
      store_element(h16.v.data(), std::int64_t(i), load_element(h8.v.data(), std::int64_t(i), DType::e4m3),
                    DType::bf16);
    }
    DeviceBuffer k16(h16.k.size()), v16(h16.v.size());
    k16.upload(h16.k.data(), h16.k.size());
    v16.upload(h16.v.data(), h16.v.size());
    PagedAttentionArgs a16 = f8.args();
    a16.key_cache.dtype = a16.value_cache.dtype = DType::bf16;
    a16.key_cache.data = k16.data();
    a16.value_cache.data = v16.data();
    f8.poison_outputs();
    pjtest::engine().paged_attention(f8.args());
    check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
    const std::vector<float> out8 = f8.output();
    f8.poison_outputs();
    pjtest::engine().paged_attention(a16);
    check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
    const std::vector<float> out16 = f8.output();
    std::vector<double> want(out16.begin(), out16.end());
    const testing::ErrorStats e = testing::compare(out8, want);
    INFO(fmt::format("fp8 vs widened bf16: rel_l2 {:.3e}, max_abs {:.3e}", e.rel_l2, e.max_abs));
    CHECK(e.nonfinite == 0);
    CHECK(e.rel_l2 < 3e-3);  // only the probabilities' rounding differs: fp16 on the fp8 path, bf16 on the other
  }

  TEST_CASE("gpu: fp8 errors: an fp32 query, scales on a bf16 cache" * pjtest::skip_without_gpu()) {
    testing::ProblemConfig cfg;
    cfg.kv_dtype = DType::e4m3;
    testing::DeviceProblem prob(cfg);
    PagedAttentionArgs a = prob.args();
    a.query.dtype = DType::f32;
    CHECK_THROWS_AS(pjtest::engine().paged_attention(a), InvalidArgument);
    testing::ProblemConfig plain;
    testing::DeviceProblem p2(plain);
    PagedAttentionArgs b = p2.args();
    b.k_scale = prob.args().k_scale;
    CHECK_THROWS_AS(pjtest::engine().paged_attention(b), InvalidArgument);
  }

  TEST_CASE("gpu: merging the LSE-weighted results of a context's two halves gives the whole" *
            pjtest::skip_without_gpu()) {
    // (Single-token queries: a causal multi-token query would also mask the
    // end of the first part, which a prefix must not.)
    for (DType out : {DType::bf16, DType::f32}) {
      testing::ProblemConfig cfg;
      cfg.num_heads = 16, cfg.num_kv_heads = 4, cfg.head_dim = 128, cfg.out_dtype = out;
      cfg.context_lens = {1000, 517, 16, 33, 0};  // 16: the first part is empty; 0: both are
      cfg.with_lse = true;
      testing::DeviceProblem prob(cfg);
      const testing::HostProblem& h = prob.host();
      const int S = int(cfg.context_lens.size()), mb = h.config().max_blocks, P = cfg.page_size;
      // Part A: the first n1 tokens (whole pages); part B: the rest, through a
      // table shifted by n1 / P pages.
      std::vector<std::int32_t> lens_a(static_cast<std::size_t>(S)), lens_b(lens_a), table_b(h.table.size(), -1);
      for (int s = 0; s < S; ++s) {
        const int len = h.lens[std::size_t(s)];
        const int n1 = (len / 2) / P * P;
        lens_a[std::size_t(s)] = n1;
        lens_b[std::size_t(s)] = len - n1;
        for (int j = n1 / P; j < mb; ++j) table_b[std::size_t(s * mb + j - n1 / P)] = h.table[std::size_t(s * mb + j)];
      }
      const std::int64_t rows = h.rows(), D = cfg.head_dim;
      DeviceBuffer la(lens_a.size() * 4), lb(lens_b.size() * 4), tb(table_b.size() * 4);
      la.upload(lens_a.data(), la.size());
      lb.upload(lens_b.data(), lb.size());
      tb.upload(table_b.data(), tb.size());
      DeviceBuffer out_a(std::size_t(rows * D * 4)), out_b(out_a.size()), lse_a(std::size_t(rows * 4)),
          lse_b(lse_a.size());
      const PagedAttentionArgs full = prob.args();
      auto part = [&](DeviceBuffer& lens, DeviceBuffer* table, DeviceBuffer& out, DeviceBuffer& lse) {
        PagedAttentionArgs a = full;
        a.context_lens.data = lens.data();
        if (table) a.block_tables.data = table->data();
        a.output.dtype = DType::f32;
        a.output.data = out.data();
        for (int i = a.output.rank - 1, st = 1; i >= 0; st *= int(a.output.shape[i]), --i) a.output.strides[i] = st;
        a.lse.data = lse.data();
        PagedAttentionOptions o;
        o.return_lse = true;
        pjtest::engine().paged_attention(a, o);
        return a;
      };
      const PagedAttentionArgs a = part(la, nullptr, out_a, lse_a);
      const PagedAttentionArgs b = part(lb, &tb, out_b, lse_b);
      prob.poison_outputs();
      MergeStatesArgs m;
      m.out_a = a.output, m.lse_a = a.lse, m.out_b = b.output, m.lse_b = b.lse;
      m.out = full.output, m.lse = full.lse;
      pjtest::engine().merge_attention_states(m);
      check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
      PagedAttentionOptions o;
      o.return_lse = true;
      const testing::ErrorStats e = prob.check(o);
      INFO(fmt::format("out {}: merged vs whole: rel_l2 {:.3e} nonfinite {} lse_ok {} lse_max_abs {:.3e}",
                       dtype_name(out), e.rel_l2, e.nonfinite, e.lse_ok, e.lse_max_abs));
      CHECK(e.nonfinite == 0);
      CHECK(e.rel_l2 < 1e-2);
      CHECK(e.lse_ok);
      CHECK(e.lse_max_abs < 2e-2);
      // In place, into part A's buffer.
      m.out = a.output, m.lse = TensorView();
      pjtest::engine().merge_attention_states(m);
      check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
      std::vector<float> merged(std::size_t(rows * D));
      out_a.download(merged.data(), merged.size() * 4);
      const ReferenceOutputs want = reference_paged_attention(h.args(), o);
      const testing::ErrorStats e2 = testing::compare(merged, want.output);
      INFO(fmt::format("in place: rel_l2 {:.3e}", e2.rel_l2));
      CHECK(e2.nonfinite == 0);
      CHECK(e2.rel_l2 < 1e-2);
    }
  }

  TEST_CASE("merge: argument errors name the argument" * pjtest::skip_without_gpu()) {
    std::vector<float> x(64), l(8);
    MergeStatesArgs m;
    m.out_a = m.out_b = m.out = TensorView(x.data(), DType::f32, {2, 4, 8});
    m.lse_a = m.lse_b = TensorView(l.data(), DType::f32, {2, 4});
    m.lse_b.shape[1] = 3;
    try {
      pjtest::engine().merge_attention_states(m);
      FAIL("no error");
    } catch (const InvalidArgument& e) {
      CHECK(e.argument() == "lse_b");
    }
    m.lse_b = m.lse_a;
    m.out_b.dtype = DType::f16;
    CHECK_THROWS_AS(pjtest::engine().merge_attention_states(m), InvalidArgument);
    m.out_b = m.out_a;
    m.out = TensorView(x.data(), DType::f32, {2, 4, 8}, {40, 8, 1});  // rows do not flatten
    CHECK_THROWS_AS(pjtest::engine().merge_attention_states(m), InvalidArgument);
  }
}
