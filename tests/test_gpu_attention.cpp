// The kernels against the float64 CPU reference on fresh random problems.
// Every output is poisoned (NaN) before each run, so an unwritten element fails.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <future>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "attention/planner.hpp"
#include "attention/validate.hpp"
#include "gpu.hpp"
#include "jit/kernel_cache.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"

using namespace pagedjit;

namespace {

double tolerance(DType dt) {
  return dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1e-2;
}
double tolerance(DType in, DType out) {
  return std::max(tolerance(in), tolerance(out));
}

struct Case {
  testing::ProblemConfig cfg;
  PagedAttentionOptions opts;
  std::string describe() const {
    const KernelConfig k = opts.kernel_config.value_or(KernelConfig{});
    return fmt::format("{} splits={} window={} softcap={} lse={} max_ctx={} holes={} share={} config={}/{}/{}/{}",
                       cfg.describe(), opts.num_splits, opts.sliding_window ? *opts.sliding_window : 0,
                       opts.attn_logits_soft_cap ? *opts.attn_logits_soft_cap : 0.f, cfg.with_lse,
                       opts.max_context_len ? *opts.max_context_len : -1, cfg.holes, cfg.share_pages, k.tile_tokens,
                       k.warps, k.stages, k.chunk_tokens);
  }
};

int pick(std::mt19937_64& rng, std::initializer_list<int> v) {
  return *(v.begin() + std::ptrdiff_t(rng() % v.size()));
}

// A random valid call over the space the engine supports.
Case random_case(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uni = [&](int lo, int hi) { return lo + int(rng() % std::uint64_t(hi - lo + 1)); };
  Case c;
  testing::ProblemConfig& g = c.cfg;
  g.seed = seed;
  g.dtype = std::array<DType, 3>{DType::bf16, DType::f16, DType::f32}[rng() % 3];
  g.out_dtype = rng() % 4 == 0 ? std::array<DType, 3>{DType::bf16, DType::f16, DType::f32}[rng() % 3] : g.dtype;
  g.head_dim = pick(rng, {64, 128, 256, 64, 128, 16, 80, 96, 192, 272, 512});
  g.page_size = rng() % 2 ? 16 : 1 << uni(0, 8);
  g.num_kv_heads = uni(1, 4);
  const int group = pick(rng, {1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 32, 64});
  if (group > 16) g.num_kv_heads = std::min(g.num_kv_heads, 2);  // keeps the CPU reference quick
  g.num_heads = g.num_kv_heads * group;
  g.layout = std::array<CacheLayout, 3>{CacheLayout::blocks_heads, CacheLayout::heads_blocks,
                                        CacheLayout::blocks_tokens}[rng() % 3];
  g.pad_elems = rng() % 4 == 0 ? 16 : 0;
  const int seqs = uni(1, 6);
  g.context_lens.clear();
  for (int s = 0; s < seqs; ++s) {
    switch (rng() % 6) {
      case 0:
        g.context_lens.push_back(uni(1, 3));
        break;
      case 1:
        g.context_lens.push_back(g.page_size * uni(1, 8) + uni(-1, 1));
        break;
      case 2:
        g.context_lens.push_back(uni(0, 2) == 0 ? 0 : uni(1, 64));
        break;
      default:
        g.context_lens.push_back(uni(1, 700));
        break;
    }
    g.context_lens.back() = std::max(0, g.context_lens.back());
  }
  if (rng() % 5 == 0)
    g.max_blocks =
        (*std::max_element(g.context_lens.begin(), g.context_lens.end()) + g.page_size - 1) / g.page_size + uni(1, 4);
  g.holes = rng() % 6 == 0 ? 1 : 0;
  g.share_pages = rng() % 6 == 0;
  g.with_lse = rng() % 3 == 0;
  PagedAttentionOptions& o = c.opts;
  o.num_splits = pick(rng, {0, 0, 1, 2, 3, 5, 9, 64, 256});
  if (rng() % 5 == 0) o.sliding_window = pick(rng, {1, 7, 64, 300, 5000});
  if (rng() % 5 == 0) o.attn_logits_soft_cap = pick(rng, {1, 5, 30});
  if (rng() % 4 == 0) o.attn_scale = 0.05f * float(uni(1, 40));
  if (rng() % 4 == 0) o.max_context_len = uni(1, 800);  // may be smaller than a real length: a hint only
  if (rng() % 5 == 0 && g.head_dim <= 128 && g.dtype != DType::f32) {
    KernelConfig k;  // shapes that fit shared memory at head_dim <= 128
    k.warps = pick(rng, {1, 2, 4});
    k.tile_tokens = std::min(64, 16 * k.warps * pick(rng, {1, 2}));
    k.stages = uni(2, 4);
    if (rng() % 2) k.v_dims = std::max(16, g.head_dim / 32 * 16);  // about half, a multiple of 16
    if (rng() % 2) k.chunk_tokens = pick(rng, {16, 100, 256});
    o.kernel_config = k;
  } else if (rng() % 4 == 0 && g.head_dim % 32 == 0 && g.dtype != DType::f32) {
    KernelConfig k;  // warp pairs that split the output dims (pj::dim_split): whole 16-dim steps each
    k.warps = pick(rng, {2, 4});
    k.tile_tokens = 8 * k.warps;
    k.stages = uni(2, 3);
    o.kernel_config = k;
  }
  return c;
}

// Runs one case: poison, launch, compare. Returns the relative error.
// Runs `c` on `prob` (made from c.cfg, possibly edited) and checks it against the CPU reference.
double run_problem(const Case& c, testing::DeviceProblem& prob, CUstream stream = nullptr) {
  PagedAttentionOptions o = c.opts;
  o.return_lse = c.cfg.with_lse;
  prob.poison_outputs();
  pjtest::engine().paged_attention(prob.args(), o, stream);
  check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
  const testing::ErrorStats e = prob.check(o);
  const double tol = tolerance(c.cfg.dtype, c.cfg.out_dtype);
  INFO(c.describe());
  INFO(fmt::format("rel_l2={:.3e} max_abs={:.3e} nonfinite={} lse_ok={} lse_max_abs={:.3e}", e.rel_l2, e.max_abs,
                   e.nonfinite, e.lse_ok, e.lse_max_abs));
  CHECK(e.nonfinite == 0);
  CHECK(e.rel_l2 < tol);
  CHECK(e.lse_ok);
  CHECK(e.lse_max_abs < (c.cfg.dtype == DType::f32 ? 1e-4 : 2e-2));
  return e.rel_l2;
}

double run_case(const Case& c, CUstream stream = nullptr) {
  testing::DeviceProblem prob(c.cfg);
  return run_problem(c, prob, stream);
}

// Compiles the kernels of many cases in parallel before they run one by one.
void warm(const std::vector<Case>& cases) {
  std::set<jit::KernelSpec> specs;
  for (const Case& c : cases) {
    const testing::HostProblem host(c.cfg);
    PagedAttentionOptions o = c.opts;
    o.return_lse = c.cfg.with_lse;
    const auto plan = attention::make_plan(validate_call(host.args(), o), o, pjtest::engine().device());
    specs.insert(plan.decode);
  }
  std::vector<std::future<void>> jobs;
  for (const auto& s : specs)
    jobs.push_back(std::async(std::launch::async, [s] { jit::KernelCache::global().get(s); }));
  for (auto& j : jobs) j.get();
  MESSAGE(fmt::format("compiled {} specializations", specs.size()));
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu: seed example, bf16, all split modes" * pjtest::skip_without_gpu()) {
    for (int splits : {0, 1, 2, 4}) {
      Case c;
      c.cfg.context_lens = {32, 64, 48, 80};
      c.cfg.max_blocks = 8;
      c.cfg.spare_blocks = 86;
      c.opts.num_splits = splits;
      run_case(c);
    }
  }

