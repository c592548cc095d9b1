// The planner: splits, head chunks, shared memory, workspace.
#include <doctest/doctest.h>

#include "attention/planner.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pj_params.cuh"
#include "shapes.hpp"

using namespace pagedjit;

namespace {
using pjtest::test_shape;
const DeviceInfo h100 = DeviceInfo::h100_sxm();
}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("planner: host schedule: a batch of one to two waves gets fixed partitions, for ragged lengths") {
    // 512 CTAs on 528 slots
    const LaunchInfo p = plan_problem(test_shape(64, 32, 8, 8192), {}, h100, true, false);
    REQUIRE(p.chunk_tokens == attention::kFixedChunkTokens);
    CHECK(p.num_splits == (8192 + p.chunk_tokens - 1) / p.chunk_tokens);
    // Short contexts are never cut below two chunks' worth.
    CHECK(plan_problem(test_shape(64, 32, 8, 2048), {}, h100, true, false).num_splits == 1);
  }

  TEST_CASE("planner: fp16/bf16 up to 128 dims take register-staged 32-token tiles; fp8, d256 and fp32 do not") {
    for (DType dt : {DType::bf16, DType::f16})
      for (int d : {64, 128}) {
        CAPTURE(dtype_name(dt));
        CAPTURE(d);
        const LaunchInfo p = plan_problem(test_shape(64, 32, 8, 4096, d, dt), {}, h100);
        CHECK(p.tile_tokens == 32);
        CHECK(p.warps == 2);
        CHECK(p.stages == 2);
      }
    const LaunchInfo d256 = plan_problem(test_shape(64, 32, 8, 4096, 256, DType::bf16), {}, h100);
    // Staged with a dim split: 32 tokens, 4 warps (two pairs of 128 dims), 2 stages.
    CHECK(d256.tile_tokens == 32);
    CHECK(d256.warps == 4);
    CHECK(d256.stages == 2);
    // fp32 has no dim split: every warp takes whole 16-token slices.
    const LaunchInfo d256f = plan_problem(test_shape(64, 32, 8, 4096, 256, DType::f32), {}, h100);
    CHECK(d256f.warps * 16 <= d256f.tile_tokens);
    ProblemShape fp8 = test_shape(64, 32, 8, 4096, 128, DType::bf16);
    fp8.kv_dtype = DType::e4m3;
    const LaunchInfo f8 = plan_problem(fp8, {}, h100);
    CHECK(f8.tile_tokens == 32);  // cp.async, one stage deeper than the bf16 tiles
    CHECK(f8.warps == 2);
    CHECK(f8.stages == 3);
    const LaunchInfo f32 = plan_problem(test_shape(64, 32, 8, 4096, 128, DType::f32), {}, h100);
    CHECK(f32.compute == "simt");
    CHECK(f32.stages == 3);
  }

  TEST_CASE("planner: 2 to 8 partitions of a small grid merge in a cluster on sm_90+, with no workspace") {
    PagedAttentionOptions o;
    for (int splits : {2, 5, 8, 9}) {
      CAPTURE(splits);
      o.num_splits = splits;
      const attention::Plan with = attention::make_plan(test_shape(1, 32, 8, 8192), o, h100);
      const attention::Plan without = attention::make_plan(test_shape(1, 32, 8, 8192), o, h100, nullptr, false);
      CHECK(with.info.cluster == (splits <= attention::kMaxClusterSplits ? splits : 1));
      CHECK((with.info.workspace_bytes == 0) == (splits <= attention::kMaxClusterSplits));
      CHECK(without.info.cluster == 1);
      CHECK(without.info.workspace_bytes > 0);
      // The kernel carries the merge tail it runs, and its name says which.
      const bool clustered = splits <= attention::kMaxClusterSplits;
      CHECK(with.decode.merge == (clustered ? jit::Merge::cluster : jit::Merge::global));
      CHECK(without.decode.merge == jit::Merge::global);
      CHECK(with.info.decode_kernel == with.decode.name_expression());
      CHECK(without.info.decode_kernel.find("pj::Merge::global, pj::Schedule::host, ") != std::string::npos);
      jit::KernelSpec same = with.decode;
      same.merge = without.decode.merge;
      CHECK(same == without.decode);  // nothing else differs
      DeviceInfo ampere = h100;
      ampere.cc_major = 8;
      const attention::Plan a = attention::make_plan(test_shape(1, 32, 8, 8192), o, ampere);
      CHECK(a.info.cluster == 1);
      CHECK(a.decode.merge == jit::Merge::global);
    }
    o.num_splits = 1;
    const attention::Plan one = attention::make_plan(test_shape(1, 32, 8, 8192), o, h100);
    CHECK(one.info.cluster == 1);
    CHECK(one.decode.merge == jit::Merge::none);
    CHECK(one.info.workspace_bytes == 0);
    // More CTAs than half the SMs: the global merge (clusters would wait for GPC slots).
    o.num_splits = 8;
    const LaunchInfo big = plan_problem(test_shape(2, 32, 8, 8192), o, h100);  // 128 CTAs on 132 SMs
    CHECK(big.cluster == 1);
    CHECK(big.workspace_bytes > 0);
    CHECK(big.decode_kernel.find("pj::Merge::global, pj::Schedule::host, ") != std::string::npos);
    // plan_problem / precompile plan like an engine with or without cluster
    // merging: the two need different kernels.
    o.num_splits = 4;
    CHECK(plan_problem(test_shape(1, 32, 8, 8192), o, h100)
              .decode_kernel.find("pj::Merge::cluster, pj::Schedule::host, ") != std::string::npos);
    CHECK(plan_problem(test_shape(1, 32, 8, 8192), o, h100, false)
              .decode_kernel.find("pj::Merge::global, pj::Schedule::host, ") != std::string::npos);
  }

  TEST_CASE("planner: host schedule: between half a wave and 0.8 of one, long contexts still get fixed partitions") {
    // e4m3, 32-token tiles: 6 CTAs an SM by shared memory, 5 by the register
    // estimate, so 660 slots for 512 CTAs: an even cut would be one partition.
    ProblemShape s = test_shape(64, 32, 8, 8192);
    s.kv_dtype = DType::e4m3;
    const LaunchInfo p = plan_problem(s, {}, h100, true, false);
    REQUIRE(p.tile_tokens == 32);
    CHECK(p.chunk_tokens == attention::kFixedChunkTokens);
    CHECK(p.num_splits > 1);
  }

  TEST_CASE("planner: batch-invariant partitions do not depend on the batch") {
    PagedAttentionOptions o;
    o.batch_invariant = true;
    const LaunchInfo a = plan_problem(test_shape(1, 32, 8, 8192), o, h100);
    const LaunchInfo b = plan_problem(test_shape(300, 32, 8, 8192), o, h100);
    CHECK(a.chunk_tokens == b.chunk_tokens);
    CHECK(a.chunk_tokens > 0);
    CHECK(a.source == "batch-invariant");
    CHECK(a.tile_tokens == b.tile_tokens);
  }

  TEST_CASE("planner: host schedule: a large batch needs no split") {
    const LaunchInfo p = plan_problem(test_shape(256, 32, 8, 4096), {}, h100, true, false);
    CHECK(p.num_splits == 1);
    CHECK(p.workspace_bytes == 0);
    CHECK(p.grid[0] == 8);
    CHECK(p.grid[1] == 256);
  }

  TEST_CASE("planner: one long sequence is split to fill the SMs") {
    const LaunchInfo p = plan_problem(test_shape(1, 32, 8, 131072), {}, h100);
    CHECK(p.num_splits >= h100.sm_count / 8);
    CHECK(std::int64_t(p.num_splits) * 8 <= 4 * h100.sm_count);  // at most one wave of the 4 CTAs an SM holds
    CHECK(p.workspace_bytes >= std::int64_t(32) * p.num_splits * (128 + 1) * 4 + 8 * 4);
    CHECK(p.source == "heuristic");
  }

  TEST_CASE("planner: short contexts are not split below the minimum chunk") {
    const LaunchInfo p = plan_problem(test_shape(1, 8, 8, 300), {}, h100);
    CHECK(p.num_splits <= (300 + attention::kMinChunkTokens - 1) / attention::kMinChunkTokens);
    CHECK(p.num_splits > 1);
  }

  TEST_CASE("planner: the user's num_splits wins") {
    PagedAttentionOptions o;
    o.num_splits = 7;
    const LaunchInfo p = plan_problem(test_shape(64, 32, 8, 4096), o, h100);
    CHECK(p.num_splits == 7);
    CHECK(p.grid[2] == 7);
    CHECK(p.source == "user");
  }

  TEST_CASE("planner: groups above 16 are cut into balanced head chunks") {
    const LaunchInfo p = plan_problem(test_shape(4, 40, 2, 1024), {}, h100);  // group 20
    CHECK(p.head_chunks == 2);
    CHECK(p.heads_per_cta == 10);
    CHECK(p.grid[0] == 4);
    const LaunchInfo q = plan_problem(test_shape(4, 64, 1, 1024), {}, h100);  // group 64
    CHECK(q.head_chunks == 4);
    CHECK(q.heads_per_cta == 16);
  }

  TEST_CASE("planner: shared memory fits the device for every dtype and head_dim") {
    for (DType dt : {DType::f16, DType::bf16, DType::f32})
      for (int d = 16; d <= 512; d += 16) {
        const LaunchInfo p = plan_problem(test_shape(8, 8, 8, 2048, d, dt), {}, h100);
        CHECK(p.smem_bytes <= h100.max_smem_per_block);
        CHECK(pj::tile_shape_ok(p.tile_tokens, p.warps));
        CHECK(p.v_dims % 16 == 0);
        CHECK(p.v_dims <= 256);
        CHECK(p.v_dims * p.dv_chunks >= d);
        CHECK(p.v_dims * (p.dv_chunks - 1) < d);
      }
  }

  TEST_CASE("planner: a forced kernel config is used, or refused when it does not fit") {
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{32, 2, 6, 0};
    LaunchInfo p = plan_problem(test_shape(8, 8, 8, 2048), o, h100);
    CHECK(p.tile_tokens == 32);
    CHECK(p.warps == 2);
    CHECK(p.stages == 6);
    o.kernel_config = KernelConfig{256, 8, 8, 0};  // far more shared memory than an SM has
    CHECK_THROWS_AS(plan_problem(test_shape(8, 8, 8, 2048, 256), o, h100), InvalidArgument);
  }

  TEST_CASE("planner: warps beyond a tile's 16-token slices split the dims, on tensor cores only") {
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{32, 4, 2, 0, 0};
    const LaunchInfo p = plan_problem(test_shape(32, 32, 8, 4096, 256), o, h100);
    CHECK(p.tile_tokens == 32);
    CHECK(p.warps == 4);
    CHECK(p.threads == 128);
    CHECK(p.decode_kernel.find("256, 256, 32, 4, 2, true") != std::string::npos);
    CHECK_THROWS_AS(plan_problem(test_shape(32, 32, 8, 4096, 256, DType::f32), o, h100), InvalidArgument);
    o.kernel_config = KernelConfig{32, 4, 2, 0, 80};  // 40 dims a warp
    CHECK_THROWS_AS(plan_problem(test_shape(32, 32, 8, 4096, 256), o, h100), InvalidArgument);
    o.kernel_config = KernelConfig{48, 4, 2, 0, 0};  // three slices for four warps
    CHECK_THROWS_AS(plan_problem(test_shape(32, 32, 8, 4096, 256), o, h100), InvalidArgument);
  }

  TEST_CASE("planner: a fixed chunk gives ceil(max_context_len / chunk) partitions") {
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{};
    o.kernel_config->chunk_tokens = 1000;  // rounded up to a whole tile
    const LaunchInfo p = plan_problem(test_shape(8, 32, 8, 8192), o, h100);
    CHECK(p.chunk_tokens % p.tile_tokens == 0);
    CHECK(p.chunk_tokens >= 1000);
    CHECK(p.num_splits == (8192 + p.chunk_tokens - 1) / p.chunk_tokens);
    CHECK(p.grid[2] == p.num_splits);
  }

  TEST_CASE("planner: a forced v_dims cuts the output dims into chunks") {
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{};
    o.kernel_config->v_dims = 128;
    const LaunchInfo p = plan_problem(test_shape(8, 16, 8, 2048, 256), o, h100);
    CHECK(p.v_dims == 128);
    CHECK(p.dv_chunks == 2);
    CHECK(p.grid[0] == 16);
  }

  TEST_CASE("planner: pages_per_compute_block sets the tile") {
    PagedAttentionOptions o;
    o.pages_per_compute_block = 2;  // 32 tokens of 16-token pages
    const LaunchInfo p = plan_problem(test_shape(8, 8, 8, 2048), o, h100);
    CHECK(p.tile_tokens == 32);
    CHECK(p.warps == 2);
  }
}

