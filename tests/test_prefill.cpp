// The prefill kernel's host side without a GPU: its KernelSpec, plan_prefill,
// NVRTC compiles of its specializations, and the ragged float64 reference on
// hand-made cases.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "attention/prefill.hpp"
#include "jit/kernel_cache.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "jit/source_set.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/reference.hpp"
#include "pagedjit/testing.hpp"
#include "shapes.hpp"

using namespace pagedjit;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif
#else
constexpr bool kUnderAsan = false;
#endif

// A ragged shape: `tokens` packed query rows over `seqs` sequences.
ProblemShape ragged_shape(int seqs, std::int64_t tokens, int heads, int kv_heads, int head_dim,
                          DType dt = DType::bf16) {
  ProblemShape s = pjtest::test_shape(seqs, heads, kv_heads, 8192, head_dim, dt);
  s.ragged = true;
  s.total_tokens = tokens;
  s.q_len = int(std::min<std::int64_t>(tokens, 4096));
  return s;
}

// A tiny fp32 ragged problem: page size 1, one KV head, head_dim 16, one
// table row per sequence with pages in order.
struct TinyRagged {
  static constexpr int D = 16;
  int heads, tokens, blocks;
  std::vector<float> q, k, v, out, lse, sinks;
  std::vector<int> starts, lens, table, count;