  TEST_CASE("gpu: random configurations against the float64 reference" * pjtest::skip_without_gpu()) {
    // PAGEDJIT_TEST_CONFIGS sets the count (under compute-sanitizer 24 unless set).
    const char* env = std::getenv("PAGEDJIT_TEST_CONFIGS");
    const int n = env ? std::max(1, std::atoi(env)) : pjtest::under_sanitizer() ? 24 : 1000;
    std::vector<Case> cases;
    for (int i = 0; i < n; ++i) cases.push_back(random_case(1000 + std::uint64_t(i)));
    warm(cases);
    double worst_ratio = 0, worst_f32 = 0;
    for (const Case& c : cases) {
      const double e = run_case(c);
      worst_ratio = std::max(worst_ratio, e / tolerance(c.cfg.dtype, c.cfg.out_dtype));
      if (c.cfg.dtype == DType::f32 && c.cfg.out_dtype == DType::f32) worst_f32 = std::max(worst_f32, e);
    }
    MESSAGE(fmt::format("{} random configurations; worst error/tolerance {:.3f}; worst fp32->fp32 rel L2 {:.2e}", n,
                        worst_ratio, worst_f32));
  }

  TEST_CASE("gpu: edge cases" * pjtest::skip_without_gpu()) {
    Case c;
    c.cfg.dtype = c.cfg.out_dtype = DType::f32;
    c.cfg.num_heads = 8;
    c.cfg.num_kv_heads = 2;
    c.cfg.head_dim = 128;
    c.cfg.with_lse = true;
    SUBCASE("zero, one and page-boundary lengths") {
      c.cfg.context_lens = {0, 1, 15, 16, 17, 0, 63, 64, 65};
    }
    SUBCASE("partition boundaries +-1 with 4 splits") {
      c.cfg.context_lens = {255, 256, 257, 511, 512, 513};
      c.opts.num_splits = 4;
    }
    SUBCASE("window of 1 and window longer than the context") {
      c.cfg.context_lens = {1, 50, 300};
      c.opts.sliding_window = 1;
      SUBCASE("") {}
      SUBCASE("long") {
        c.opts.sliding_window = 100000;
      }
    }
    SUBCASE("a -1 inside the used range is masked, never read") {
      c.cfg.context_lens = {100, 200, 40};
      c.cfg.holes = 2;
    }
    SUBCASE("prefix sharing: one physical page in several tables") {
      c.cfg.context_lens = {40, 40, 33, 90};
      c.cfg.share_pages = true;
    }
    SUBCASE("max_context_len smaller than a real length") {
      c.cfg.context_lens = {1000, 10};
      c.opts.max_context_len = 16;
      c.opts.num_splits = 0;
    }
    SUBCASE("all sequences empty") {
      c.cfg.context_lens = {0, 0};
    }
    SUBCASE("bf16 with 64 splits of a long context") {
      c.cfg.dtype = c.cfg.out_dtype = DType::bf16;
      c.cfg.context_lens = {4000};
      c.opts.num_splits = 64;
    }
    run_case(c);
  }

