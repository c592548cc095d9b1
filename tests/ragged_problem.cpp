#include "ragged_problem.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "pagedjit/testing.hpp"

using namespace pagedjit;

namespace pjtest {

std::string RaggedConfig::describe() const {
  const std::string kv = kv_dtype ? fmt::format(" kv={}", dtype_name(*kv_dtype)) : "";
  return fmt::format(
      "heads={}/{} d={} page={} {}->{}{} q_lens=[{}] contexts=[{}] starts=[{}] count={} sinks={} "
      "lse={} holes={} seed={}",
      num_heads, num_kv_heads, head_dim, page_size, dtype_name(dtype), dtype_name(out_dtype), kv,
      fmt::join(q_lens, ","), fmt::join(context_lens, ","), fmt::join(query_start, ","), seq_count, sinks, with_lse,
      holes, seed);
}

RaggedProblem::RaggedProblem(RaggedConfig cfg) : cfg_(std::move(cfg)) {
  std::mt19937_64 rng(cfg_.seed);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  const int S = num_seqs(), D = cfg_.head_dim, ps = cfg_.page_size, KH = cfg_.num_kv_heads;
  query_start = cfg_.query_start;
  if (query_start.empty()) {
    query_start.assign(std::size_t(S) + 1, 0);
    for (int s = 0; s < S; ++s)
      query_start[std::size_t(s) + 1] = query_start[std::size_t(s)] + cfg_.q_lens[std::size_t(s)];
  }
  total_ = cfg_.total_tokens >= 0 ? cfg_.total_tokens : query_start.back();
  lens.assign(cfg_.context_lens.begin(), cfg_.context_lens.end());
  int longest = 1;
  for (int l : lens) longest = std::max(longest, l);
  max_blocks = (longest + ps - 1) / ps;
  num_blocks = S * max_blocks + 3;  // a few spare pages
  if (cfg_.seq_count >= 0) count = {cfg_.seq_count};

  // Pages: a random permutation; table rows past a context hold -1.
  std::vector<int> perm(static_cast<std::size_t>(num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  table.assign(std::size_t(S) * max_blocks, -1);
  std::vector<char> used_slot(std::size_t(num_blocks) * ps, 0);
  for (int s = 0; s < S; ++s) {
    const int len = std::clamp(lens[std::size_t(s)], 0, max_blocks * ps);
    for (int b = 0; b < (len + ps - 1) / ps; ++b) {
      const int page = perm[std::size_t(s * max_blocks + b)];
      table[std::size_t(s * max_blocks + b)] = page;
      for (int t = b * ps; t < std::min(len, (b + 1) * ps); ++t) used_slot[std::size_t(page) * ps + t % ps] = 1;
    }
  }
  for (int h = 0, s = 0; h < cfg_.holes && s < S; ++s) {
    const int used = (std::clamp(lens[std::size_t(s)], 0, max_blocks * ps) + ps - 1) / ps;
    if (used == 0) continue;
    table[std::size_t(s * max_blocks) + rng() % std::uint64_t(used)] = -1;
    ++h;
  }

  const DType kvt = kv_dtype();
  const std::int64_t q_elems = std::max<std::int64_t>(total_, 1) * cfg_.num_heads * D;
  const std::int64_t kv_elems = std::int64_t(num_blocks) * KH * ps * D;
  q.assign(std::size_t(q_elems) * dtype_size(cfg_.dtype), 0);
  k.assign(std::size_t(kv_elems) * dtype_size(kvt), 0);
  v.assign(k.size(), 0);
  for (std::int64_t i = 0; i < q_elems; ++i) store_element(q.data(), i, uni(rng), cfg_.dtype);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int page = 0; page < num_blocks; ++page)
    for (int h = 0; h < KH; ++h)
      for (int slot = 0; slot < ps; ++slot) {
        const bool used = used_slot[std::size_t(page) * ps + slot];
        const std::int64_t base = ((std::int64_t(page) * KH + h) * ps + slot) * D;
        for (int d = 0; d < D; ++d) {
          store_element(k.data(), base + d, used ? uni(rng) * 2.f : nan, kvt);
          store_element(v.data(), base + d, used ? uni(rng) * 2.f : nan, kvt);
        }
      }
  if (is_fp8(kvt)) {
    for (int h = 0; h < KH; ++h) {
      k_scale.push_back(0.25f + 0.5f * float(rng() % 4));
      v_scale.push_back(0.25f + 0.5f * float(rng() % 4));
    }
  }
  if (cfg_.sinks)
    for (int h = 0; h < cfg_.num_heads; ++h) sinks.push_back(-2.f + 8.f * float(rng() % 1000) / 1000.f);
}

RaggedAttentionArgs RaggedProblem::host_args() const {
  const int D = cfg_.head_dim, H = cfg_.num_heads, S = num_seqs();
  const std::int64_t T = total_;
  out_scratch_.assign(std::size_t(std::max<std::int64_t>(T, 1) * H * D) * dtype_size(cfg_.out_dtype), 0);
  lse_scratch_.assign(std::size_t(std::max<std::int64_t>(T, 1) * H), 0.f);
  // Views of host data the reference only reads.
  auto ptr = [](const auto& v) { return const_cast<void*>(static_cast<const void*>(v.data())); };
  RaggedAttentionArgs a;
  a.query = TensorView(ptr(q), cfg_.dtype, {T, H, D});
  a.query_start = TensorView(ptr(query_start), DType::i32, {S + 1});
  a.key_cache = TensorView(ptr(k), kv_dtype(), {num_blocks, cfg_.num_kv_heads, cfg_.page_size, D});
  a.value_cache = TensorView(ptr(v), kv_dtype(), {num_blocks, cfg_.num_kv_heads, cfg_.page_size, D});
  a.context_lens = TensorView(ptr(lens), DType::i32, {S});
  a.block_tables = TensorView(ptr(table), DType::i32, {S, max_blocks});
  a.output = TensorView(ptr(out_scratch_), cfg_.out_dtype, {T, H, D});
  a.layout = CacheLayout::blocks_heads;
  if (cfg_.with_lse) a.lse = TensorView(ptr(lse_scratch_), DType::f32, {T, H});
  if (!k_scale.empty()) {
    a.k_scale = TensorView(ptr(k_scale), DType::f32, {std::int64_t(k_scale.size())});
    a.v_scale = TensorView(ptr(v_scale), DType::f32, {std::int64_t(v_scale.size())});
  }
  if (!sinks.empty()) a.sinks = TensorView(ptr(sinks), DType::f32, {H});
  if (!count.empty()) a.seq_count = TensorView(ptr(count), DType::i32, {1});
  int longest = 0;
  for (int s = 0; s < S; ++s)
    longest = std::max(longest, query_start[std::size_t(s) + 1] - query_start[std::size_t(s)]);
  a.max_query_len = longest;
  return a;
}

ProblemShape RaggedProblem::shape() const {
  ProblemShape s;
  s.num_seqs = num_seqs();
  s.num_heads = cfg_.num_heads;
  s.num_kv_heads = cfg_.num_kv_heads;
  s.head_dim = cfg_.head_dim;
  s.page_size = cfg_.page_size;
  s.max_blocks = max_blocks;
  s.num_blocks = num_blocks;
  s.dtype = cfg_.dtype;
  s.kv_dtype = kv_dtype();
  s.out_dtype = cfg_.out_dtype;
  s.layout = CacheLayout::blocks_heads;
  s.max_context_len = std::int64_t(max_blocks) * cfg_.page_size;
  int longest = 1;
  for (int s2 = 0; s2 < num_seqs(); ++s2)
    longest = std::max(longest, query_start[std::size_t(s2) + 1] - query_start[std::size_t(s2)]);
  s.q_len = longest;
  s.ragged = true;
  s.total_tokens = total_;
  return s;
}

double RaggedProblem::reference_cost(const PagedAttentionOptions& o) const {
  double cost = 0;
  for (int s = 0; s < num_seqs(); ++s) {
    const std::int64_t n = std::max(0, query_start[std::size_t(s) + 1] - query_start[std::size_t(s)]);
    const std::int64_t len = std::max(0, lens[std::size_t(s)]);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t last = len - n + i;
      const std::int64_t first = o.sliding_window ? std::max<std::int64_t>(0, last + 1 - *o.sliding_window) : 0;
      cost += double(std::max<std::int64_t>(0, last + 1 - first));
    }
  }
  return cost * cfg_.num_heads * cfg_.head_dim * 2;
}

namespace {
template <class T>
DeviceBuffer upload(const std::vector<T>& v) {
  if (v.empty()) return DeviceBuffer();
  DeviceBuffer b(v.size() * sizeof(T));
  b.upload(v.data(), v.size() * sizeof(T));
  return b;
}
}  // namespace

RaggedDevice::RaggedDevice(const RaggedProblem& host)
    : host_(host),
      q_(upload(host.q)),
      k_(upload(host.k)),
      v_(upload(host.v)),
      query_start_(upload(host.query_start)),
      lens_(upload(host.lens)),
      table_(upload(host.table)),
      count_(upload(host.count)),
      k_scale_(upload(host.k_scale)),
      v_scale_(upload(host.v_scale)),
      sinks_(upload(host.sinks)) {
  const RaggedConfig& c = host.config();
  const std::int64_t rows = std::max<std::int64_t>(host.total_tokens(), 1) * c.num_heads;
  out_ = DeviceBuffer(std::size_t(rows * c.head_dim) * dtype_size(c.out_dtype));
  lse_ = DeviceBuffer(std::size_t(rows) * 4);
}

RaggedAttentionArgs RaggedDevice::args() const {
  const RaggedConfig& c = host_.config();
  RaggedAttentionArgs a = host_.host_args();  // shapes and strides; the pointers are replaced
  a.query.data = q_.data();
  a.query_start.data = query_start_.data();
  a.key_cache.data = k_.data();
  a.value_cache.data = v_.data();
  a.context_lens.data = lens_.data();
  a.block_tables.data = table_.data();
  a.output.data = out_.data();
  if (c.with_lse) a.lse.data = lse_.data();
  if (a.k_scale.data) a.k_scale.data = k_scale_.data(), a.v_scale.data = v_scale_.data();
  if (a.sinks.data) a.sinks.data = sinks_.data();
  if (a.seq_count.data) a.seq_count.data = count_.data();
  return a;
}

void RaggedDevice::poison() {
  const std::vector<std::uint8_t> ff(std::max(out_.size(), lse_.size()), 0xff);
  out_.upload(ff.data(), out_.size());
  lse_.upload(ff.data(), lse_.size());
}

std::vector<std::uint8_t> RaggedDevice::output_bytes() const {
  std::vector<std::uint8_t> b(out_.size());
  out_.download(b.data(), b.size());
  return b;
}

std::vector<float> RaggedDevice::lse() const {
  std::vector<float> l(lse_.size() / 4);
  lse_.download(l.data(), lse_.size());
  return l;
}

RaggedCheck check_ragged(const RaggedProblem& host, const RaggedDevice& dev, const PagedAttentionOptions& o) {
  const RaggedConfig& c = host.config();
  const ReferenceOutputs want = reference_ragged_attention(host.host_args(), o);
  const std::vector<std::uint8_t> got = dev.output_bytes();
  const std::vector<float> lse = dev.lse();
  const std::int64_t T = host.total_tokens();
  const int H = c.num_heads, D = c.head_dim;
  const std::size_t es = dtype_size(c.out_dtype);
  // Rows the kernel owns: query_start clamped into [0, T], computed sequences only.
  std::vector<char> owned(std::size_t(T), 0);
  for (int s : want.seqs) {
    const std::int64_t b = std::clamp<std::int64_t>(host.query_start[std::size_t(s)], 0, T);
    const std::int64_t e = std::clamp<std::int64_t>(host.query_start[std::size_t(s) + 1], 0, T);
    for (std::int64_t t = b; t < e; ++t) owned[std::size_t(t)] = 1;
  }
  RaggedCheck r;
  std::vector<float> g;
  std::vector<double> w;
  for (std::int64_t t = 0; t < T; ++t) {
    const std::size_t row_bytes = std::size_t(H) * D * es;
    const std::uint8_t* row = got.data() + std::size_t(t) * row_bytes;
    if (!owned[std::size_t(t)]) {
      for (std::size_t i = 0; i < row_bytes; ++i) r.touched += row[i] != 0xff;
      if (c.with_lse)
        for (int h = 0; h < H; ++h) {
          std::uint32_t bits;
          std::memcpy(&bits, &lse[std::size_t(t * H + h)], 4);
          r.touched += bits != 0xffffffffu;
        }
      continue;
    }
    for (std::int64_t i = 0; i < std::int64_t(H) * D; ++i) {
      g.push_back(load_element(row, i, c.out_dtype));
      w.push_back(want.output[std::size_t(t * H * D + i)]);
    }
    if (!c.with_lse) continue;
    for (int h = 0; h < H; ++h) {
      const double want_lse = want.lse[std::size_t(t * H + h)];
      const float got_lse = lse[std::size_t(t * H + h)];
      if (std::isinf(want_lse)) {
        r.lse_ok = r.lse_ok && std::isinf(got_lse) && got_lse < 0;
      } else if (!std::isfinite(got_lse)) {
        r.lse_ok = false;
      } else {
        r.lse_max_abs = std::max(r.lse_max_abs, std::fabs(double(got_lse) - want_lse));
      }
    }
  }
  const testing::ErrorStats e = testing::compare(g, w);
  r.rel_l2 = e.rel_l2;
  r.max_abs = e.max_abs;
  r.nonfinite = e.nonfinite;
  return r;
}

}  // namespace pjtest