TEST_SUITE("cpu") {
  TEST_CASE("planner: a batch whose partitions the engine chooses takes the device schedule") {
    const attention::Plan p = attention::make_plan(test_shape(64, 32, 8, 8192), {}, h100);
    CHECK(p.info.work_items > 0);
    CHECK(p.info.work_waves == attention::kDefaultWorkWaves);
    CHECK(p.info.num_splits == 0);
    CHECK(p.decode.schedule == jit::Schedule::device);
    CHECK(p.decode.merge == jit::Merge::global);
    CHECK(p.info.decode_kernel.find("pj::Schedule::device, ") != std::string::npos);
    // One launch: grid y covers every sequence once plus the balanced items.
    CHECK(p.info.grid[1] == 64 + p.info.work_items);
    CHECK(p.info.grid[2] == 1);
    CHECK(p.info.cluster == 1);
    // The workspace holds a partial slot per grid row and the counters.
    const std::int64_t slots = std::int64_t(64 + p.info.work_items) * 32;
    CHECK(p.info.workspace_bytes >= p.counters_bytes + slots * 128 * 4 + slots * 4);
    CHECK(p.counters_bytes >= 64 * p.info.grid[0] * 4);
    // The items of a column: waves x the SM count x the CTAs an SM holds at
    // most by shared memory, over the columns (KV heads x head chunks).
    const int ctas = std::min(2048 / p.info.threads, h100.max_smem_per_sm / (p.info.smem_bytes + 1024));
    CHECK(p.info.work_items == attention::work_items_for(p.info.work_waves, h100.sm_count, ctas, p.info.grid[0]));
    CHECK(attention::work_items_for(1, 132, 4, 8) == 66);
    CHECK(attention::work_items_for(3, 132, 5, 8) == 248);  // 247.5 rounded up
    // The profile's or the user's knob.
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{};
    o.kernel_config->work_waves = 6;
    CHECK(plan_problem(test_shape(64, 32, 8, 8192), o, h100).work_items ==
          attention::work_items_for(6, h100.sm_count, ctas, p.info.grid[0]));
  }

  TEST_CASE("planner: the host schedule where the partitions are fixed, or one sequence, or too many") {
    PagedAttentionOptions splits;
    splits.num_splits = 3;
    CHECK(plan_problem(test_shape(64, 32, 8, 8192), splits, h100).work_items == 0);
    PagedAttentionOptions invariant;
    invariant.batch_invariant = true;
    CHECK(plan_problem(test_shape(64, 32, 8, 8192), invariant, h100).work_items == 0);
    PagedAttentionOptions chunk;
    chunk.kernel_config = KernelConfig{};
    chunk.kernel_config->chunk_tokens = 512;
    CHECK(plan_problem(test_shape(64, 32, 8, 8192), chunk, h100).work_items == 0);
    CHECK(plan_problem(test_shape(1, 32, 8, 8192), {}, h100).work_items == 0);
    // Off by the engine's option.
    CHECK(plan_problem(test_shape(64, 32, 8, 8192), {}, h100, true, false).work_items == 0);
    // Each thread of a CTA plans at most kMaxScheduleSeqsPerThread sequences.
    const LaunchInfo fits = plan_problem(test_shape(1024, 8, 1, 512), {}, h100);
    CHECK(fits.work_items > 0);
    const int most = pj::kMaxScheduleSeqsPerThread * fits.threads;
    CHECK(plan_problem(test_shape(most, 8, 1, 512), {}, h100).work_items > 0);
    CHECK(plan_problem(test_shape(most + 1, 8, 1, 512), {}, h100).work_items == 0);
  }

  TEST_CASE("kernel spec: the device schedule needs the global merge") {
    jit::KernelSpec s;
    s.head_dim = s.v_dims = 128;
    s.tile_tokens = 32, s.warps = 2, s.stages = 2;
    s.arch = "sm_90a";
    s.schedule = jit::Schedule::device;
    s.merge = jit::Merge::global;
    CHECK_NOTHROW(s.check());
    for (jit::Merge m : {jit::Merge::none, jit::Merge::cluster}) {
      s.merge = m;
      CHECK_THROWS_AS(s.check(), InvalidArgument);
    }
  }
}

