// The ragged call on decode-shaped steps (every sequence the same few query
// tokens): the same bits as paged_attention on the same data, seq_count
// skipping sequences, and attention sinks against the closed form from a
// run without them. Outputs are poisoned (NaN) before every run.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gpu.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/testing.hpp"

using namespace pagedjit;

namespace {

struct Case {
  const char* name;
  int seqs, heads, kv_heads, head_dim, q_len;
  DType dtype;
  std::optional<DType> kv;
};

testing::ProblemConfig config_of(const Case& c) {
  testing::ProblemConfig cfg;
  cfg.num_heads = c.heads, cfg.num_kv_heads = c.kv_heads, cfg.head_dim = c.head_dim;
  cfg.dtype = cfg.out_dtype = c.dtype;
  cfg.kv_dtype = c.kv;
  cfg.q_len = c.q_len;
  cfg.with_lse = true;
  std::mt19937 rng(unsigned(c.seqs * 31 + c.q_len));
  for (int i = 0; i < c.seqs; ++i) cfg.context_lens.push_back(c.q_len + int(rng() % 3000));
  cfg.context_lens[0] = 9000;
  cfg.seed = std::uint64_t(c.seqs);
  return cfg;
}

// The decode problem's rank-4 (or rank-3) tensors seen as packed rows.
struct RaggedView {
  DeviceBuffer starts, count;
  RaggedAttentionArgs args;

  RaggedView(const PagedAttentionArgs& a, int seqs, int q_len) : starts(std::size_t(seqs + 1) * 4), count(4) {
    std::vector<int> s(std::size_t(seqs) + 1);
    for (int i = 0; i <= seqs; ++i) s[std::size_t(i)] = i * q_len;
    starts.upload(s.data(), s.size() * 4);
    const std::int64_t rows = std::int64_t(seqs) * q_len;
    // [seqs, (q_len,) rest...] -> [seqs * q_len, rest...]: the token axis
    // (the sequence axis at rank 3 / 2) steps one row.
    auto packed = [&](const TensorView& t, int rest) {
      const int lead = t.rank - rest - 1;
      TensorView v = t;
      v.rank = rest + 1;
      v.shape = {rows, 0, 0, 0}, v.strides = {t.strides[lead], 0, 0, 0};
      for (int i = 1; i <= rest; ++i) v.shape[i] = t.shape[lead + i], v.strides[i] = t.strides[lead + i];
      return v;
    };
    args.query = packed(a.query, 2);
    args.output = packed(a.output, 2);
    args.lse = packed(a.lse, 1);
    args.query_start = TensorView(starts.data(), DType::i32, {seqs + 1});
    args.key_cache = a.key_cache, args.value_cache = a.value_cache;
    args.context_lens = a.context_lens, args.block_tables = a.block_tables;
    args.k_scale = a.k_scale, args.v_scale = a.v_scale;
    args.max_query_len = q_len;
  }
};

void sync() {
  check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu: ragged call on decode steps: paged_attention's bits, and seq_count" * pjtest::skip_without_gpu()) {
    const Case cases[] = {
        {"one token, group 4", 48, 32, 8, 128, 1, DType::bf16, {}},
        {"three tokens, group 4", 20, 16, 4, 64, 3, DType::bf16, {}},
        {"eight tokens, mqa", 12, 8, 1, 128, 8, DType::f16, {}},
        {"fp32 d96 two tokens", 10, 8, 2, 96, 2, DType::f32, {}},
        {"e4m3 one token", 24, 32, 8, 128, 1, DType::bf16, DType::e4m3},
        {"one sequence, one token", 1, 32, 8, 128, 1, DType::bf16, {}},
    };
    for (const Case& c : cases) {
      INFO(c.name);
      testing::DeviceProblem prob(config_of(c));
      PagedAttentionOptions o;
      o.return_lse = true;
      prob.poison_outputs();
      const LaunchInfo paged = pjtest::engine().paged_attention(prob.args(), o);
      sync();
      const std::vector<float> want = prob.output(), want_lse = prob.lse();
      CHECK(prob.check(o).nonfinite == 0);

      RaggedView r(prob.args(), c.seqs, c.q_len);
      prob.poison_outputs();
      const LaunchInfo ragged = pjtest::engine().ragged_paged_attention(r.args, o);
      sync();
      INFO(paged.describe());
      INFO(ragged.describe());
      CHECK(ragged.describe() == paged.describe());
      const std::vector<float> got = prob.output(), got_lse = prob.lse();
      CHECK(std::memcmp(got.data(), want.data(), want.size() * 4) == 0);
      CHECK(std::memcmp(got_lse.data(), want_lse.data(), want_lse.size() * 4) == 0);

      // seq_count: the first half is computed, the rest keeps its poison.
      const int keep = c.seqs / 2;
      r.count.upload(&keep, 4);
      r.args.seq_count = TensorView(r.count.data(), DType::i32, {1});
      prob.poison_outputs();
      pjtest::engine().ragged_paged_attention(r.args, o);
      sync();
      const std::vector<float> half = prob.output();
      const std::size_t split = want.size() / std::size_t(c.seqs) * std::size_t(keep);
      CHECK(std::memcmp(half.data(), want.data(), split * 4) == 0);
      std::size_t untouched = 0;
      for (std::size_t i = split; i < half.size(); ++i) untouched += std::isnan(half[i]) ? 1 : 0;
      CHECK(untouched == half.size() - split);
    }
  }

