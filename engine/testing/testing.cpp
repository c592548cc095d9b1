#include "pagedjit/testing.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <thread>

#include "pagedjit/errors.hpp"

namespace pagedjit::testing {
namespace {

// xorshift64*: fast, good enough for test data.
struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  std::uint64_t next() {
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  // Uniform in [-1, 1), never exactly zero.
  float uniform() {
    const float x = float(next() >> 40) * (2.0f / 16777216.0f) - 1.0f;
    return x == 0.f ? 0.5f : x;
  }
};

// Fills n elements in parallel: fixed 1M-element blocks, each with its own
// stream derived from (seed, block), so the data does not depend on the
// number of threads.
void fill_random(std::vector<std::uint8_t>& buf, std::int64_t n, DType dt, std::uint64_t seed) {
  constexpr std::int64_t kBlock = 1 << 20;
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  const int threads =
      int(std::clamp<std::int64_t>(std::thread::hardware_concurrency(), 1, std::max<std::int64_t>(1, blocks)));
  std::atomic<std::int64_t> next{0};
  auto work = [&] {
    for (std::int64_t b; (b = next.fetch_add(1)) < blocks;) {
      Rng rng(seed * 0x100000001B3ull + std::uint64_t(b));
      for (std::int64_t i = b * kBlock, e = std::min(n, i + kBlock); i < e; ++i)
        store_element(buf.data(), i, rng.uniform(), dt);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

}  // namespace

std::string ProblemConfig::describe() const {
  std::int64_t total = 0;
  int mx = 0;
  for (int l : context_lens) total += l, mx = std::max(mx, l);
  const std::string kv =
      kv_dtype && *kv_dtype != dtype ? fmt::format(" kv={} scales={}", dtype_name(*kv_dtype), kv_scales) : "";
  const std::string ql = q_len > 1 ? fmt::format(" q_len={}", q_len) : "";
  return fmt::format("seqs={} heads={}/{} d={} page={} {}->{}{}{} {} tokens={} max={} pad={} seed={}",
                     context_lens.size(), num_heads, num_kv_heads, head_dim, page_size, dtype_name(dtype),
                     dtype_name(out_dtype), kv, ql, layout_name(layout), total, mx, pad_elems, seed);
}

HostProblem::HostProblem(ProblemConfig cfg) : cfg_(std::move(cfg)) {
  const int S = int(cfg_.context_lens.size());
  const DType kvt = kv_dtype();
  const std::int64_t es = std::int64_t(dtype_size(cfg_.dtype)), kes = std::int64_t(dtype_size(kvt));
  // Padded rows keep 16-byte alignment in both the query's and the cache's element size.
  const std::int64_t pad = (cfg_.pad_elems + 15) / 16 * 16;
  q_row = cfg_.head_dim + pad;
  kv_row = cfg_.head_dim + pad;
  const int ps = cfg_.page_size;
  int max_len = 0;
  for (int l : cfg_.context_lens) max_len = std::max(max_len, l);
  if (cfg_.max_blocks == 0) cfg_.max_blocks = std::max(1, (max_len + ps - 1) / ps);
  const int mb = cfg_.max_blocks;

  std::vector<int> used(static_cast<std::size_t>(S));
  std::int64_t total_used = 0;
  for (int s = 0; s < S; ++s) {
    used[std::size_t(s)] = std::min(mb, (std::max(cfg_.context_lens[std::size_t(s)], 0) + ps - 1) / ps);
    total_used += used[std::size_t(s)];
  }
  num_blocks_ = std::max<std::int64_t>(1, total_used + cfg_.spare_blocks);
  Rng rng(cfg_.seed);
  std::vector<std::int32_t> perm(static_cast<std::size_t>(num_blocks_));
  std::iota(perm.begin(), perm.end(), 0);
  for (std::size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.next() % i]);

  lens = cfg_.context_lens;
  table.assign(std::size_t(S) * std::size_t(mb), -1);
  std::size_t next = 0;
  for (int s = 0; s < S; ++s)
    for (int j = 0; j < used[std::size_t(s)]; ++j) table[std::size_t(s) * mb + std::size_t(j)] = perm[next++];
  const bool share = cfg_.share_pages && S > 1 && lens[0] >= ps;
  if (share)
    for (int s = 1; s < S; ++s)
      if (used[std::size_t(s)] > 0) table[std::size_t(s) * mb] = table[0];

  for (int s = 0, left = cfg_.holes; s < S && left > 0; ++s)
    if (used[std::size_t(s)] >= 2) table[std::size_t(s) * mb + std::size_t(used[std::size_t(s)] / 2)] = -1, --left;

  const std::int64_t kv_elems = num_blocks_ * cfg_.num_kv_heads * ps * kv_row;
  const std::int64_t q_elems = std::int64_t(S) * cfg_.q_len * cfg_.num_heads * q_row;
  q.resize(std::size_t(q_elems * es));
  k.resize(std::size_t(kv_elems * kes));
  v.resize(std::size_t(kv_elems * kes));
  fill_random(q, q_elems, cfg_.dtype, rng.next());
  fill_random(k, kv_elems, kvt, rng.next());
  fill_random(v, kv_elems, kvt, rng.next());
  if (is_fp8(kvt) && cfg_.kv_scales > 0) {
    // Scales in [0.25, 2): the cache holds value / scale.
    const std::size_t n = cfg_.kv_scales == 1 ? 1 : std::size_t(cfg_.num_kv_heads);
    for (auto* sc : {&k_scale, &v_scale}) {
      sc->resize(n);
      for (float& x : *sc) x = 1.125f + 0.875f * rng.uniform();
    }
  }

  if (cfg_.poison_unused) {
    const PagedAttentionArgs a = args();
    const auto& st = a.key_cache.strides;
    int ab = 0, ah = 1, as = 2;
    if (cfg_.layout == CacheLayout::heads_blocks) ab = 1, ah = 0;
    if (cfg_.layout == CacheLayout::blocks_tokens) ah = 2, as = 1;
    const float bad[2] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()};
    auto poison_slot = [&](std::int64_t page, int slot) {
      for (int h = 0; h < cfg_.num_kv_heads; ++h)
        for (int d = 0; d < cfg_.head_dim; ++d) {
          const std::int64_t i = page * st[ab] + h * st[ah] + slot * st[as] + d;
          store_element(k.data(), i, bad[d & 1], kvt);
          store_element(v.data(), i, bad[(d + 1) & 1], kvt);
        }
    };
    for (int s = 0; s < S; ++s) {
      const int l = lens[std::size_t(s)];
      const int u = used[std::size_t(s)];
      if (u == 0 || l % ps == 0 || l > std::int64_t(mb) * ps) continue;
      if (share && u == 1 && s > 0) continue;  // its only page is sequence 0's full first page
      const std::int64_t last = table[std::size_t(s) * mb + std::size_t(u - 1)];
      if (last < 0) continue;
      for (int slot = l % ps; slot < ps; ++slot) poison_slot(last, slot);
    }
    for (std::size_t i = std::size_t(total_used); i < perm.size(); ++i)
      for (int slot = 0; slot < ps; ++slot) poison_slot(perm[i], slot);
  }
  out_scratch_.resize(std::size_t(rows() * cfg_.head_dim) * dtype_size(cfg_.out_dtype));
  lse_scratch_.resize(std::size_t(rows()) * 4);
}

std::int64_t HostProblem::rows() const {
  return std::int64_t(cfg_.context_lens.size()) * cfg_.q_len * cfg_.num_heads;
}

PagedAttentionArgs HostProblem::args() const {
  const int S = int(cfg_.context_lens.size());
  const std::int64_t H = cfg_.num_heads, KH = cfg_.num_kv_heads, D = cfg_.head_dim, P = cfg_.page_size;
  const std::int64_t NB = num_blocks_;
  PagedAttentionArgs a;
  a.layout = cfg_.layout;
  const std::int64_t L = cfg_.q_len;
  auto* qp = const_cast<std::uint8_t*>(q.data());
  a.query = L > 1 ? TensorView(qp, cfg_.dtype, {S, L, H, D}, {L * H * q_row, H * q_row, q_row, 1})
                  : TensorView(qp, cfg_.dtype, {S, H, D}, {H * q_row, q_row, 1});
  const DType kvt = kv_dtype();
  TensorView kv;
  switch (cfg_.layout) {
    case CacheLayout::blocks_heads:
      kv = TensorView(nullptr, kvt, {NB, KH, P, D}, {KH * P * kv_row, P * kv_row, kv_row, 1});
      break;
    case CacheLayout::heads_blocks:
      kv = TensorView(nullptr, kvt, {KH, NB, P, D}, {NB * P * kv_row, P * kv_row, kv_row, 1});
      break;
    case CacheLayout::blocks_tokens:
      kv = TensorView(nullptr, kvt, {NB, P, KH, D}, {P * KH * kv_row, KH * kv_row, kv_row, 1});
      break;
  }
  if (!k_scale.empty()) {
    const std::int64_t n = std::int64_t(k_scale.size());
    a.k_scale = TensorView(const_cast<float*>(k_scale.data()), DType::f32, {n});
    a.v_scale = TensorView(const_cast<float*>(v_scale.data()), DType::f32, {n});
  }
  a.key_cache = kv;
  a.key_cache.data = const_cast<std::uint8_t*>(k.data());
  a.value_cache = kv;
  a.value_cache.data = const_cast<std::uint8_t*>(v.data());
  a.context_lens = TensorView(const_cast<std::int32_t*>(lens.data()), DType::i32, {S});
  a.block_tables = TensorView(const_cast<std::int32_t*>(table.data()), DType::i32, {S, cfg_.max_blocks});
  a.output = L > 1 ? TensorView(out_scratch_.data(), cfg_.out_dtype, {S, L, H, D})
                   : TensorView(out_scratch_.data(), cfg_.out_dtype, {S, H, D});
  if (cfg_.with_lse)
    a.lse = L > 1 ? TensorView(lse_scratch_.data(), DType::f32, {S, L, H})
                  : TensorView(lse_scratch_.data(), DType::f32, {S, H});
  return a;
}

std::int64_t HostProblem::kv_bytes_read() const {
  const std::int64_t cap = std::int64_t(cfg_.max_blocks) * cfg_.page_size;
  std::int64_t tokens = 0;
  for (int l : lens) tokens += std::clamp<std::int64_t>(l, 0, cap);
  return tokens * cfg_.num_kv_heads * cfg_.head_dim * 2 * std::int64_t(dtype_size(kv_dtype()));
}

DeviceProblem::DeviceProblem(ProblemConfig cfg) : DeviceProblem(HostProblem(std::move(cfg))) {}

DeviceProblem::DeviceProblem(HostProblem host) : host_(std::move(host)) {
  auto up = [](DeviceBuffer& b, const void* src, std::size_t bytes) {
    b = DeviceBuffer(std::max<std::size_t>(bytes, 16));
    if (bytes) b.upload(src, bytes);
  };
  up(q_, host_.q.data(), host_.q.size());
  up(k_, host_.k.data(), host_.k.size());
  up(v_, host_.v.data(), host_.v.size());
  up(lens_, host_.lens.data(), host_.lens.size() * 4);
  up(table_, host_.table.data(), host_.table.size() * 4);
  up(k_scale_, host_.k_scale.data(), host_.k_scale.size() * 4);
  up(v_scale_, host_.v_scale.data(), host_.v_scale.size() * 4);
  const auto& c = host_.config();
  out_ = DeviceBuffer(std::max<std::size_t>(16, std::size_t(host_.rows() * c.head_dim) * dtype_size(c.out_dtype)));
  lse_ = DeviceBuffer(std::max<std::size_t>(16, std::size_t(host_.rows()) * 4));
}

PagedAttentionArgs DeviceProblem::args() const {
  PagedAttentionArgs a = host_.args();
  a.query.data = q_.data();
  a.key_cache.data = k_.data();
  a.value_cache.data = v_.data();
  a.context_lens.data = lens_.data();
  a.block_tables.data = table_.data();
  a.output.data = out_.data();
  if (host_.config().with_lse) a.lse.data = lse_.data();
  if (!host_.k_scale.empty()) a.k_scale.data = k_scale_.data(), a.v_scale.data = v_scale_.data();
  return a;
}

void DeviceProblem::poison_outputs() {
  pagedjit::check(driver().cuMemsetD8(out_.ptr(), 0xff, out_.size()), "cuMemsetD8");  // NaN in every float format
  pagedjit::check(driver().cuMemsetD8(lse_.ptr(), 0xff, lse_.size()), "cuMemsetD8");
  // Device memsets are asynchronous on the legacy stream, which does not order
  // work on non-blocking streams: finish before the caller launches anywhere.
  pagedjit::check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
}

std::vector<float> DeviceProblem::output() const {
  const auto& c = host_.config();
  const std::size_t n = std::size_t(host_.rows()) * std::size_t(c.head_dim);
  std::vector<std::uint8_t> raw(n * dtype_size(c.out_dtype));
  if (n) out_.download(raw.data(), raw.size());
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = load_element(raw.data(), std::int64_t(i), c.out_dtype);
  return out;
}

std::vector<float> DeviceProblem::lse() const {
  std::vector<float> out(static_cast<std::size_t>(host_.rows()));
  if (!out.empty()) lse_.download(out.data(), out.size() * 4);
  return out;
}

ErrorStats DeviceProblem::check(const PagedAttentionOptions& options, const std::vector<int>& seqs) const {
  PagedAttentionOptions o = options;
  o.return_lse = host_.config().with_lse;
  const ReferenceOutputs ref = reference_paged_attention(host_.args(), o, seqs);
  const auto& c = host_.config();
  const std::size_t seq_rows = std::size_t(c.q_len) * std::size_t(c.num_heads);  // rows of one sequence
  const std::size_t row = seq_rows * std::size_t(c.head_dim);
  const std::vector<float> all = output();
  std::vector<float> got;
  for (int s : ref.seqs)
    got.insert(got.end(), all.begin() + std::ptrdiff_t(s * row), all.begin() + std::ptrdiff_t((s + 1) * row));
  ErrorStats e = compare(got, ref.output);
  if (c.with_lse) {
    const std::vector<float> l = lse();
    for (std::size_t i = 0; i < ref.seqs.size(); ++i)
      for (std::size_t h = 0; h < seq_rows; ++h) {
        const double want = ref.lse[i * seq_rows + h];
        const float g = l[std::size_t(ref.seqs[i]) * seq_rows + h];
        if (std::isinf(want)) {
          if (!(std::isinf(g) && g < 0)) e.lse_ok = false;
        } else if (!std::isfinite(g)) {
          e.lse_ok = false;
        } else {
          e.lse_max_abs = std::max(e.lse_max_abs, std::abs(double(g) - want));
        }
      }
  }
  return e;
}

ErrorStats compare(const std::vector<float>& got, const std::vector<double>& want) {
  if (got.size() != want.size())
    throw InvalidArgument("compare", fmt::format("{} values", want.size()), std::to_string(got.size()));
  ErrorStats e;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ++e.nonfinite;
      continue;
    }
    const double d = double(got[i]) - want[i];
    num += d * d;
    den += want[i] * want[i];
    e.max_abs = std::max(e.max_abs, std::abs(d));
  }
  e.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  if (e.nonfinite) e.rel_l2 = std::numeric_limits<double>::infinity();
  return e;
}

}  // namespace pagedjit::testing
