// The ragged call's own rules (query_start, seq_count, max_query_len, packed
// query and lse), attention sinks in both calls, and the plans of short and
// long queries. Pointers are host memory: validation never dereferences them.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "attention/planner.hpp"
#include "attention/validate.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"
#include "small_problem.hpp"

using namespace pagedjit;

namespace {

const DeviceInfo h100 = DeviceInfo::h100_sxm();

// Two sequences of 3 and 1 new tokens over the small problem's caches.
struct Ragged {
  testing::HostProblem host{pjtest::small_problem_config()};
  std::vector<std::uint8_t> q, out;
  std::vector<float> lse, sinks;
  std::vector<int> starts{0, 3, 4}, count{2};

  RaggedAttentionArgs args() {
    const PagedAttentionArgs a = host.args();
    const int heads = 8, dim = 64, rows = 4;
    q.assign(std::size_t(rows * heads * dim * 2), 0);
    out.assign(q.size(), 0);
    lse.assign(std::size_t(rows * heads), 0.f);
    sinks.assign(std::size_t(heads), 0.f);
    RaggedAttentionArgs r;
    r.query = TensorView(q.data(), DType::bf16, {rows, heads, dim});
    r.output = TensorView(out.data(), DType::bf16, {rows, heads, dim});
    r.lse = TensorView(lse.data(), DType::f32, {rows, heads});
    r.query_start = TensorView(starts.data(), DType::i32, {3});
    r.key_cache = a.key_cache, r.value_cache = a.value_cache;
    r.context_lens = a.context_lens, r.block_tables = a.block_tables;
    return r;
  }
};

template <class E>
void expect_error(const std::function<void(Ragged&, RaggedAttentionArgs&, PagedAttentionOptions&)>& mutate,
                  const std::string& arg) {
  Ragged r;
  RaggedAttentionArgs a = r.args();
  PagedAttentionOptions o;
  o.return_lse = true;
  mutate(r, a, o);
  try {
    validate_ragged(a, o);
    FAIL("no error for argument ", arg);
  } catch (const E& e) {
    CHECK(e.argument() == arg);
    CHECK(std::string(e.what()).find(arg) != std::string::npos);
  }
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("validate ragged: the baseline call, and the shape it gives") {
    Ragged r;
    RaggedAttentionArgs a = r.args();
    PagedAttentionOptions o;
    o.return_lse = true;
    ProblemShape s = validate_ragged(a, o);
    CHECK(s.ragged);
    CHECK(s.num_seqs == 2);
    CHECK(s.total_tokens == 4);
    CHECK(s.q_len == 4);  // no hint: total_tokens bounds every sequence
    a.max_query_len = 3;
    s = validate_ragged(a, o);
    CHECK(s.q_len == 3);
    a.sinks = TensorView(r.sinks.data(), DType::f32, {8});
    a.seq_count = TensorView(r.count.data(), DType::i32, {1});
    CHECK_NOTHROW(validate_ragged(a, o));
  }

  TEST_CASE("validate ragged: more packed rows than a decode call's sequences are fine") {
    Ragged r;
    RaggedAttentionArgs a = r.args();
    std::vector<std::uint8_t> big(std::size_t(70000) * 8 * 64 * 2);
    std::vector<std::uint8_t> big_out(big.size());
    a.query = TensorView(big.data(), DType::bf16, {70000, 8, 64});
    a.output = TensorView(big_out.data(), DType::bf16, {70000, 8, 64});
    a.max_query_len = 4096;
    CHECK(validate_ragged(a, {}).total_tokens == 70000);
  }

  TEST_CASE("validate ragged: each rule names its argument") {
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.query.rank = 4; }, "query");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.query_start.shape[0] = 2; }, "query_start");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.query_start.dtype = DType::f32; }, "query_start");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.query_start.strides[0] = 2; }, "query_start");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.query_start.data = nullptr; }, "query_start");
    expect_error<InvalidArgument>(
        [](auto& r, auto& a, auto&) { a.seq_count = TensorView(r.count.data(), DType::i32, {2}); }, "seq_count");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.max_query_len = 5; }, "max_query_len");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.max_query_len = -1; }, "max_query_len");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.lse.shape[0] = 3; }, "lse");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.output.shape[0] = 3; }, "output");
    expect_error<InvalidArgument>(
        [](auto& r, auto& a, auto&) { a.sinks = TensorView(r.sinks.data(), DType::f32, {4}); }, "sinks");
    expect_error<InvalidArgument>(
        [](auto& r, auto& a, auto&) { a.sinks = TensorView(r.sinks.data(), DType::bf16, {8}); }, "sinks");
    expect_error<InvalidArgument>([](auto&, auto& a, auto&) { a.context_lens.dtype = DType::f32; }, "context_lens");
  }

  TEST_CASE("fuzz: fixed validation bug: a negative num_seqs (context_lens' size) was accepted") {
    // fuzz_ragged, corpus regress-ragged-negative-num-seqs: context_lens [-1094795586], block_tables of as many
    // rows and query_start of one more passed every comparison with num_seqs, and "num_seqs > 0" skipped the memory
    // checks; the call was accepted, to be planned with a negative grid.
    for (const std::int64_t n :
         {std::int64_t(-1), std::int64_t(-2), std::int64_t(-1094795586), std::int64_t(1) << 40}) {
      CAPTURE(n);
      expect_error<InvalidArgument>(
          [n](auto&, auto& a, auto&) {
            a.context_lens.shape[0] = a.block_tables.shape[0] = n;
            a.query_start.shape[0] = n + 1;
          },
          "context_lens");
    }
  }

  TEST_CASE("validate: sinks in paged_attention") {
    testing::HostProblem host(pjtest::small_problem_config());
    std::vector<float> sinks(8, 0.f);
    PagedAttentionArgs a = host.args();
    a.sinks = TensorView(sinks.data(), DType::f32, {8});
    CHECK_NOTHROW(validate_call(a, {}));
    a.sinks = TensorView(sinks.data(), DType::f32, {2});
    CHECK_THROWS_AS(validate_call(a, {}), InvalidArgument);
  }

  TEST_CASE("planner: short ragged queries plan like decode calls; long ones run unsplit on the host schedule") {
    ProblemShape s;
    s.num_seqs = 64, s.num_heads = 32, s.num_kv_heads = 8, s.head_dim = 128;
    s.page_size = 16, s.max_blocks = 512, s.num_blocks = 64 * 512, s.max_context_len = 8192;
    s.ragged = true, s.total_tokens = 64;
    const LaunchInfo decode = plan_problem(s, {}, h100, true, true);
    ProblemShape paged = s;
    paged.ragged = false, paged.total_tokens = 0;
    CHECK(decode.describe() == plan_problem(paged, {}, h100, true, true).describe());
    CHECK(decode.work_items > 0);

    s.q_len = 2048, s.total_tokens = 2048 + 63;
    const LaunchInfo prefill = plan_problem(s, {}, h100, true, true);
    CHECK(prefill.num_splits == 1);
    CHECK(prefill.work_items == 0);
    CHECK(prefill.workspace_bytes == 0);
    CHECK(prefill.grid[1] == 64);
    CHECK(std::int64_t(prefill.grid[0]) * prefill.heads_per_cta >= 8 * 4 * 2048);  // every row has a CTA
  }
}