  TEST_CASE("gpu: warps that split the output dims match the reference" * pjtest::skip_without_gpu()) {
    // More warps than 16-token slices of a tile: warp groups take parts of the
    // output dims (pj::dim_split); 256-dim heads then stage tiles through
    // registers. Every dtype path, partial last tiles, splits, windows, q_len 3,
    // and dim chunks (v_dims) whose last one leaves a warp group part or none
    // of its dims (272 = 160 + 112: 80 + 32 dims; 192 + 80: 48 + 32 + 0 + 0).
    struct Shape {
      DType dtype;
      std::optional<DType> kv;
      int head_dim, tile, warps, stages, v_dims = 0;
    };
    const Shape shapes[] = {
        {DType::bf16, {}, 256, 32, 4, 2},
        {DType::f16, {}, 256, 16, 2, 3},
        {DType::bf16, {}, 256, 64, 8, 2},
        {DType::bf16, {}, 256, 32, 8, 2},
        {DType::f16, {}, 512, 32, 4, 2},
        {DType::bf16, {}, 96, 16, 2, 2},
        {DType::bf16, DType::e4m3, 256, 32, 4, 3},
        {DType::f16, DType::e5m2, 128, 16, 2, 2},
        {DType::bf16, {}, 272, 32, 4, 2, 160},
        {DType::f16, {}, 272, 16, 4, 2, 192},
        {DType::bf16, DType::e4m3, 272, 32, 4, 2, 160},
        {DType::f16, DType::e4m3, 96, 16, 2, 2},
    };
    std::vector<Case> cases;
    std::uint64_t seed = 0xD5;
    for (const Shape& sh : shapes)
      for (int variant = 0; variant < 4; ++variant) {
        Case c;
        c.cfg.seed = ++seed;
        c.cfg.dtype = c.cfg.out_dtype = sh.dtype;
        c.cfg.kv_dtype = sh.kv;
        c.cfg.kv_scales = sh.kv ? variant % 3 : 0;
        c.cfg.head_dim = sh.head_dim;
        c.cfg.num_kv_heads = 2;
        c.cfg.num_heads = variant == 2 ? 2 : 8;  // MHA and a group of 4
        c.cfg.q_len = variant == 3 ? 3 : 1;
        c.cfg.context_lens = {1, 37, 300, 1000};
        c.cfg.with_lse = true;
        c.opts.kernel_config = KernelConfig{sh.tile, sh.warps, sh.stages, 0, sh.v_dims};
        c.opts.num_splits = variant == 1 ? 3 : 0;
        if (variant == 2) c.opts.sliding_window = 100;
        cases.push_back(c);
      }
    warm(cases);
    for (const Case& c : cases) run_case(c);
  }

  TEST_CASE("gpu: 4096 sequences in one call" * pjtest::skip_without_gpu()) {
    // Under compute-sanitizer 512 sequences: still 1024 CTAs, several waves of the SMs.
    const int seqs = pjtest::under_sanitizer() ? 512 : 4096;
    Case c;
    c.cfg.num_heads = 8;
    c.cfg.num_kv_heads = 2;
    c.cfg.head_dim = 64;
    std::mt19937 rng(7);
    for (int i = 0; i < seqs; ++i) c.cfg.context_lens.push_back(int(rng() % 40));
    MESSAGE(seqs, " sequences");
    run_case(c);
  }

  TEST_CASE("gpu: a 512k-token context, automatic and 256 partitions" * pjtest::skip_without_gpu()) {
    // Under compute-sanitizer 32k tokens: both runs still split the context
    // 256 ways (the heuristic's cap at 128-token partitions, then the forced
    // count) and merge 256 partials, as at 512k.
    const int tokens = (pjtest::under_sanitizer() ? 32 : 512) * 1024 - 3;
    MESSAGE(tokens, " tokens");
    for (int splits : {0, 256}) {
      Case c;
      c.cfg.num_heads = 8;
      c.cfg.num_kv_heads = 1;
      c.cfg.head_dim = 64;
      c.cfg.context_lens = {tokens};
      c.opts.num_splits = splits;
      run_case(c);
    }
  }

  TEST_CASE("gpu: a cache over 4 GiB, pages addressed past 2^31 elements" * pjtest::skip_without_gpu()) {
    // A small problem whose pages are placed at physical page 2^20 and beyond
    // of an 8 GiB cache (page stride 2048 elements): offsets reach 2^31+.
    //
    // Under compute-sanitizer only the pages the call reads are allocated (the
    // tools would otherwise track 8 GiB): the caches' base pointers are placed
    // 2^20 pages (4 GiB) before that allocation. The kernel computes the same
    // offsets past 2^31 elements from the same table; the base itself is never
    // dereferenced, and an offset computed in 32 bits would land outside the
    // allocation, which memcheck reports.
    testing::ProblemConfig cfg;
    cfg.num_heads = 4;
    cfg.num_kv_heads = 1;
    cfg.head_dim = 128;
    cfg.context_lens = {700, 33};
    const testing::HostProblem host(cfg);
    const std::int64_t base = std::int64_t(1) << 20, pages = base + host.num_blocks();
    const std::int64_t page_bytes = 16 * 128 * 2;
    const std::uint64_t before = std::uint64_t(base * page_bytes);  // bytes from the base to page 2^20
    DeviceBuffer k, v;
    std::uint64_t skipped = 0;  // bytes of the cache before the allocation (sparse) or 0
    if (pjtest::under_sanitizer()) {
      k = DeviceBuffer(std::size_t(host.num_blocks() * page_bytes));
      v = DeviceBuffer(std::size_t(host.num_blocks() * page_bytes));
      if (k.ptr() > before && v.ptr() > before) skipped = before;  // (else: the full cache after all)
    }
    if (!skipped) {
      k = DeviceBuffer(std::size_t(pages * page_bytes));
      v = DeviceBuffer(std::size_t(pages * page_bytes));
    }
    MESSAGE((skipped ? "sparse: only the pages read are allocated, the bases 4 GiB before them"
                     : "full key and value caches of 4 GiB each"));
    k.upload(host.k.data(), host.k.size(), std::size_t(before - skipped));
    v.upload(host.v.data(), host.v.size(), std::size_t(before - skipped));
    std::vector<std::int32_t> table = host.table;
    for (auto& e : table)
      if (e >= 0) e += std::int32_t(base);
    DeviceBuffer q(host.q.size()), lens(host.lens.size() * 4), tab(table.size() * 4), out(host.q.size());
    q.upload(host.q.data(), host.q.size());
    lens.upload(host.lens.data(), host.lens.size() * 4);
    tab.upload(table.data(), table.size() * 4);
    PagedAttentionArgs a = host.args();
    a.query.data = q.data();
    a.key_cache.data = reinterpret_cast<void*>(k.ptr() - skipped);
    a.value_cache.data = reinterpret_cast<void*>(v.ptr() - skipped);
    a.key_cache.shape[0] = a.value_cache.shape[0] = pages;
    a.context_lens.data = lens.data();
    a.block_tables.data = tab.data();
    a.output.data = out.data();
    check(driver().cuMemsetD8(out.ptr(), 0xff, out.size()), "cuMemsetD8");
    pjtest::engine().paged_attention(a, {}, nullptr);
    check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
    std::vector<std::uint16_t> raw(host.q.size() / 2);
    out.download(raw.data(), raw.size() * 2);
    std::vector<float> got;
    for (std::size_t i = 0; i < raw.size(); ++i) got.push_back(load_element(raw.data(), std::int64_t(i), DType::bf16));
    const testing::ErrorStats e = testing::compare(got, reference_paged_attention(host.args(), {}).output);
    CHECK(e.nonfinite == 0);
    CHECK(e.rel_l2 < 1e-2);
  }