  TinyRagged(int heads_, std::vector<int> q_lens, std::vector<int> lens_, int blocks_)
      : heads(heads_), blocks(blocks_), lens(std::move(lens_)) {
    starts.push_back(0);
    for (int n : q_lens) starts.push_back(starts.back() + n);
    tokens = starts.back();
    q.assign(std::size_t(std::max(tokens, 1) * heads * D), 0.f);
    k.assign(std::size_t(blocks * D), 0.f);
    v.assign(k.size(), 0.f);
    out.assign(q.size(), 0.f);
    lse.assign(std::size_t(std::max(tokens, 1) * heads), 0.f);
    for (std::size_t s = 0; s < lens.size(); ++s)
      for (int b = 0; b < blocks; ++b) table.push_back(b);
  }
  float& Q(int t, int h, int d) { return q[std::size_t((t * heads + h) * D + d)]; }
  float& K(int t, int d) { return k[std::size_t(t * D + d)]; }
  float& V(int t, int d) { return v[std::size_t(t * D + d)]; }
  RaggedAttentionArgs args() {
    const int S = int(lens.size());
    RaggedAttentionArgs a;
    a.query = TensorView(q.data(), DType::f32, {tokens, heads, D});
    a.query_start = TensorView(starts.data(), DType::i32, {S + 1});
    a.key_cache = TensorView(k.data(), DType::f32, {blocks, 1, 1, D});
    a.value_cache = TensorView(v.data(), DType::f32, {blocks, 1, 1, D});
    a.context_lens = TensorView(lens.data(), DType::i32, {S});
    a.block_tables = TensorView(table.data(), DType::i32, {S, blocks});
    a.output = TensorView(out.data(), DType::f32, {tokens, heads, D});
    a.lse = TensorView(lse.data(), DType::f32, {tokens, heads});
    if (!sinks.empty()) a.sinks = TensorView(sinks.data(), DType::f32, {heads});
    if (!count.empty()) a.seq_count = TensorView(count.data(), DType::i32, {1});
    return a;
  }
};

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("prefill spec: name expression, readable name, key and checks") {
    jit::KernelSpec s;
    s.kind = jit::KernelKind::prefill;
    s.q_dtype = s.kv_dtype = s.out_dtype = DType::bf16;
    s.head_dim = s.v_dims = 128;
    s.tile_tokens = 64, s.warps = 4, s.stages = 2;
    s.arch = "sm_90a";
    CHECK(s.name_expression() == "pj::paged_prefill<pj::bf16, pj::bf16, pj::bf16, 128, 64, 64, 4, 2>");
    CHECK(s.readable() == "prefill bf16->bf16 d128 rows64 keys64 w4 s2 sm_90a");
    CHECK_NOTHROW(s.check());
    jit::KernelSpec decode = s;
    decode.kind = jit::KernelKind::decode;
    CHECK(decode.key("H", "13.0") != s.key("H", "13.0"));
    CHECK_FALSE(decode == s);
    auto bad = [&](auto edit) {
      jit::KernelSpec b = s;
      edit(b);
      CHECK_THROWS_AS(b.check(), InvalidArgument);
    };
    bad([](jit::KernelSpec& b) { b.q_dtype = b.kv_dtype = DType::f32; });
    bad([](jit::KernelSpec& b) { b.kv_dtype = DType::f16; });
    bad([](jit::KernelSpec& b) { b.head_dim = b.v_dims = 320; });
    bad([](jit::KernelSpec& b) { b.v_dims = 64; });
    bad([](jit::KernelSpec& b) { b.tile_tokens = 24; });
    bad([](jit::KernelSpec& b) { b.warps = 9; });
    bad([](jit::KernelSpec& b) { b.stages = 1; });
    bad([](jit::KernelSpec& b) { b.merge = jit::Merge::global; });
    bad([](jit::KernelSpec& b) { b.out_dtype = DType::e4m3; });
    s.kv_dtype = DType::e5m2;
    CHECK_NOTHROW(s.check());
  }

  TEST_CASE("plan_prefill: the block shape, grid, threads and shared memory of each head dim") {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    for (int d : {64, 96, 128, 192, 256})
      for (DType kv : {DType::bf16, DType::e4m3}) {
        CAPTURE(d);
        CAPTURE(dtype_name(kv));
        ProblemShape s = ragged_shape(5, 3000, 32, 8, d);
        s.kv_dtype = kv;
        const attention::PrefillPlan p = attention::plan_prefill(s, {}, h100, "sm_90a");
        REQUIRE(p.supported);
        CHECK(p.why_not.empty());
        CHECK(p.spec.kind == jit::KernelKind::prefill);
        CHECK(p.spec.kv_dtype == kv);
        CHECK_NOTHROW(p.spec.check());
        CHECK(p.block_rows == pj::kPrefillWarpRows * p.spec.warps);
        CHECK(p.threads == 32 * p.spec.warps);
        CHECK(p.grid[0] == 8);
        CHECK(p.grid[1] == (3000 * 4 + p.block_rows - 1) / p.block_rows + 5);
        CHECK(p.grid[2] == 1);
        CHECK(p.smem_bytes ==
              pj::prefill_smem(d, 2, int(dtype_size(kv)), p.block_rows, p.spec.tile_tokens, p.spec.stages).total);
        // Two CTAs an SM, so one waits at a barrier while the other computes.
        CHECK(2 * (p.smem_bytes + 1024) <= h100.max_smem_per_sm);
      }
  }

  TEST_CASE("plan_prefill: shapes the kernel does not take say why") {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    auto why = [&](const ProblemShape& s, const DeviceInfo& d) {
      const attention::PrefillPlan p = attention::plan_prefill(s, {}, d, "sm_90a");
      CHECK_FALSE(p.supported);
      return p.why_not;
    };
    CHECK(why(ragged_shape(2, 100, 8, 8, 128, DType::f32), h100).find("fp16 or bf16") != std::string::npos);
    CHECK(why(ragged_shape(2, 100, 8, 8, 320), h100).find("head_dim 320") != std::string::npos);
    ProblemShape fp8 = ragged_shape(2, 100, 8, 8, 128, DType::f16);
    fp8.kv_dtype = DType::e4m3;
    DeviceInfo a100 = h100;
    a100.cc_major = 8, a100.cc_minor = 0;
    CHECK(why(fp8, a100).find("sm_89") != std::string::npos);
    // More query blocks than grid y holds.
    CHECK(why(ragged_shape(2, 4'000'000, 8, 1, 64), h100).find("grid") != std::string::npos);
  }

  TEST_CASE("plan_prefill: kernel_config forces the block shape; one the kernel cannot take is refused") {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{};
    o.kernel_config->tile_tokens = 32, o.kernel_config->warps = 2, o.kernel_config->stages = 4;
    const attention::PrefillPlan p = attention::plan_prefill(ragged_shape(1, 64, 4, 4, 128), o, h100, "sm_90a");
    REQUIRE(p.supported);
    CHECK(p.spec.tile_tokens == 32);
    CHECK(p.spec.warps == 2);
    CHECK(p.spec.stages == 4);
    CHECK(p.block_rows == 32);
    o.kernel_config->tile_tokens = 40;
    CHECK_THROWS_AS(attention::plan_prefill(ragged_shape(1, 64, 4, 4, 128), o, h100, "sm_90a"), InvalidArgument);
  }

  TEST_CASE("prefill: the grid bound covers every split of the tokens into sequences") {
    std::mt19937 rng(7);
    for (int trial = 0; trial < 2000; ++trial) {
      const int seqs = 1 + int(rng() % 40), group = 1 + int(rng() % 8), rows = 16 << (rng() % 4);
      long long total = 0, blocks = 0;
      for (int s = 0; s < seqs; ++s) {
        const long long q = rng() % 3 == 0 ? 0 : rng() % 5000;
        total += q;
        blocks += (q * group + rows - 1) / rows;
      }
      CHECK(blocks <= pj::prefill_block_bound(total, group, rows, seqs));
    }
  }

  TEST_CASE("prefill_params: packed rows, ragged fields and the block's rows") {
    std::vector<std::uint16_t> q(size_t(10 * 4 * 64)), out(q.size()), k(size_t(8 * 2 * 16 * 64)), v(k.size());
    std::vector<int> starts{0, 3, 10}, lens{5, 20}, table(4, 0), count{1};
    std::vector<float> sinks(4, 0.f), lse(40);
    RaggedAttentionArgs a;
    a.query = TensorView(q.data(), DType::bf16, {10, 4, 64});
    a.output = TensorView(out.data(), DType::bf16, {10, 4, 64});
    a.query_start = TensorView(starts.data(), DType::i32, {3});
    a.key_cache = TensorView(k.data(), DType::bf16, {8, 2, 16, 64});
    a.value_cache = TensorView(v.data(), DType::bf16, {8, 2, 16, 64});
    a.context_lens = TensorView(lens.data(), DType::i32, {2});
    a.block_tables = TensorView(table.data(), DType::i32, {2, 2});
    a.lse = TensorView(lse.data(), DType::f32, {10, 4});
    a.sinks = TensorView(sinks.data(), DType::f32, {4});
    a.seq_count = TensorView(count.data(), DType::i32, {1});
    ProblemShape s = pjtest::test_shape(2, 4, 2, 32, 64);
    s.max_blocks = 2, s.num_blocks = 8, s.ragged = true, s.total_tokens = 10, s.q_len = 7;
    PagedAttentionOptions o;
    o.return_lse = true;
    o.sliding_window = 5;
    const attention::PrefillPlan plan = attention::plan_prefill(s, o, DeviceInfo::h100_sxm(), "sm_90a");
    REQUIRE(plan.supported);
    const pj::DecodeParams p = attention::prefill_params(a, o, s, plan);
    CHECK(p.q == q.data());
    CHECK(p.q_stride_seq == 0);
    CHECK(p.q_stride_tok == 256);
    CHECK(p.q_stride_head == 64);
    CHECK(p.o_stride_seq == 0);
    CHECK(p.o_stride_tok == 256);
    CHECK(p.lse_stride_seq == 0);
    CHECK(p.lse_stride_tok == 4);
    CHECK(p.query_start == starts.data());
    CHECK(p.seq_count == count.data());
    CHECK(p.sinks == sinks.data());
    CHECK(p.total_tokens == 10);
    CHECK(p.group == 2);
    CHECK(p.q_len == 7);
    CHECK(p.window == 5);
    CHECK(p.page_shift == 4);
    CHECK(p.rows_per_cta == plan.block_rows);
    CHECK(p.k_stride_head == 16 * 64);
    CHECK(p.k_stride_page == 2 * 16 * 64);
  }

  TEST_CASE("compile: the prefill kernel's specializations, in registers" * doctest::skip(kUnderAsan)) {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    struct Want {
      DType q, kv;
      int d;
    };
    for (const Want w : {Want{DType::bf16, DType::bf16, 128}, Want{DType::f16, DType::f16, 64},
                         Want{DType::bf16, DType::bf16, 256}, Want{DType::f16, DType::e4m3, 128}}) {
      ProblemShape s = ragged_shape(4, 4096, 32, 8, w.d, w.q);
      s.kv_dtype = w.kv;
      const attention::PrefillPlan p = attention::plan_prefill(s, {}, h100);
      REQUIRE(p.supported);
      CAPTURE(p.spec.readable());
      const jit::ResourceUsage u = jit::resource_usage(p.spec, jit::SourceSet::current());
      MESSAGE(fmt::format("{}: {} registers, {} bytes of shared memory", p.spec.readable(), u.registers, p.smem_bytes));
      CHECK(u.registers > 0);
      CHECK(u.registers <= 255);
      CHECK_FALSE(u.uses_local_memory());
    }
  }

  TEST_CASE("reference ragged: causal rows, per-sequence contexts, head groups") {
    // Sequence 0: 2 query tokens over a context of 3 (positions 1 and 2);
    // sequence 1: 1 token over a context of 1 (position 0).
    TinyRagged t(2, {2, 1}, {3, 1}, 3);
    for (int i = 0; i < 3; ++i) t.V(i, i) = 1.f;  // value i = one-hot i; all logits 0
    const auto r = reference_ragged_attention(t.args(), {});
    REQUIRE(r.seqs == std::vector<int>{0, 1});
    const int D = TinyRagged::D;
    for (int h = 0; h < 2; ++h) {
      // Token 0 of sequence 0 sees positions 0..1, token 1 sees 0..2.
      CHECK(r.output[std::size_t((0 * 2 + h) * D + 0)] == doctest::Approx(0.5));
      CHECK(r.output[std::size_t((0 * 2 + h) * D + 2)] == 0.0);
      CHECK(r.output[std::size_t((1 * 2 + h) * D + 2)] == doctest::Approx(1.0 / 3));
      CHECK(r.lse[std::size_t(1 * 2 + h)] == doctest::Approx(std::log(3.0)));
      // Sequence 1's token sees position 0 only.
      CHECK(r.output[std::size_t((2 * 2 + h) * D + 0)] == doctest::Approx(1.0));
      CHECK(r.lse[std::size_t(2 * 2 + h)] == doctest::Approx(0.0));
    }
  }

  TEST_CASE("reference ragged: a sink joins the denominator only; alone it gives zeros and lse = sink") {
    TinyRagged t(1, {1, 1}, {1, 0}, 1);
    t.V(0, 0) = 1.f;  // logit 0 (q = 0)
    t.sinks = {float(std::log(3.0))};
    const auto r = reference_ragged_attention(t.args(), {});
    const int D = TinyRagged::D;
    CHECK(r.output[0] == doctest::Approx(0.25));  // e^0 / (e^log3 + e^0)
    CHECK(r.lse[0] == doctest::Approx(std::log(4.0)));
    // Sequence 1 has no context: zeros, and lse is the sink.
    CHECK(r.output[std::size_t(D)] == 0.0);
    CHECK(r.lse[1] == doctest::Approx(std::log(3.0)));
  }

  TEST_CASE("reference ragged: window, soft cap, empty sequences and seq_count") {
    TinyRagged t(1, {3, 0, 2}, {3, 4, 2}, 4);
    for (int i = 0; i < 4; ++i) t.V(i, i) = 1.f;
    PagedAttentionOptions o;
    o.sliding_window = 1;  // each token sees itself only
    auto r = reference_ragged_attention(t.args(), o);
    const int D = TinyRagged::D;
    for (int i = 0; i < 3; ++i) CHECK(r.output[std::size_t(i * D + i)] == doctest::Approx(1.0));
    CHECK(r.output[std::size_t(3 * D + 0)] == doctest::Approx(1.0));  // sequence 2, token 0: position 0
    t.count = {1};                                                    // only sequence 0 is computed
    r = reference_ragged_attention(t.args(), o);
    CHECK(r.seqs == std::vector<int>{0});
    CHECK(r.output[std::size_t(3 * D + 0)] == 0.0);
    CHECK(std::isinf(r.lse[3]));
    // Soft cap: raw logit 10 becomes 2 tanh(5).
    TinyRagged c(1, {1}, {2}, 2);
    c.Q(0, 0, 0) = 10.f;
    c.K(0, 0) = 1.f;
    c.V(0, 0) = 1.f;
    c.V(1, 1) = 1.f;
    PagedAttentionOptions cap;
    cap.attn_scale = 1.f;
    cap.attn_logits_soft_cap = 2.f;
    r = reference_ragged_attention(c.args(), cap);
    const double capped = 2.0 * std::tanh(5.0);
    CHECK(r.output[0] == doctest::Approx(std::exp(capped) / (std::exp(capped) + 1.0)).epsilon(1e-12));
  }

  TEST_CASE("reference ragged: hostile query_start is clamped into the packed rows") {
    TinyRagged t(1, {2, 2}, {2, 2}, 2);
    t.starts = {-5, 3, 1};  // sequence 0: rows [0, 3); sequence 1: 3 -> 1, empty
    t.V(0, 0) = 1.f;
    const auto r = reference_ragged_attention(t.args(), {});
    CHECK(r.output.size() == std::size_t(4 * TinyRagged::D));
    CHECK(std::isinf(r.lse[3]));  // row 3 belongs to no sequence
    CHECK(std::isfinite(r.lse[2]));
  }

  TEST_CASE("reference ragged: agrees with the batched reference for uniform query lengths") {
    testing::ProblemConfig c;
    c.num_heads = 6, c.num_kv_heads = 2, c.head_dim = 32, c.q_len = 4, c.page_size = 4;
    c.context_lens = {9, 4, 17};
    c.poison_unused = false;
    testing::HostProblem host(c);
    PagedAttentionOptions o;
    o.sliding_window = 6;
    const PagedAttentionArgs b = host.args();
    const auto want = reference_paged_attention(b, o);
    RaggedAttentionArgs a;
    a.query = TensorView(b.query.data, b.query.dtype, {12, 6, 32});
    a.output = TensorView(b.output.data, b.output.dtype, {12, 6, 32});
    std::vector<int> starts{0, 4, 8, 12};
    a.query_start = TensorView(starts.data(), DType::i32, {4});
    a.key_cache = b.key_cache, a.value_cache = b.value_cache, a.layout = b.layout;
    a.context_lens = b.context_lens, a.block_tables = b.block_tables;
    const auto got = reference_ragged_attention(a, o);
    REQUIRE(got.output.size() == want.output.size());
    for (std::size_t i = 0; i < want.output.size(); ++i) CHECK(got.output[i] == doctest::Approx(want.output[i]));
    for (std::size_t i = 0; i < want.lse.size(); ++i) CHECK(got.lse[i] == want.lse[i]);
  }
}
