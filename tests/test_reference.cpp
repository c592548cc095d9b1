// The CPU reference against values computed by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "pagedjit/reference.hpp"

using namespace pagedjit;

namespace {

// A tiny fp32 problem: 1 sequence, `heads` query heads over `kv_heads` KV heads,
// head_dim 16, page_size 1, pages in table order. Vectors are one-hot.
struct Tiny {
  static constexpr int D = 16;
  int heads, kv_heads, tokens;
  std::vector<float> q, k, v, out, lse;
  std::vector<int> lens, table;

  Tiny(int heads_, int kv_heads_, int tokens_)
      : heads(heads_),
        kv_heads(kv_heads_),
        tokens(tokens_),
        q(std::size_t(heads_ * D), 0.f),
        k(std::size_t(tokens_ * kv_heads_ * D), 0.f),
        v(k.size(), 0.f),
        out(q.size()),
        lse(std::size_t(heads_)),
        lens{tokens_},
        table(std::size_t(tokens_)) {
    for (int t = 0; t < tokens; ++t) table[std::size_t(t)] = t;
  }
  float& K(int t, int h, int d) { return k[std::size_t((t * kv_heads + h) * D + d)]; }
  float& V(int t, int h, int d) { return v[std::size_t((t * kv_heads + h) * D + d)]; }
  PagedAttentionArgs args() {
    PagedAttentionArgs a;
    a.query = TensorView(q.data(), DType::f32, {1, heads, D});
    a.key_cache = TensorView(k.data(), DType::f32, {tokens, kv_heads, 1, D});
    a.value_cache = TensorView(v.data(), DType::f32, {tokens, kv_heads, 1, D});
    a.context_lens = TensorView(lens.data(), DType::i32, {1});
    a.block_tables = TensorView(table.data(), DType::i32, {1, tokens});
    a.output = TensorView(out.data(), DType::f32, {1, heads, D});
    a.lse = TensorView(lse.data(), DType::f32, {1, heads});
    return a;
  }
};

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("reference: two tokens, softmax by hand") {
    Tiny t(1, 1, 2);
    t.q[0] = 1.f;
    t.K(0, 0, 0) = 1.f;  // logit 1
    t.K(1, 0, 1) = 1.f;  // logit 0
    t.V(0, 0, 0) = 1.f;
    t.V(1, 0, 1) = 1.f;
    PagedAttentionOptions o;
    o.attn_scale = 1.f;
    const auto r = reference_paged_attention(t.args(), o);
    const double e = std::exp(1.0);
    CHECK(r.output[0] == doctest::Approx(e / (e + 1)).epsilon(1e-12));
    CHECK(r.output[1] == doctest::Approx(1 / (e + 1)).epsilon(1e-12));
    CHECK(r.output[2] == 0.0);
    CHECK(r.lse[0] == doctest::Approx(std::log(e + 1)).epsilon(1e-12));
  }

  TEST_CASE("reference: default scale is 1/sqrt(head_dim)") {
    Tiny t(1, 1, 2);
    t.q[0] = 4.f;  // q.k0 = 4 -> logit 4 / sqrt(16) = 1
    t.K(0, 0, 0) = 1.f;
    t.V(0, 0, 0) = 1.f;
    const auto r = reference_paged_attention(t.args(), {});
    const double e = std::exp(1.0);
    CHECK(r.output[0] == doctest::Approx(e / (e + 1)).epsilon(1e-12));
  }

  TEST_CASE("reference: context_len 0 gives a zero row and lse -inf") {
    Tiny t(1, 1, 2);
    t.V(0, 0, 0) = 1.f;
    t.lens[0] = 0;
    const auto r = reference_paged_attention(t.args(), {});
    CHECK(r.output[0] == 0.0);
    CHECK(std::isinf(r.lse[0]));
    CHECK(r.lse[0] < 0);
  }

  TEST_CASE("reference: a -1 inside the used range masks its tokens") {
    Tiny t(1, 1, 3);
    for (int i = 0; i < 3; ++i) t.V(i, 0, i) = 1.f;  // all logits 0: uniform weights
    t.table[1] = -1;
    const auto r = reference_paged_attention(t.args(), {});
    CHECK(r.output[0] == doctest::Approx(0.5));
    CHECK(r.output[1] == 0.0);
    CHECK(r.output[2] == doctest::Approx(0.5));
  }

  TEST_CASE("reference: sliding window keeps the last W tokens") {
    Tiny t(1, 1, 3);
    for (int i = 0; i < 3; ++i) t.V(i, 0, i) = 1.f;
    PagedAttentionOptions o;
    o.sliding_window = 1;
    auto r = reference_paged_attention(t.args(), o);
    CHECK(r.output[2] == doctest::Approx(1.0));
    CHECK(r.output[0] == 0.0);
    o.sliding_window = 100;  // larger than the context: everything
    r = reference_paged_attention(t.args(), o);
    CHECK(r.output[0] == doctest::Approx(1.0 / 3));
  }

  TEST_CASE("reference: soft cap bounds the logits") {
    Tiny t(1, 1, 2);
    t.q[0] = 10.f;
    t.K(0, 0, 0) = 1.f;  // raw logit 10
    t.V(0, 0, 0) = 1.f;
    t.V(1, 0, 1) = 1.f;
    PagedAttentionOptions o;
    o.attn_scale = 1.f;
    o.attn_logits_soft_cap = 2.f;
    const auto r = reference_paged_attention(t.args(), o);
    const double capped = 2.0 * std::tanh(5.0);
    const double w = std::exp(capped) / (std::exp(capped) + 1.0);
    CHECK(r.output[0] == doctest::Approx(w).epsilon(1e-12));
  }

  TEST_CASE("reference: query head h reads KV head h / group") {
    Tiny t(4, 2, 1);  // group 2
    t.V(0, 0, 0) = 1.f;
    t.V(0, 1, 1) = 1.f;
    const auto r = reference_paged_attention(t.args(), {});
    for (int h = 0; h < 4; ++h) {
      CHECK(r.output[std::size_t(h * 16 + (h / 2))] == doctest::Approx(1.0));
      CHECK(r.output[std::size_t(h * 16 + 1 - (h / 2))] == 0.0);
    }
  }

  TEST_CASE("reference: fp16 and bf16 rounding is round-to-nearest-even") {
    CHECK(round_to_dtype(1.0f + 1.0f / 2048, DType::f16) == 1.0f);  // tie -> even
    CHECK(round_to_dtype(1.0f + 3.0f / 2048, DType::f16) == 1.0f + 2.0f / 1024);
    CHECK(round_to_dtype(65520.f, DType::f16) == std::numeric_limits<float>::infinity());
    CHECK(round_to_dtype(5.96046448e-8f, DType::f16) == 5.96046448e-8f);  // smallest subnormal
    CHECK(round_to_dtype(1.0f + 1.0f / 256, DType::bf16) == 1.0f);        // tie -> even
    CHECK(round_to_dtype(1.0f + 3.0f / 256, DType::bf16) == 1.0f + 1.0f / 64);
    CHECK(std::isnan(round_to_dtype(std::numeric_limits<float>::quiet_NaN(), DType::bf16)));
    std::uint16_t buf[2];
    store_element(buf, 1, -2.5f, DType::f16);
    CHECK(load_element(buf, 1, DType::f16) == -2.5f);
  }
}
