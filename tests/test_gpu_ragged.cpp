// The ragged call against the float64 reference: Engine::ragged_paged_attention
// (the public entry point), and the prefill kernel launched directly from its
// plan (plan_prefill, prefill_params), so the kernel is tested apart from the
// engine's dispatch. Every output and lse byte is poisoned (0xff: NaN in
// every float format) before each run: an unwritten row of a computed
// sequence fails, and a written row of a skipped one (past seq_count, or
// owned by no sequence) fails too.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "attention/prefill.hpp"
#include "gpu.hpp"
#include "jit/kernel_cache.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "ragged_problem.hpp"

using namespace pagedjit;
using pjtest::RaggedConfig;

namespace {

// A query in fp16/bf16 accumulates P.V with P rounded to the query's type.
double tolerance(const RaggedConfig& c) {
  auto tol = [](DType d) { return d == DType::f32 ? 1e-5 : d == DType::f16 ? 2e-3 : 1e-2; };
  return std::max({tol(c.dtype), tol(c.out_dtype), c.kv_dtype ? 1e-2 : 0.0});
}

struct Case {
  RaggedConfig cfg;
  PagedAttentionOptions opts;
  std::string describe() const {
    return fmt::format(
        "{} window={} softcap={} scale={}", cfg.describe(), opts.sliding_window ? *opts.sliding_window : 0,
        opts.attn_logits_soft_cap ? *opts.attn_logits_soft_cap : 0.f, opts.attn_scale ? *opts.attn_scale : 0.f);
  }
};

// The prefill kernel, loaded once per specialization into the current context.
CUfunction prefill_function(const jit::KernelSpec& spec, int smem) {
  static std::mutex mu;
  static std::map<jit::KernelSpec, std::pair<CUkernel, CUfunction>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  const DriverApi& d = driver();
  auto it = loaded.find(spec);
  if (it == loaded.end()) {
    const auto compiled = jit::KernelCache::global().get(spec);
    CUlibrary lib = nullptr;
    CUkernel kernel = nullptr;
    CUfunction f = nullptr;
    check(d.cuLibraryLoadData(&lib, compiled->binary.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
          "cuLibraryLoadData");
    check(d.cuLibraryGetKernel(&kernel, lib, compiled->lowered_name.c_str()), "cuLibraryGetKernel");
    check(d.cuKernelGetFunction(&f, kernel), "cuKernelGetFunction");
    it = loaded.emplace(spec, std::make_pair(kernel, f)).first;  // (the library stays loaded for the process)
  }
  CUdevice dev = 0;
  check(d.cuDeviceGet(&dev, pjtest::engine().device().ordinal), "cuDeviceGet");
  if (smem > 48 * 1024)
    check(d.cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem, it->second.first, dev),
          "cuKernelSetAttribute");
  return it->second.second;
}

// What the engine's ragged call does for a prefill: plan, fill, launch.
void launch_prefill(const pjtest::RaggedProblem& host, const pjtest::RaggedDevice& dev, const PagedAttentionOptions& o,
                    CUstream stream = nullptr) {
  const ProblemShape shape = host.shape();
  const attention::PrefillPlan plan = attention::plan_prefill(shape, o, pjtest::engine().device());
  INFO(plan.why_not);
  REQUIRE(plan.supported);
  pj::DecodeParams p = attention::prefill_params(dev.args(), o, shape, plan);
  void* params[] = {&p};
  const CUfunction f = prefill_function(plan.spec, plan.smem_bytes);
  check(driver().cuLaunchKernel(f, unsigned(plan.grid[0]), unsigned(plan.grid[1]), 1, unsigned(plan.threads), 1, 1,
                                unsigned(plan.smem_bytes), stream, params, nullptr),
        "cuLaunchKernel(paged_prefill)");
}

enum class Path { engine, kernel };

void run_case(const Case& c, Path path) {
  pjtest::RaggedProblem host(c.cfg);
  pjtest::RaggedDevice dev(host);
  PagedAttentionOptions o = c.opts;
  o.return_lse = c.cfg.with_lse;
  dev.poison();
  if (path == Path::engine)
    pjtest::engine().ragged_paged_attention(dev.args(), o);
  else
    launch_prefill(host, dev, o);
  check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
  const pjtest::RaggedCheck r = pjtest::check_ragged(host, dev, o);
  INFO(c.describe());
  INFO(fmt::format("rel_l2={:.3e} max_abs={:.3e} nonfinite={} touched={} lse_ok={} lse_max_abs={:.3e}", r.rel_l2,
                   r.max_abs, r.nonfinite, r.touched, r.lse_ok, r.lse_max_abs));
  CHECK(r.nonfinite == 0);
  CHECK(r.rel_l2 < tolerance(c.cfg));
  CHECK(r.touched == 0);
  CHECK(r.lse_ok);
  CHECK(r.lse_max_abs < 2e-2);
}

int pick(std::mt19937_64& rng, std::initializer_list<int> v) {
  return *(v.begin() + std::ptrdiff_t(rng() % v.size()));
}

// A random ragged call: prefill chunks up to 4096 tokens over contexts up to
// 8k mixed with decodes, verifications and empty sequences; the lengths
// shrink until the float64 reference stays affordable.
Case random_case(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uni = [&](int lo, int hi) { return lo + int(rng() % std::uint64_t(hi - lo + 1)); };
  Case c;
  RaggedConfig& g = c.cfg;
  g.seed = seed;
  g.dtype = rng() % 2 ? DType::bf16 : DType::f16;
  g.out_dtype = rng() % 5 == 0 ? DType::f32 : g.dtype;
  if (rng() % 4 == 0) g.kv_dtype = rng() % 2 ? DType::e4m3 : DType::e5m2;
  g.head_dim = pick(rng, {64, 128, 256, 64, 128, 96});
  g.num_kv_heads = uni(1, 2);
  g.num_heads = g.num_kv_heads * pick(rng, {1, 4, 7});
  g.page_size = pick(rng, {1, 16, 256, 16});
  const int seqs = uni(1, 4);
  for (int s = 0; s < seqs; ++s) {
    int q = 0;
    switch (rng() % 6) {
      case 0:
        q = rng() % 3 == 0 ? 0 : uni(1, 8);  // empty, decode or verification
        break;
      case 1:
      case 2:
        q = uni(1, 300);
        break;
      default:
        q = uni(1, 4096);
        break;
    }
    const int prefix = rng() % 3 == 0 ? 0 : uni(0, 8192 - std::min(q, 4096));
    g.q_lens.push_back(q);
    g.context_lens.push_back(q + prefix);
  }
  g.q_lens.erase(g.q_lens.begin());  // (the defaults' one sequence)
  g.context_lens.erase(g.context_lens.begin());
  g.sinks = rng() % 3 == 0;
  g.with_lse = rng() % 2 == 0;
  if (rng() % 5 == 0) g.seq_count = uni(0, seqs);
  g.holes = rng() % 6 == 0 ? 1 : 0;
  PagedAttentionOptions& o = c.opts;
  if (rng() % 4 == 0) o.sliding_window = pick(rng, {1, 7, 64, 300, 1000});
  if (rng() % 5 == 0) o.attn_logits_soft_cap = float(pick(rng, {5, 30}));
  // Keep the reference (multiply-adds over every visible key) affordable.
  const double budget = pjtest::under_sanitizer() ? 2e6 : 3e8;
  while (pjtest::RaggedProblem(g).reference_cost(o) > budget) {
    for (std::size_t s = 0; s < g.q_lens.size(); ++s) {
      g.q_lens[s] /= 2;
      g.context_lens[s] /= 2;
    }
  }
  return c;
}

// Hand-made cases for what random lengths rarely hit.
std::vector<Case> edge_cases() {
  std::vector<Case> cases;
  Case base;
  base.cfg.num_heads = 8, base.cfg.num_kv_heads = 2, base.cfg.head_dim = 128, base.cfg.with_lse = true;
  {
    Case c = base;  // an empty sequence, q_len == context_len, a chunk after a prefix, a decode
    c.cfg.q_lens = {0, 700, 300, 1};
    c.cfg.context_lens = {50, 700, 1500, 900};
    cases.push_back(c);
  }
  {
    Case c = base;  // a window smaller than the chunk, with sinks
    c.cfg.q_lens = {600, 33};
    c.cfg.context_lens = {1000, 33};
    c.cfg.sinks = true;
    c.opts.sliding_window = 100;
    cases.push_back(c);
  }
  {
    Case c = base;  // rows past seq_count stay untouched
    c.cfg.q_lens = {100, 200, 300};
    c.cfg.context_lens = {100, 400, 300};
    c.cfg.seq_count = 1;
    cases.push_back(c);
  }
  {
    Case c = base;  // hostile device values: offsets below 0 and past total_tokens, a decreasing pair,
                    // a negative length, a context shorter than its query, a bad table entry (the
                    // sequences must not overlap: two CTAs would race for the rows)
    c.cfg.q_lens = {3, 5, 0, 0};
    c.cfg.query_start = {-5, 3, 70, 3, 3};
    c.cfg.total_tokens = 8;
    c.cfg.context_lens = {20, 2, -4, 9};
    c.cfg.holes = 1;
    cases.push_back(c);
  }
  {
    Case c = base;  // fp8 with sinks, group 7, single-token pages
    c.cfg.num_heads = 7, c.cfg.num_kv_heads = 1, c.cfg.page_size = 1;
    c.cfg.kv_dtype = DType::e4m3;
    c.cfg.q_lens = {257, 16};
    c.cfg.context_lens = {1000, 16};
    c.cfg.sinks = true;
    cases.push_back(c);
  }
  {
    Case c = base;  // d256 and d64, pages of 256, soft cap
    c.cfg.head_dim = 256, c.cfg.page_size = 256;
    c.cfg.q_lens = {129};
    c.cfg.context_lens = {700};
    c.opts.attn_logits_soft_cap = 30.f;
    cases.push_back(c);
    c.cfg.head_dim = 64, c.cfg.dtype = c.cfg.out_dtype = DType::f16;
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> random_cases() {
  const char* env = std::getenv("PAGEDJIT_TEST_CONFIGS");
  const int n = env ? std::max(1, std::atoi(env)) : pjtest::under_sanitizer() ? 6 : 40;
  std::vector<Case> cases;
  for (int i = 0; i < n; ++i) cases.push_back(random_case(5000 + std::uint64_t(i)));
  return cases;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu ragged: the prefill kernel, launched directly, on edge cases" * pjtest::skip_without_gpu()) {
    for (const Case& c : edge_cases()) run_case(c, Path::kernel);
  }

  TEST_CASE("gpu ragged: the prefill kernel, launched directly, on random calls" * pjtest::skip_without_gpu()) {
    for (const Case& c : random_cases()) run_case(c, Path::kernel);
  }

  TEST_CASE("gpu ragged: ragged_paged_attention on edge cases" * pjtest::skip_without_gpu()) {
    for (const Case& c : edge_cases()) run_case(c, Path::engine);
  }

  TEST_CASE("gpu ragged: ragged_paged_attention on random calls" * pjtest::skip_without_gpu()) {
    for (const Case& c : random_cases()) run_case(c, Path::engine);
  }

  // Shapes the prefill kernel does not take, and decode-shaped steps, run on
  // the decode kernel's ragged path: per-sequence q_len through query_start.
  TEST_CASE("gpu ragged: the decode kernel's ragged paths" * pjtest::skip_without_gpu()) {
    struct Path {
      const char* name;
      RaggedConfig cfg;
      const char* kernel;  // the kernel the call must report
    };
    RaggedConfig decode;  // max q_len 3 x group 4 = 12 rows: one CTA a sequence and KV head
    decode.num_heads = 8, decode.num_kv_heads = 2, decode.head_dim = 128, decode.with_lse = true;
    decode.q_lens = {1, 3, 0, 2, 1, 1};
    decode.context_lens = {900, 3000, 40, 2, 5000, 0};
    decode.context_lens[5] = 1;
    RaggedConfig sinks = decode;
    sinks.sinks = true;
    RaggedConfig fp8 = decode;
    fp8.kv_dtype = DType::e4m3, fp8.dtype = fp8.out_dtype = DType::f16;
    RaggedConfig fp32 = decode;  // long fp32 queries: no tensor cores
    fp32.dtype = fp32.out_dtype = DType::f32;
    fp32.q_lens = {40, 1, 0, 130};
    fp32.context_lens = {100, 700, 10, 130};
    fp32.sinks = true;
    RaggedConfig wide = decode;  // head_dim 512: above the prefill kernel's 256
    wide.head_dim = 512;
    wide.q_lens = {50, 2};
    wide.context_lens = {300, 2000};
    RaggedConfig hostile = fp32;
    hostile.q_lens = {3, 5, 0, 0};
    hostile.query_start = {-5, 3, 70, 3, 3};
    hostile.total_tokens = 8;
    hostile.context_lens = {20, 2, -4, 9};
    hostile.holes = 1;
    const Path paths[] = {{"decode step", decode, "paged_decode"},
                          {"decode step, sinks", sinks, "paged_decode"},
                          {"decode step, e4m3", fp8, "paged_decode"},
                          {"fp32 prefill", fp32, "paged_decode"},
                          {"d512 prefill", wide, "paged_decode"},
                          {"fp32, hostile offsets", hostile, "paged_decode"},
                          {"bf16 prefill (for contrast)",
                           [&] {
                             RaggedConfig c = decode;
                             c.q_lens = {1, 3, 0, 20, 1, 1};
                             c.context_lens[3] = 200;
                             return c;
                           }(),
                           "paged_prefill"}};
    for (const Path& path : paths) {
      INFO(path.name);
      pjtest::RaggedProblem host(path.cfg);
      pjtest::RaggedDevice dev(host);
      PagedAttentionOptions o;
      o.return_lse = path.cfg.with_lse;
      dev.poison();
      const LaunchInfo info = pjtest::engine().ragged_paged_attention(dev.args(), o);
      check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
      INFO(info.describe());
      CHECK(info.decode_kernel.find(path.kernel) != std::string::npos);
      const pjtest::RaggedCheck r = pjtest::check_ragged(host, dev, o);
      INFO(fmt::format("rel_l2={:.3e} max_abs={:.3e} nonfinite={} touched={} lse_ok={}", r.rel_l2, r.max_abs,
                       r.nonfinite, r.touched, r.lse_ok));
      CHECK(r.nonfinite == 0);
      CHECK(r.rel_l2 < tolerance(path.cfg));
      CHECK(r.touched == 0);
      CHECK(r.lse_ok);
    }
  }
}