  TEST_CASE("gpu: batch-invariant mode: a sequence's output is bitwise the same in any batch" *
            pjtest::skip_without_gpu()) {
    // The sequence under test (3000 tokens, seed 11) sits at different
    // positions of batches of different sizes and lengths.
    const std::vector<std::vector<int>> batches = {{3000}, {17, 3000, 9000}, {5000, 100, 2, 3000, 4096, 700}};
    const std::vector<std::size_t> where = {0, 1, 3};
    PagedAttentionOptions o;
    o.batch_invariant = true;
    std::vector<std::uint16_t> first;
    for (std::size_t b = 0; b < batches.size(); ++b) {
      testing::ProblemConfig c;
      c.num_heads = 32;
      c.num_kv_heads = 8;
      c.head_dim = 128;
      c.context_lens = batches[b];
      testing::DeviceProblem prob(c);
      // Give the sequence under test the same data in every batch: copy the
      // first batch's query row and its pages' contents through the table.
      static testing::HostProblem ref_host([] {
        testing::ProblemConfig r;
        r.num_heads = 32;
        r.num_kv_heads = 8;
        r.head_dim = 128;
        r.context_lens = {3000};
        r.seed = 11;
        return r;
      }());
      const PagedAttentionArgs a = prob.args();
      const std::size_t row_bytes = 32 * 128 * 2, page_bytes = std::size_t(8) * 16 * 128 * 2;
      check(driver().cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(a.query.data) + where[b] * row_bytes, ref_host.q.data(),
                                  row_bytes),
            "cuMemcpyHtoD");
      for (int pg = 0; pg < (3000 + 15) / 16; ++pg) {
        const std::size_t dst =
            std::size_t(prob.host().table[where[b] * std::size_t(prob.host().config().max_blocks) + std::size_t(pg)]) *
            page_bytes;
        const std::size_t src = std::size_t(ref_host.table[std::size_t(pg)]) * page_bytes;
        check(driver().cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(a.key_cache.data) + dst, ref_host.k.data() + src,
                                    page_bytes),
              "cuMemcpyHtoD");
        check(driver().cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(a.value_cache.data) + dst, ref_host.v.data() + src,
                                    page_bytes),
              "cuMemcpyHtoD");
      }
      prob.poison_outputs();
      const LaunchInfo info = pjtest::engine().paged_attention(a, o, nullptr);
      CHECK(info.chunk_tokens > 0);
      check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
      std::vector<std::uint16_t> out(32 * 128);
      check(driver().cuMemcpyDtoH(out.data(), reinterpret_cast<CUdeviceptr>(a.output.data) + where[b] * row_bytes,
                                  row_bytes),
            "cuMemcpyDtoH");
      if (b == 0) {
        first = out;
        const auto want = reference_paged_attention(ref_host.args(), o);
        std::vector<float> got;
        for (auto x : out) got.push_back(load_element(&x, 0, DType::bf16));
        CHECK(testing::compare(got, want.output).rel_l2 < 1e-2);
      } else {
        CAPTURE(b);
        CHECK(std::memcmp(first.data(), out.data(), row_bytes) == 0);
      }
    }
  }

  TEST_CASE("gpu: deterministic, bitwise, across calls and streams" * pjtest::skip_without_gpu()) {
    testing::ProblemConfig cfg;
    cfg.num_heads = 32;
    cfg.num_kv_heads = 8;
    cfg.head_dim = 128;
    cfg.context_lens = {3000, 17, 1200, 4096};
    testing::DeviceProblem prob(cfg);
    const DriverApi& d = driver();
    CUstream s2;
    check(d.cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    std::vector<float> first;
    for (int i = 0; i < 4; ++i) {
      prob.poison_outputs();
      pjtest::engine().paged_attention(prob.args(), {}, i % 2 ? s2 : nullptr);
      check(d.cuCtxSynchronize(), "cuCtxSynchronize");
      const std::vector<float> out = prob.output();
      if (i == 0)
        first = out;
      else
        CHECK(std::memcmp(first.data(), out.data(), out.size() * 4) == 0);
    }
    d.cuStreamDestroy(s2);
  }

  TEST_CASE("gpu: cluster merge, global merge, with and without PDL: the same bits, and right" *
            pjtest::skip_without_gpu()) {
    const DriverApi& d = driver();
    EngineOptions plain;
    plain.cluster_merge = false;
    plain.programmatic_launch = false;
    Engine reference_engine(0, plain);
    Engine& engine = pjtest::engine();  // defaults: clusters and PDL where the GPU has them
    struct Variant {
      int head_dim, group, q_len, splits;
      std::vector<int> lens;  // ragged: some partitions are empty (0 tokens, or shorter than the rest)
      std::optional<std::int64_t> window;
    };
    const std::vector<Variant> variants = {
        {128, 4, 1, 8, {1024, 0, 3, 700, 129}, {}},  // the tiny call's shape, plus short ones
        {128, 8, 1, 2, {4096, 1500}, {}},
        {64, 1, 1, 3, {333, 2000, 1}, {}},
        {128, 4, 3, 5, {900, 17}, {}},
        {512, 2, 1, 4, {800, 64}, {}},  // two output-dim chunks per head
        {128, 4, 1, 6, {2000, 300}, 700},
    };
    for (const Variant& v : variants) {
      testing::ProblemConfig cfg;
      cfg.num_kv_heads = 1;  // grids of at most half the SMs: clusters apply
      cfg.num_heads = v.group;
      cfg.head_dim = v.head_dim;
      cfg.q_len = v.q_len;
      cfg.context_lens = v.lens;
      cfg.with_lse = true;
      cfg.seed = std::uint64_t(v.splits * 1000 + v.head_dim);
      testing::DeviceProblem prob(cfg);
      PagedAttentionOptions o;
      o.num_splits = v.splits;
      o.return_lse = true;
      o.sliding_window = v.window;
      INFO(cfg.describe(), " splits=", v.splits);
      const LaunchInfo info = engine.plan(prob.args(), o);
      if (engine.device().cc_major >= 9) {
        CHECK(info.cluster == v.splits);
        CHECK(info.workspace_bytes == 0);
      }
      CHECK(reference_engine.plan(prob.args(), o).cluster == 1);
      std::vector<float> out[2], lse[2];
      for (int i = 0; i < 2; ++i) {
        prob.poison_outputs();
        (i ? reference_engine : engine).paged_attention(prob.args(), o, nullptr);
        check(d.cuCtxSynchronize(), "cuCtxSynchronize");
        out[i] = prob.output();
        lse[i] = prob.lse();
      }
      CHECK(std::memcmp(out[0].data(), out[1].data(), out[0].size() * 4) == 0);
      CHECK(std::memcmp(lse[0].data(), lse[1].data(), lse[0].size() * 4) == 0);
      // Captured in a graph (a cluster launch with PDL as a graph node), replayed twice.
      CUstream s;
      check(d.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
      engine.paged_attention(prob.args(), o, s);  // any workspace is allocated before the capture
      check(d.cuStreamSynchronize(s), "cuStreamSynchronize");
      CUgraph graph;
      CUgraphExec exec;
      check(d.cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
      engine.paged_attention(prob.args(), o, s);
      check(d.cuStreamEndCapture(s, &graph), "cuStreamEndCapture");
      check(d.cuGraphInstantiate(&exec, graph, 0), "cuGraphInstantiate");
      for (int r = 0; r < 2; ++r) {
        prob.poison_outputs();
        check(d.cuGraphLaunch(exec, s), "cuGraphLaunch");
        check(d.cuStreamSynchronize(s), "cuStreamSynchronize");
        CHECK(std::memcmp(out[0].data(), prob.output().data(), out[0].size() * 4) == 0);
      }
      d.cuGraphExecDestroy(exec);
      d.cuGraphDestroy(graph);
      d.cuStreamDestroy(s);
      prob.poison_outputs();
      reference_engine.paged_attention(prob.args(), o, nullptr);
      check(d.cuCtxSynchronize(), "cuCtxSynchronize");
      const testing::ErrorStats e = prob.check(o);
      CHECK(e.nonfinite == 0);
      CHECK(e.rel_l2 < tolerance(cfg.dtype));
      CHECK(e.lse_ok);
    }
  }

  // The merge reads partials eight at a time: a first batch of empty
  // partitions (lse -inf) must neither break the merge nor hide a NaN.
  TEST_CASE("gpu: 16 partitions whose first 8 are empty merge right, and a NaN partial reaches the output" *
            pjtest::skip_without_gpu()) {
    Case c;
    c.cfg.num_kv_heads = 1;
    c.cfg.num_heads = 4;
    c.cfg.head_dim = 128;
    c.cfg.context_lens = {2048, 2048};
    c.cfg.with_lse = true;
    c.cfg.seed = 16;
    c.opts.num_splits = 16;  // 128-token partitions of 8 pages; more than a cluster: the global merge
    const int pages = 2048 / 16 / c.cfg.page_size;
    testing::HostProblem host(c.cfg);
    const std::size_t mb = std::size_t(host.table.size() / 2);  // table columns per sequence
    // Sequence 0: partitions 0-7 masked (their pages -1), so only 8-15 count.
    for (int i = 0; i < 8 * pages; ++i) host.table[std::size_t(i)] = -1;
    // Sequence 1: partitions 1-7 masked and a NaN key in partition 0, whose
    // partial then has lse -inf and a NaN output.
    for (int i = pages; i < 8 * pages; ++i) host.table[mb + std::size_t(i)] = -1;
    const PagedAttentionArgs a = host.args();
    const std::int64_t page = host.table[mb];
    REQUIRE(page >= 0);
    const std::int64_t nan_at = page * a.key_cache.strides[0] + 3 * a.key_cache.strides[2] + 5;  // slot 3, dim 5
    host.k[std::size_t(nan_at) * 2] = 0xc0, host.k[std::size_t(nan_at) * 2 + 1] = 0x7f;          // bf16 quiet NaN
    testing::DeviceProblem prob(std::move(host));
    const LaunchInfo info = pjtest::engine().plan(prob.args(), c.opts);
    REQUIRE(info.num_splits == 16);
    CHECK(info.cluster == 1);
    for (int splits : {16, 1}) {
      CAPTURE(splits);
      PagedAttentionOptions o = c.opts;
      o.num_splits = splits;
      o.return_lse = true;
      prob.poison_outputs();
      pjtest::engine().paged_attention(prob.args(), o, nullptr);
      check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
      const testing::ErrorStats e0 = prob.check(o, {0});
      CHECK(e0.nonfinite == 0);
      CHECK(e0.rel_l2 < tolerance(c.cfg.dtype, c.cfg.out_dtype));
      CHECK(e0.lse_ok);
      // Every row of sequence 1 saw the NaN key (one KV head): NaN out, split or not.
      const std::vector<float> out = prob.output();
      const std::size_t row = std::size_t(c.cfg.head_dim);
      for (int h = 0; h < c.cfg.num_heads; ++h) {
        const float* r = out.data() + (std::size_t(c.cfg.num_heads) + std::size_t(h)) * row;
        CHECK(std::any_of(r, r + row, [](float x) { return std::isnan(x); }));
      }
    }
  }

  TEST_CASE("gpu: a captured CUDA graph replays correctly as lengths, tables and caches change" *
            pjtest::skip_without_gpu()) {
    const DriverApi& d = driver();
    auto config = [](std::vector<int> lens, std::uint64_t seed) {
      testing::ProblemConfig c;
      c.num_heads = 32;
      c.num_kv_heads = 8;
      c.head_dim = 128;
      c.context_lens = std::move(lens);
      c.max_blocks = 256;  // the captured bound: 4096 tokens
      int used = 0;
      for (int l : c.context_lens) used += (l + 15) / 16;
      c.spare_blocks = 1024 - used;  // the same cache size for every replay
      c.seed = seed;
      return c;
    };
    testing::DeviceProblem live(config({3000, 17, 4096, 800}, 1));
    PagedAttentionOptions o;
    o.max_context_len = 4096;
    o.num_splits = 8;  // splits, so the graph also exercises the in-kernel merge and its counters
    PagedAttentionArgs args = live.args();
    const std::int64_t ws_bytes = pjtest::engine().workspace_bytes(args, o);
    REQUIRE(ws_bytes > 0);
    DeviceBuffer ws(static_cast<std::size_t>(ws_bytes));
    check(d.cuMemsetD8(ws.ptr(), 0, ws.size()), "cuMemsetD8");
    args.workspace = ws.data();
    args.workspace_bytes = ws_bytes;

    CUstream s;
    check(d.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    CUgraph graph;
    CUgraphExec exec;
    check(d.cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
    pjtest::engine().paged_attention(args, o, s);
    check(d.cuStreamEndCapture(s, &graph), "cuStreamEndCapture");
    check(d.cuGraphInstantiate(&exec, graph, 0), "cuGraphInstantiate");

    int replay = 0;
    for (const auto& lens :
         std::vector<std::vector<int>>{{3000, 17, 4096, 800}, {1, 4000, 0, 2048}, {4096, 4096, 5, 9}}) {
      CAPTURE(replay);
      testing::DeviceProblem fresh(config(lens, 100 + std::uint64_t(replay++)));
      pjtest::copy_inputs(args, fresh);
      live.poison_outputs();
      check(d.cuGraphLaunch(exec, s), "cuGraphLaunch");
      check(d.cuStreamSynchronize(s), "cuStreamSynchronize");
      // The live buffers now hold `fresh`'s inputs: compare with its reference.
      const std::vector<float> graph_out = live.output();
      const ReferenceOutputs want = reference_paged_attention(fresh.host().args(), o);
      const testing::ErrorStats e = testing::compare(graph_out, want.output);
      // The same call without the graph, and with the engine's own workspace,
      // to tell a graph problem from a kernel one.
      live.poison_outputs();
      pjtest::engine().paged_attention(args, o, s);
      check(d.cuStreamSynchronize(s), "cuStreamSynchronize");
      const testing::ErrorStats direct = testing::compare(live.output(), want.output);
      live.poison_outputs();
      PagedAttentionArgs own = args;
      own.workspace = nullptr;
      own.workspace_bytes = 0;
      pjtest::engine().paged_attention(own, o, s);
      check(d.cuStreamSynchronize(s), "cuStreamSynchronize");
      const testing::ErrorStats engine_ws = testing::compare(live.output(), want.output);
      std::string per_seq;
      const std::size_t row = 32 * 128;
      for (std::size_t q = 0; q < lens.size(); ++q) {
        int bad = 0;
        for (std::size_t i = q * row; i < (q + 1) * row; ++i) bad += !std::isfinite(graph_out[i]);
        per_seq += fmt::format(" len {}: {} non-finite;", lens[q], bad);
      }
      INFO("graph replay per sequence:" << per_seq);
      INFO("without the graph: non-finite " << direct.nonfinite
                                            << "; with the engine's workspace: " << engine_ws.nonfinite);
      CHECK(engine_ws.nonfinite == 0);
      CHECK(direct.nonfinite == 0);
      CHECK(e.nonfinite == 0);
      CHECK(e.rel_l2 < 1e-2);
    }
    d.cuGraphExecDestroy(exec);
    d.cuGraphDestroy(graph);
    d.cuStreamDestroy(s);
  }

  TEST_CASE("gpu: the engine refuses to allocate during capture" * pjtest::skip_without_gpu()) {
    const DriverApi& d = driver();
    testing::ProblemConfig c;
    c.context_lens = {5000};
    c.num_heads = 8;
    c.num_kv_heads = 8;
    testing::DeviceProblem prob(c);
    PagedAttentionOptions o;
    o.num_splits = 16;       // more than a cluster merges: partials in a workspace
    Engine fresh_engine(0);  // no workspace on any stream yet
    CUstream s;
    check(d.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    check(d.cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
    CHECK_THROWS_AS(fresh_engine.paged_attention(prob.args(), o, s), InvalidArgument);
    CUgraph g = nullptr;
    d.cuStreamEndCapture(s, &g);
    if (g) d.cuGraphDestroy(g);
    d.cuStreamDestroy(s);
  }

  TEST_CASE("gpu: a workspace larger than the device is a clear error, and the engine stays usable" *
            pjtest::skip_without_gpu()) {
    testing::ProblemConfig big;
    big.num_heads = 64;
    big.num_kv_heads = 1;
    big.head_dim = 512;
    big.context_lens.assign(512, 16);
    testing::DeviceProblem prob(big);
    PagedAttentionOptions o;
    o.num_splits = 65535;  // partials of 512 x 64 x 65535 x 512 floats: terabytes
    Engine e(0);
    try {
      e.paged_attention(prob.args(), o, nullptr);
      FAIL("a terabyte workspace was allocated");
    } catch (const DriverError& err) {
      CHECK(err.code() == ErrorCode::driver_error);
      CHECK(err.result() == int(CUDA_ERROR_OUT_OF_MEMORY));
      CHECK(std::string(err.what()).find("cuMemAllocAsync") != std::string::npos);
    }
    Case c;  // the same engine, a normal split call
    c.cfg.context_lens = {3000, 40};
    c.opts.num_splits = 4;
    testing::DeviceProblem ok(c.cfg);
    ok.poison_outputs();
    e.paged_attention(ok.args(), c.opts, nullptr);
    check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
    const testing::ErrorStats stats = ok.check(c.opts);
    CHECK(stats.nonfinite == 0);
    CHECK(stats.rel_l2 < 1e-2);
  }

  TEST_CASE("gpu: a device ordinal that does not exist is no_device" * pjtest::skip_without_gpu()) {
    try {
      Engine e(device_count());
      FAIL("an engine was created for a missing device");
    } catch (const DriverError& e) {
      CHECK(e.code() == ErrorCode::no_device);
    }
  }

  TEST_CASE("gpu: validation mode reports a context longer than the table's capacity" * pjtest::skip_without_gpu()) {
    testing::ProblemConfig cfg;
    cfg.context_lens = {40, 100};
    testing::DeviceProblem prob(cfg);
    PagedAttentionArgs a = prob.args();
    const std::int32_t too_long = std::int32_t(a.block_tables.shape[1] * 16 + 1);
    check(driver().cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(a.context_lens.data) + 4, &too_long, 4), "cuMemcpyHtoD");
    EngineOptions eo;
    eo.validate_device_data = true;
    Engine checked(0, eo);
    try {
      checked.paged_attention(a, {}, nullptr);
      FAIL("context longer than the table not reported");
    } catch (const DeviceDataError& e) {
      CHECK(e.sequence() == 1);
      CHECK(std::string(e.what()).find("context_lens[1]") != std::string::npos);
    }
    // Without the validation mode the call still runs, reading no further than
    // the table's capacity (the claimed tokens include poisoned slots, so only
    // the untouched sequence 0 is compared).
    prob.poison_outputs();
    pjtest::engine().paged_attention(a, {}, nullptr);
    check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
    const std::vector<float> got = prob.output();
    const ReferenceOutputs want = reference_paged_attention(prob.host().args(), {}, {0});
    const std::vector<float> seq0(got.begin(), got.begin() + std::ptrdiff_t(want.output.size()));
    CHECK(testing::compare(seq0, want.output).rel_l2 < 1e-2);
  }

  TEST_CASE("gpu: 16 threads share one engine, each on its own stream, compiling as they go" *
            pjtest::skip_without_gpu()) {
    Engine shared(0);
    std::atomic<int> failures{0}, calls{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 16; ++t)
      threads.emplace_back([&, t] {
        try {
          check(driver().cuCtxSetCurrent(nullptr), "cuCtxSetCurrent");  // the engine must bring its own context
          CUstream s;
          {
            // A context is needed to create the stream: borrow the engine's by a call-free route.
            CUcontext ctx;
            check(driver().cuDevicePrimaryCtxRetain(&ctx, 0), "cuDevicePrimaryCtxRetain");
            check(driver().cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
            check(driver().cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
          }
          for (int i = 0; i < 6; ++i) {
            testing::ProblemConfig c;
            c.dtype = c.out_dtype = std::array<DType, 3>{DType::bf16, DType::f16, DType::f32}[(t + i) % 3];
            c.head_dim = 16 * (1 + (t * 7 + i) % 12);  // many specializations, compiled concurrently
            c.num_heads = 8;
            c.num_kv_heads = 2;
            c.context_lens = {int(50 + 37 * t + 11 * i), 300};
            c.seed = std::uint64_t(1000 * t + i);
            testing::DeviceProblem prob(c);
            PagedAttentionOptions o;
            o.num_splits = i % 3;
            shared.paged_attention(prob.args(), o, s);
            check(driver().cuStreamSynchronize(s), "cuStreamSynchronize");
            const testing::ErrorStats e = prob.check(o);
            if (e.nonfinite || e.rel_l2 > tolerance(c.dtype)) ++failures;
            ++calls;
          }
          check(driver().cuStreamDestroy(s), "cuStreamDestroy");
          check(driver().cuDevicePrimaryCtxRelease(0), "cuDevicePrimaryCtxRelease");
        } catch (const std::exception& e) {
          ++failures;
          MESSAGE("thread ", t, ": ", e.what());
        }
      });
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
    CHECK(calls == 96);
  }

  TEST_CASE("gpu: two engines on one device; one destroyed while the other keeps working" *
            pjtest::skip_without_gpu()) {
    testing::ProblemConfig c;
    c.context_lens = {500, 2000};
    c.num_heads = 16;
    c.num_kv_heads = 4;
    testing::DeviceProblem prob(c);
    auto a = std::make_unique<Engine>(0);
    Engine b(0);
    PagedAttentionOptions o;
    o.num_splits = 3;
    prob.poison_outputs();
    a->paged_attention(prob.args(), o, nullptr);
    b.paged_attention(prob.args(), o, nullptr);
    a.reset();  // destroys its workspace and modules; b's stay valid
    prob.poison_outputs();
    b.paged_attention(prob.args(), o, nullptr);
    check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
    const testing::ErrorStats e = prob.check(o);
    CHECK(e.nonfinite == 0);
    CHECK(e.rel_l2 < 1e-2);
  }

  TEST_CASE("gpu: validation mode reports the first bad sequence" * pjtest::skip_without_gpu()) {
    testing::ProblemConfig cfg;
    cfg.context_lens = {40, 100, 70};
    cfg.holes = 2;  // sequences 0 and 1 get a -1 in their used range
    testing::DeviceProblem prob(cfg);
    EngineOptions eo;
    eo.validate_device_data = true;
    Engine checked(0, eo);
    try {
      checked.paged_attention(prob.args(), {}, nullptr);
      FAIL("bad block table not reported");
    } catch (const DeviceDataError& e) {
      CHECK(e.sequence() == 0);
      CHECK(std::string(e.what()).find("block_tables[0]") != std::string::npos);
    }
  }
}

// An engine's per-stream workspaces and its teardown on a device (the CPU
// suite checks the same logic against a fake driver: test_engine_lifetime.cpp).
namespace {

// Partials merged in global memory (no clusters), so every call below uses
// the engine's per-stream workspace.
EngineOptions workspace_merge() {
  EngineOptions e;
  e.cluster_merge = false;
  return e;
}

testing::ProblemConfig split_problem(int seed) {
  testing::ProblemConfig c;
  c.num_heads = 16;
  c.num_kv_heads = 4;
  c.head_dim = 128;
  c.context_lens = {4000 + 97 * seed, 3000, 5000 - 31 * seed};
  c.seed = std::uint64_t(seed);
  return c;
}

PagedAttentionOptions sixteen_splits() {
  PagedAttentionOptions o;
  o.num_splits = 16;
  return o;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu: threads on CU_STREAM_PER_THREAD share one engine, each with its own workspace" *
            pjtest::skip_without_gpu()) {
    Engine shared(0, workspace_merge());
    CUcontext ctx = nullptr;
    check(driver().cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&, t] {
        try {
          check(driver().cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
          testing::DeviceProblem prob(split_problem(t));
          for (int i = 0; i < 4; ++i) {
            prob.poison_outputs();
            CHECK(shared.paged_attention(prob.args(), sixteen_splits(), CU_STREAM_PER_THREAD).workspace_bytes > 0);
            check(driver().cuStreamSynchronize(CU_STREAM_PER_THREAD), "cuStreamSynchronize");
            const testing::ErrorStats e = prob.check(sixteen_splits());
            if (e.nonfinite || e.rel_l2 > 1e-2) ++failures;
          }
        } catch (const std::exception& e) {
          ++failures;
          MESSAGE("thread ", t, ": ", e.what());
        }
      });
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
  }

  TEST_CASE("gpu: a stream made with a destroyed stream's handle, while its launch still runs" *
            pjtest::skip_without_gpu()) {
    Engine e(0, workspace_merge());
    testing::DeviceProblem a(split_problem(1)), b(split_problem(2));
    a.poison_outputs();
    b.poison_outputs();
    CUstream s1 = nullptr, s2 = nullptr;
    check(driver().cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    e.paged_attention(a.args(), sixteen_splits(), s1);
    check(driver().cuStreamDestroy(s1), "cuStreamDestroy");  // its launch may still run
    check(driver().cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    MESSAGE("handle reused: ", s1 == s2);
    e.paged_attention(b.args(), sixteen_splits(), s2);
    check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
    for (testing::DeviceProblem* p : {&a, &b}) {
      const testing::ErrorStats err = p->check(sixteen_splits());
      CHECK(err.nonfinite == 0);
      CHECK(err.rel_l2 < 1e-2);
    }
    check(driver().cuStreamDestroy(s2), "cuStreamDestroy");
  }

  TEST_CASE("gpu: an engine destroyed while its launches run: they finish right, its workspaces freed after" *
            pjtest::skip_without_gpu()) {
    testing::DeviceProblem prob(split_problem(3));
    prob.poison_outputs();
    CUstream s = nullptr;
    check(driver().cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    {
      Engine e(0, workspace_merge());
      for (int i = 0; i < 3; ++i) e.paged_attention(prob.args(), sixteen_splits(), s);
    }  // no synchronization before this point
    check(driver().cuStreamSynchronize(s), "cuStreamSynchronize");
    const testing::ErrorStats err = prob.check(sixteen_splits());
    CHECK(err.nonfinite == 0);
    CHECK(err.rel_l2 < 1e-2);
    check(driver().cuStreamDestroy(s), "cuStreamDestroy");
  }

  TEST_CASE("gpu: calls on 200 streams, workspaces evicted as they go, stay right" * pjtest::skip_without_gpu()) {
    Engine e(0, workspace_merge());
    testing::DeviceProblem prob(split_problem(4));
    std::vector<CUstream> streams(200);
    for (CUstream& s : streams) check(driver().cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    for (int round = 0; round < 2; ++round) {
      prob.poison_outputs();
      for (CUstream s : streams) {
        e.paged_attention(prob.args(), sixteen_splits(), s);
        check(driver().cuStreamSynchronize(s), "cuStreamSynchronize");  // one output buffer for all
      }
    }
    const testing::ErrorStats err = prob.check(sixteen_splits());
    CHECK(err.nonfinite == 0);
    CHECK(err.rel_l2 < 1e-2);
    for (CUstream s : streams) check(driver().cuStreamDestroy(s), "cuStreamDestroy");
  }
}