TEST_SUITE("cpu") {
  // EngineOptions::specialize: the plan is the same but for the launch values
  // its decode kernel compiles in, each the value decode_params passes.
  TEST_CASE("planner: specialization compiles in the page shift, group and host split count only when asked") {
    const auto same_but_spec = [](const attention::Plan& a, const attention::Plan& b) {
      jit::KernelSpec k = b.decode;
      k.page_shift = a.decode.page_shift, k.group = a.decode.group, k.splits = a.decode.splits;
      LaunchInfo i = b.info;
      i.decode_kernel = a.info.decode_kernel;
      return k == a.decode && i.describe() == a.info.describe() && a.info.decode_kernel == a.decode.name_expression() &&
             b.info.decode_kernel == b.decode.name_expression();
    };
    KernelSpecialization all;
    all.page = all.group = all.splits = true;
    // Default: nothing compiled in, the name ends in the unset values.
    const attention::Plan plain = attention::make_plan(test_shape(64, 32, 8, 8192), {}, h100);
    CHECK(plain.decode.page_shift == pj::kUnsetPageShift);
    CHECK(plain.decode.group == pj::kUnsetGroup);
    CHECK(plain.decode.splits == pj::kUnsetSplits);
    CHECK(plain.info.decode_kernel.find(", pj::Schedule::device, -1, 0, 0>") != std::string::npos);
    // The device schedule: page and group, never a split count (the kernel plans its partitions).
    const attention::Plan dev = attention::make_plan(test_shape(64, 32, 8, 8192), {}, h100, nullptr, true, true, all);
    CHECK(dev.info.work_items > 0);
    CHECK(dev.decode.page_shift == 4);
    CHECK(dev.decode.group == 4);
    CHECK(dev.decode.splits == pj::kUnsetSplits);
    CHECK(dev.info.decode_kernel.find(", pj::Schedule::device, 4, 4, 0>") != std::string::npos);
    CHECK(same_but_spec(dev, plain));
    CHECK_NOTHROW(dev.decode.check());
    // Each flag alone.
    KernelSpecialization page, group;
    page.page = true, group.group = true;
    ProblemShape s32 = test_shape(64, 56, 8, 8192);  // group 7, 32-token pages
    s32.page_size = 32, s32.max_blocks = 256;
    CHECK(attention::make_plan(s32, {}, h100, nullptr, true, true, page).info.decode_kernel.find(", 5, 0, 0>") !=
          std::string::npos);
    CHECK(attention::make_plan(s32, {}, h100, nullptr, true, true, group).info.decode_kernel.find(", -1, 7, 0>") !=
          std::string::npos);
    // The host schedule: the plan's split count, whatever the merge.
    KernelSpecialization splits;
    splits.splits = true;
    for (bool clusters : {true, false})
      for (int n : {1, 4}) {
        CAPTURE(clusters);
        CAPTURE(n);
        PagedAttentionOptions o;
        o.num_splits = n;
        const attention::Plan a = attention::make_plan(test_shape(1, 32, 8, 8192), o, h100, nullptr, clusters);
        const attention::Plan b =
            attention::make_plan(test_shape(1, 32, 8, 8192), o, h100, nullptr, clusters, true, splits);
        CHECK(b.info.num_splits == n);
        CHECK(b.decode.splits == n);
        CHECK(b.decode.merge == (n == 1 ? jit::Merge::none : clusters ? jit::Merge::cluster : jit::Merge::global));
        CHECK(b.decode.page_shift == pj::kUnsetPageShift);
        CHECK(b.decode.group == pj::kUnsetGroup);
        CHECK(same_but_spec(b, a));
        CHECK_NOTHROW(b.decode.check());
      }
    // Fixed-length partitions and the heuristic's splits (host schedule) too.
    PagedAttentionOptions chunk;
    chunk.kernel_config = KernelConfig{};
    chunk.kernel_config->chunk_tokens = 512;
    const attention::Plan c = attention::make_plan(test_shape(64, 32, 8, 8192), chunk, h100, nullptr, true, true, all);
    CHECK(c.info.num_splits == 16);
    CHECK(c.decode.splits == 16);
    CHECK_NOTHROW(c.decode.check());
    const attention::Plan h = attention::make_plan(test_shape(64, 32, 8, 8192), {}, h100, nullptr, true, false, all);
    CHECK(h.info.work_items == 0);
    CHECK(h.decode.splits == h.info.num_splits);
    CHECK(h.decode.schedule == jit::Schedule::host);
    CHECK_NOTHROW(h.decode.check());
    // plan_problem (and so precompile) take it too.
    CHECK(plan_problem(test_shape(64, 32, 8, 8192), {}, h100, true, true, group)
              .decode_kernel.find(", pj::Schedule::device, -1, 4, 0>") != std::string::npos);
  }

  TEST_CASE("planner: page_shift_of is log2 of the page size") {
    CHECK(attention::page_shift_of(1) == 0);
    CHECK(attention::page_shift_of(16) == 4);
    CHECK(attention::page_shift_of(256) == 8);
  }
}