  TEST_CASE("gpu: attention sinks scale each row by l / (l + e^sink) in both calls" * pjtest::skip_without_gpu()) {
    const Case cases[] = {
        {"fp32 group 4", 16, 16, 4, 64, 1, DType::f32, {}},
        {"fp32 two tokens, split", 3, 8, 2, 128, 2, DType::f32, {}},
    };
    for (const Case& c : cases) {
      INFO(c.name);
      testing::DeviceProblem prob(config_of(c));
      PagedAttentionOptions o;
      o.return_lse = true;
      prob.poison_outputs();
      pjtest::engine().paged_attention(prob.args(), o);
      sync();
      const std::vector<float> base = prob.output(), base_lse = prob.lse();

      std::vector<float> sink(std::size_t(c.heads));
      for (int h = 0; h < c.heads; ++h) sink[std::size_t(h)] = -4.f + 1.5f * float(h % 8);
      DeviceBuffer sinks(sink.size() * 4);
      sinks.upload(sink.data(), sink.size() * 4);
      PagedAttentionArgs a = prob.args();
      a.sinks = TensorView(sinks.data(), DType::f32, {c.heads});
      for (const bool ragged : {false, true}) {
        INFO((ragged ? "ragged call" : "paged call"));
        prob.poison_outputs();
        if (ragged) {
          RaggedView r(a, c.seqs, c.q_len);
          r.args.sinks = a.sinks;
          pjtest::engine().ragged_paged_attention(r.args, o);
        } else {
          pjtest::engine().paged_attention(a, o);
        }
        sync();
        const std::vector<float> out = prob.output(), lse = prob.lse();
        double worst = 0, worst_lse = 0;
        for (std::size_t row = 0; row < lse.size(); ++row) {
          const double s = sink[row % std::size_t(c.heads)], l = base_lse[row];
          const double total = std::max(l, s) + std::log1p(std::exp(-std::fabs(l - s)));
          worst_lse = std::max(worst_lse, std::fabs(lse[row] - total));
          const double f = std::exp(l - total);
          for (int d = 0; d < c.head_dim; ++d) {
            const std::size_t i = row * std::size_t(c.head_dim) + std::size_t(d);
            worst = std::max(worst, std::fabs(out[i] - base[i] * f) / (std::fabs(base[i]) + 1e-3));
          }
        }
        CHECK(worst < 1e-4);
        CHECK(worst_lse < 1e-4);
      }
    }
  }
}
