// The engine's memory of recent plans: a hit must be the plan a fresh
// planning would make, and every input of planning must be part of the key.
#include <doctest/doctest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "attention/plan_cache.hpp"
#include "pagedjit/errors.hpp"
#include "pj_params.cuh"
#include "shapes.hpp"

using namespace pagedjit;
using pjtest::test_shape;

namespace {

const DeviceInfo h100 = DeviceInfo::h100_sxm();

// With the shipped profiles, so that hits and misses also cover profile choices.
attention::PlanCache shipped_cache() {
  return attention::PlanCache(h100, tuning::ProfileRegistry::global().for_device(h100, false), true);
}

void check_same(const attention::Plan& a, const attention::Plan& b) {
  CHECK(a.info.describe() == b.info.describe());
  CHECK(a.info.decode_kernel == b.info.decode_kernel);
  CHECK(a.info.profile == b.info.profile);
  CHECK(a.info.chunk_tokens == b.info.chunk_tokens);
  CHECK(a.info.v_dims == b.info.v_dims);
  CHECK(a.decode == b.decode);
  CHECK(a.counters_bytes == b.counters_bytes);
  CHECK(a.part_o_offset == b.part_o_offset);
  CHECK(a.part_lse_offset == b.part_lse_offset);
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("plan cache: a repeated call gets the remembered plan, equal to a fresh one") {
    attention::PlanCache cache = shipped_cache();
    const ProblemShape s = test_shape(64, 32, 8, 4096);
    const PagedAttentionOptions o;
    const auto first = cache.plan(s, o);
    CHECK(first->info.source == "profile");  // the shipped H100 profile answers this shape
    CHECK(cache.plan(s, o).get() == first.get());
    check_same(*first, cache.make(s, o));
    // Options that only fill the kernel's parameters share the plan.
    PagedAttentionOptions params = o;
    params.attn_scale = 0.5f;
    params.mask_value = -1e30f;
    params.attn_logits_soft_cap = 30.f;
    params.sliding_window = 128;
    params.return_lse = true;
    CHECK(cache.plan(s, params).get() == first.get());
  }

  TEST_CASE("plan cache: plans with the engine's specialization, profile or not") {
    KernelSpecialization sp;
    sp.page = sp.group = sp.splits = true;
    attention::PlanCache cache(h100, tuning::ProfileRegistry::global().for_device(h100, false), true, false, sp);
    for (const ProblemShape& s : {test_shape(64, 32, 8, 4096), test_shape(3, 40, 8, 5000)}) {
      const auto p = cache.plan(s, {});
      CHECK(p->decode.page_shift == 4);
      CHECK(p->decode.group == s.group());
      CHECK(p->decode.splits == p->info.num_splits);
      CHECK(p->info.decode_kernel == p->decode.name_expression());
      // Otherwise the plan of an engine without it.
      const attention::Plan plain =
          attention::PlanCache(h100, tuning::ProfileRegistry::global().for_device(h100, false), true, false)
              .make(s, {});
      CHECK(plain.info.source == p->info.source);
      CHECK(plain.info.profile == p->info.profile);
      CHECK(plain.info.num_splits == p->info.num_splits);
      CHECK(plain.info.tile_tokens == p->info.tile_tokens);
      CHECK(plain.decode.splits == pj::kUnsetSplits);
    }
  }

  TEST_CASE("plan cache: every input of planning is part of the key") {
    // An fp8 cache, so that the query's dtype can change alone.
    ProblemShape base = test_shape(4, 32, 8, 4096);
    base.kv_dtype = DType::e4m3;
    const PagedAttentionOptions none;
    // One change at a time, each on a cache holding only the base key: it
    // must miss, plan exactly what make() plans, and leave the base a hit.
    const std::vector<std::pair<const char*, std::function<void(ProblemShape&, PagedAttentionOptions&)>>> changes = {
        {"num_seqs", [](ProblemShape& s, auto&) { s.num_seqs = 5; }},
        {"num_heads", [](ProblemShape& s, auto&) { s.num_heads = 16; }},
        {"num_kv_heads", [](ProblemShape& s, auto&) { s.num_kv_heads = 4; }},
        {"head_dim", [](ProblemShape& s, auto&) { s.head_dim = 64; }},
        {"page_size", [](ProblemShape& s, auto&) { s.page_size = 32; }},
        {"max_blocks", [](ProblemShape& s, auto&) { s.max_blocks += 1; }},
        {"num_blocks", [](ProblemShape& s, auto&) { s.num_blocks += 1; }},
        {"dtype", [](ProblemShape& s, auto&) { s.dtype = DType::f16; }},
        {"kv_dtype", [](ProblemShape& s, auto&) { s.kv_dtype = DType::e5m2; }},
        {"out_dtype", [](ProblemShape& s, auto&) { s.out_dtype = DType::f32; }},
        {"layout", [](ProblemShape& s, auto&) { s.layout = CacheLayout::heads_blocks; }},
        {"max_context_len", [](ProblemShape& s, auto&) { s.max_context_len = 4000; }},
        {"q_len", [](ProblemShape& s, auto&) { s.q_len = 4; }},
        {"num_splits", [](auto&, PagedAttentionOptions& o) { o.num_splits = 3; }},
        {"batch_invariant", [](auto&, PagedAttentionOptions& o) { o.batch_invariant = true; }},
        {"pages_per_compute_block", [](auto&, PagedAttentionOptions& o) { o.pages_per_compute_block = 2; }},
        {"pages_per_compute_block.value", [](auto&, PagedAttentionOptions& o) { o.pages_per_compute_block = 4; }},
        {"kernel_config",
         [](auto&, PagedAttentionOptions& o) {
           o.kernel_config = KernelConfig{64, 4, 2, 0, 0};
         }},
        {"kernel_config.tile_tokens",
         [](auto&, PagedAttentionOptions& o) {
           o.kernel_config = KernelConfig{32, 2, 3, 0, 0};
         }},
        {"kernel_config.chunk_tokens",
         [](auto&, PagedAttentionOptions& o) {
           o.kernel_config = KernelConfig{32, 2, 2, 512, 0};
         }},
        {"kernel_config.v_dims",
         [](auto&, PagedAttentionOptions& o) {
           o.kernel_config = KernelConfig{32, 2, 2, 0, 64};
         }},
    };
    for (const auto& [what, change] : changes) {
      CAPTURE(what);
      attention::PlanCache cache = shipped_cache();
      const auto planned = cache.plan(base, none);
      ProblemShape s = base;
      PagedAttentionOptions o = none;
      // A sub-field changes from a neighbour that has the field set.
      if (std::string(what).rfind("kernel_config.", 0) == 0) o.kernel_config = KernelConfig{32, 2, 2, 0, 0};
      if (std::string(what) == "pages_per_compute_block.value") o.pages_per_compute_block = 2;
      const auto before = cache.plan(s, o);
      change(s, o);
      const auto p = cache.plan(s, o);
      CHECK(p.get() != planned.get());
      CHECK(p.get() != before.get());
      check_same(*p, cache.make(s, o));
      CHECK(cache.plan(s, o).get() == p.get());
      CHECK(cache.plan(base, none).get() == planned.get());
    }
  }

  TEST_CASE("plan cache: through evictions every plan equals a fresh one, and held plans stay valid") {
    attention::PlanCache cache = shipped_cache();
    // Three times more keys than slots, in random order.
    std::vector<std::pair<ProblemShape, PagedAttentionOptions>> keys;
    for (int i = 0; i < 3 * attention::PlanCache::kSlots; ++i) {
      ProblemShape s = test_shape(1 + i % 7 * 9, 32, i % 3 == 0 ? 4 : 8, 512 + 700 * i, i % 4 == 0 ? 64 : 128);
      PagedAttentionOptions o;
      if (i % 5 == 0) o.num_splits = 1 + i % 4;
      keys.emplace_back(s, o);
    }
    const auto held = cache.plan(keys[0].first, keys[0].second);
    const attention::Plan fresh0 = cache.make(keys[0].first, keys[0].second);
    std::mt19937 rng(7);
    for (int n = 0; n < 600; ++n) {
      const auto& [s, o] = keys[rng() % keys.size()];
      check_same(*cache.plan(s, o), cache.make(s, o));
    }
    check_same(*held, fresh0);
  }

  TEST_CASE("plan cache: a call that cannot be planned throws every time and is not remembered") {
    attention::PlanCache cache = shipped_cache();
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{256, 8, 8, 0, 0};  // far more shared memory than a block gets
    const ProblemShape s = test_shape(8, 32, 8, 4096, 256);
    CHECK_THROWS_AS(cache.plan(s, o), InvalidArgument);
    CHECK_THROWS_AS(cache.plan(s, o), InvalidArgument);
    o.kernel_config.reset();
    CHECK(cache.plan(s, o)->info.tile_tokens > 0);
  }
}

#if defined(PAGEDJIT_PLAN_TOOL) && defined(PAGEDJIT_BENCH_DIR)
#include <fmt/format.h>

#include "run_command.hpp"

TEST_SUITE("cpu") {
  TEST_CASE("pagedjit-plan: plans every public and issue-8 case on a preset, with or without profiles") {
    const std::string files =
        fmt::format("--cases '{}/cases.json' --cases '{}/cases-issue8.json'", PAGEDJIT_BENCH_DIR, PAGEDJIT_BENCH_DIR);
    const pjtest::RunResult r = pjtest::run_command(fmt::format("'{}' {} 2>&1", PAGEDJIT_PLAN_TOOL, files));
    CAPTURE(r.out);
    CHECK(r.status == 0);  // 1 when a case's views fail validation or planning
    CHECK(r.out.find("cannot be planned") == std::string::npos);
    CHECK(r.out.find("l8b_b1_c128k_q4 ") != std::string::npos);
    CHECK(r.out.find("src=profile") != std::string::npos);
    CHECK(r.out.find("pj::paged_decode<pj::bf16, pj::e4m3, pj::bf16, 128") != std::string::npos);
    const pjtest::RunResult h =
        pjtest::run_command(fmt::format("'{}' {} --gpu h200 --no-profile 2>&1", PAGEDJIT_PLAN_TOOL, files));
    CAPTURE(h.out);
    CHECK(h.status == 0);
    CHECK(h.out.find("NVIDIA H200") != std::string::npos);
    CHECK(h.out.find("src=profile") == std::string::npos);
    CHECK(h.out.find("src=heuristic") != std::string::npos);
    CHECK(pjtest::run_command(fmt::format("'{}' --gpu h300 2>&1", PAGEDJIT_PLAN_TOOL)).status == 2);
  }
}
#endif
