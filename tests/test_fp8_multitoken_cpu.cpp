// fp8 conversions, the multi-token reference and the validation rules of
// the fp8-cache and multi-token arguments (scales, rank-4 queries).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention/planner.hpp"
#include "attention/validate.hpp"
#include "jit/kernel_cache.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/reference.hpp"
#include "pagedjit/testing.hpp"

using namespace pagedjit;

namespace {

std::uint8_t enc(float x, DType d) {
  std::uint8_t b = 0;
  store_element(&b, 0, x, d);
  return b;
}
float dec(std::uint8_t b, DType d) {
  return load_element(&b, 0, d);
}

template <class E>
void expect_error(const PagedAttentionArgs& a, const PagedAttentionOptions& o, const std::string& arg) {
  try {
    validate_call(a, o);
    FAIL("no error for argument ", arg);
  } catch (const E& e) {
    CHECK(e.argument() == arg);
  }
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("fp8: known encodings of e4m3 and e5m2") {
    CHECK(enc(1.f, DType::e4m3) == 0x38);
    CHECK(enc(-2.f, DType::e4m3) == 0xc0);
    CHECK(enc(448.f, DType::e4m3) == 0x7e);
    CHECK(enc(1e6f, DType::e4m3) == 0x7e);                  // saturates
    CHECK(enc(std::ldexp(1.f, -9), DType::e4m3) == 0x01);   // smallest subnormal
    CHECK(enc(std::ldexp(1.f, -11), DType::e4m3) == 0x00);  // below half of it: zero
    CHECK(enc(1.0625f, DType::e4m3) == 0x38);               // a tie between 1 and 1.125: to even
    CHECK(enc(1.1875f, DType::e4m3) == 0x3a);               // a tie between 1.125 and 1.25: to even
    CHECK(enc(1.f, DType::e5m2) == 0x3c);
    CHECK(enc(57344.f, DType::e5m2) == 0x7b);
    CHECK(enc(std::numeric_limits<float>::infinity(), DType::e5m2) == 0x7c);
    CHECK(enc(std::ldexp(1.f, -16), DType::e5m2) == 0x01);
    CHECK(std::isnan(dec(0x7f, DType::e4m3)));
    CHECK(std::isnan(dec(0x7d, DType::e5m2)));
    CHECK(std::isinf(dec(0xfc, DType::e5m2)));
    CHECK(dtype_size(DType::e4m3) == 1);
    CHECK(parse_dtype("e5m2") == DType::e5m2);
  }

  TEST_CASE("fp8: every finite code decodes and re-encodes to itself") {
    for (DType d : {DType::e4m3, DType::e5m2})
      for (int b = 0; b < 256; ++b) {
        const float x = dec(std::uint8_t(b), d);
        if (!std::isfinite(x)) continue;
        if (x == 0.f) continue;  // -0 and +0 both fine
        INFO(dtype_name(d) << " code " << b << " value " << x);
        CHECK(enc(x, d) == b);
        CHECK(round_to_dtype(x, d) == x);
      }
  }

  TEST_CASE("reference: query token i of q_len sees the context up to len - q_len + i") {
    // A 3-token query over 20 tokens equals three single-token queries over 18, 19, 20 tokens.
    testing::ProblemConfig c;
    c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 32, c.q_len = 3;
    c.context_lens = {20};
    c.dtype = c.out_dtype = DType::f32;
    testing::HostProblem multi(c);
    const ReferenceOutputs m = reference_paged_attention(multi.args(), {});
    const int row = c.num_heads * c.head_dim;
    for (int i = 0; i < 3; ++i) {
      PagedAttentionArgs a = multi.args();
      std::vector<std::int32_t> len{20 - 2 + i};
      a.context_lens.data = len.data();
      // Token i's query rows, viewed as a rank-3 query.
      a.query = TensorView(static_cast<float*>(a.query.data) + i * row, DType::f32, {1, c.num_heads, c.head_dim},
                           {3 * row, c.head_dim, 1});
      a.output = TensorView(nullptr, DType::f32, {1, c.num_heads, c.head_dim});
      std::vector<float> out(static_cast<std::size_t>(row));
      a.output.data = out.data();
      const ReferenceOutputs s = reference_paged_attention(a, {});
      for (int j = 0; j < row; ++j)
        CHECK(m.output[std::size_t(i * row + j)] == doctest::Approx(s.output[std::size_t(j)]));
    }
  }

  TEST_CASE("reference: fp8 values are dequantized with per-head scales") {
    testing::ProblemConfig c;
    c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 16;
    c.context_lens = {9};
    c.kv_dtype = DType::e4m3;
    testing::HostProblem p(c);
    REQUIRE(p.k_scale.size() == 2);
    const ReferenceOutputs scaled = reference_paged_attention(p.args(), {});
    PagedAttentionArgs a = p.args();
    a.k_scale = a.v_scale = TensorView();
    const ReferenceOutputs plain = reference_paged_attention(a, {});
    // V's scale multiplies the output of its KV head (K's only reshapes the weights).
    bool differs = false;
    for (std::size_t i = 0; i < plain.output.size(); ++i) differs |= plain.output[i] != scaled.output[i];
    CHECK(differs);
  }

  TEST_CASE("validate: fp8 caches, scales and multi-token queries") {
    testing::ProblemConfig c;
    c.num_heads = 8, c.num_kv_heads = 2, c.head_dim = 64, c.context_lens = {5, 17};
    c.kv_dtype = DType::e5m2;
    c.q_len = 4;
    c.with_lse = true;
    testing::HostProblem p(c);
    PagedAttentionOptions o;
    o.return_lse = true;
    const ProblemShape s = validate_call(p.args(), o);
    CHECK(s.q_len == 4);
    CHECK(s.kv_dtype == DType::e5m2);
    CHECK(s.dtype == DType::bf16);

    PagedAttentionArgs a = p.args();
    a.query.shape[1] = 9;  // q_len above 8
    expect_error<InvalidArgument>(a, o, "query");
    a = p.args(), a.query.dtype = DType::f32;  // fp8 needs fp16/bf16
    expect_error<InvalidArgument>(a, o, "query");
    a = p.args(), a.value_cache.dtype = DType::e4m3;  // K and V differ
    expect_error<InvalidArgument>(a, o, "value_cache");
    a = p.args(), a.output.rank = 3;
    expect_error<InvalidArgument>(a, o, "output");
    a = p.args(), a.lse.rank = 2;
    expect_error<InvalidArgument>(a, o, "lse");
    a = p.args(), a.lse.shape[1] = 3;
    expect_error<InvalidArgument>(a, o, "lse");
    a = p.args(), a.k_scale.shape[0] = 3;  // neither 1 nor num_kv_heads
    expect_error<InvalidArgument>(a, o, "k_scale");
    a = p.args(), a.v_scale.dtype = DType::f16;
    expect_error<InvalidArgument>(a, o, "v_scale");
    a = p.args(), a.k_scale.data = nullptr;
    expect_error<InvalidArgument>(a, o, "k_scale");
    a = p.args(), a.k_scale.shape[0] = 1;  // one per tensor is fine
    CHECK_NOTHROW(validate_call(a, o));

    testing::ProblemConfig plain = c;
    plain.kv_dtype.reset();
    testing::HostProblem q(plain);
    a = q.args(), a.k_scale = p.args().k_scale;  // a scale on a bf16 cache means nothing
    expect_error<InvalidArgument>(a, o, "k_scale");
    a = q.args(), a.key_cache.dtype = a.value_cache.dtype = DType::f16;  // non-fp8 must match the query
    expect_error<InvalidArgument>(a, o, "key_cache");
  }

  TEST_CASE("plan: fp8 needs sm_89+, multi-token rows fill the MMA tile") {
    testing::ProblemConfig c;
    c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 128, c.context_lens = {100};
    c.kv_dtype = DType::e4m3;
    c.q_len = 4;
    testing::HostProblem p(c);
    const ProblemShape s = validate_call(p.args(), {});
    DeviceInfo old = DeviceInfo::h100_sxm();
    old.cc_major = 8, old.cc_minor = 0;
    CHECK_THROWS_AS(plan_problem(s, {}, old), NotSupported);
    const LaunchInfo info = plan_problem(s, {}, DeviceInfo::h100_sxm());
    CHECK(info.heads_per_cta == 16);  // 4 heads x 4 tokens
    CHECK(info.head_chunks == 1);
    CHECK(info.decode_kernel.find("pj::e4m3") != std::string::npos);
    c.q_len = 5;  // 20 rows: two CTAs of 10
    testing::HostProblem p5(c);
    const LaunchInfo i5 = plan_problem(validate_call(p5.args(), {}), {}, DeviceInfo::h100_sxm());
    CHECK(i5.head_chunks == 2);
    CHECK(i5.heads_per_cta == 10);
  }

  TEST_CASE("compile: fp8 decode kernels and the merge kernel, for sm_90a") {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    for (DType kv : {DType::e4m3, DType::e5m2})
      for (int d : {64, 80, 128, 256, 512}) {
        testing::ProblemConfig c;
        c.num_heads = 16, c.num_kv_heads = 2, c.head_dim = d, c.context_lens = {100};
        c.dtype = d == 80 ? DType::f16 : DType::bf16;
        c.kv_dtype = kv;
        testing::HostProblem p(c);
        const attention::Plan plan = attention::make_plan(validate_call(p.args(), {}), {}, h100);
        CAPTURE(plan.decode.readable());
        CHECK(plan.decode.kv_dtype == kv);
        CHECK(plan.info.smem_bytes <= h100.max_smem_per_block);
        CHECK(jit::KernelCache::global().get(plan.decode)->binary.size() > 1000);
      }
    jit::KernelSpec merge;
    merge.kind = jit::KernelKind::merge;
    merge.q_dtype = DType::f32, merge.out_dtype = DType::bf16, merge.arch = "sm_90a";
    CHECK(merge.name_expression() == "pj::merge_states<pj::f32, pj::bf16>");
    CHECK(jit::KernelCache::global().get(merge)->lowered_name.rfind("_ZN2pj12merge_states", 0) == 0);
  }
}
