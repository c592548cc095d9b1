// A random append_kv problem in host memory (new keys and values, a poisoned
// paged cache, starts, lengths, a shuffled block table), shared by the CPU
// and GPU append tests. Views over any copy with the same layout come from args().
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "attention/validate.hpp"
#include "pagedjit/ragged_attention.hpp"
#include "pagedjit/reference.hpp"

namespace pjtest {

struct AppendConfig {
  pagedjit::DType src = pagedjit::DType::bf16, kv = pagedjit::DType::bf16;
  int num_kv_heads = 2, head_dim = 64, page_size = 16;
  pagedjit::CacheLayout layout = pagedjit::CacheLayout::blocks_heads;
  std::vector<int> q_lens{3, 0, 5};
  std::vector<int> context_lens{10, 4, 5};  // including the new tokens
  int max_blocks = 0;                       // 0: enough for the longest context
  int spare_blocks = 2;                     // pages no sequence uses
  int pad = 0;                              // extra elements after each cache row and each key row
  int kv_scales = 2;                        // fp8: 0 none, 1 one per tensor, 2 one per KV head
  float range = 4.f;                        // new values in [-range, range]
  std::uint64_t seed = 1;
};

struct HostAppend {
  AppendConfig cfg;
  std::int64_t total = 0, num_blocks = 0;
  int max_blocks = 0;
  std::vector<std::uint8_t> keys, values, key_cache, value_cache;
  std::vector<std::int32_t> starts, lens, table, count;
  std::vector<float> k_scale, v_scale;
  std::array<std::int64_t, 4> cache_shape{}, cache_strides{};
  std::int64_t src_row = 0;  // elements per key row (head_dim + pad)

  explicit HostAppend(AppendConfig c) : cfg(std::move(c)) {
    using namespace pagedjit;
    std::mt19937_64 rng(cfg.seed);
    const int seqs = int(cfg.q_lens.size());
    starts.assign(std::size_t(seqs) + 1, 0);
    for (int s = 0; s < seqs; ++s) starts[std::size_t(s) + 1] = starts[std::size_t(s)] + cfg.q_lens[std::size_t(s)];
    total = starts.back();
    lens = cfg.context_lens;
    int longest = 1;
    for (int l : lens) longest = std::max(longest, l);
    max_blocks = cfg.max_blocks ? cfg.max_blocks : (longest + cfg.page_size - 1) / cfg.page_size;
    std::int64_t used = 0;
    for (int l : lens) used += std::min<std::int64_t>((std::max(l, 0) + cfg.page_size - 1) / cfg.page_size, max_blocks);
    num_blocks = used + cfg.spare_blocks;
    std::vector<std::int32_t> pool(static_cast<std::size_t>(num_blocks));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    table.assign(std::size_t(std::max(seqs, 1)) * std::size_t(max_blocks), -1);
    std::size_t next = 0;
    for (int s = 0; s < seqs; ++s)
      for (int b = 0; b < max_blocks && std::int64_t(b) * cfg.page_size < lens[std::size_t(s)]; ++b)
        table[std::size_t(s) * std::size_t(max_blocks) + std::size_t(b)] = pool[next++];

    src_row = cfg.head_dim + cfg.pad;
    const std::size_t src_elems = std::size_t(total) * std::size_t(cfg.num_kv_heads) * std::size_t(src_row);
    keys.assign(src_elems * dtype_size(cfg.src), 0);
    values.assign(src_elems * dtype_size(cfg.src), 0);
    std::uniform_real_distribution<float> u(-cfg.range, cfg.range);
    for (std::size_t i = 0; i < src_elems; ++i) {
      store_element(keys.data(), std::int64_t(i), u(rng), cfg.src);
      store_element(values.data(), std::int64_t(i), u(rng), cfg.src);
    }

    // Cache: the layout's axes, row-major, each head_dim row padded by `pad`.
    const CacheAxes axes = cache_axes(cfg.layout);
    cache_shape[std::size_t(axes.block_axis)] = num_blocks;
    cache_shape[std::size_t(axes.head_axis)] = cfg.num_kv_heads;
    cache_shape[std::size_t(axes.slot_axis)] = cfg.page_size;
    cache_shape[3] = cfg.head_dim;
    cache_strides[3] = 1;
    cache_strides[2] = cfg.head_dim + cfg.pad;
    for (int i = 1; i >= 0; --i)
      cache_strides[std::size_t(i)] = cache_strides[std::size_t(i) + 1] * cache_shape[std::size_t(i) + 1];
    const std::size_t cache_bytes = std::size_t(cache_strides[0] * cache_shape[0]) * dtype_size(cfg.kv);
    // Poison: a byte pattern no conversion produces by chance over a whole row.
    key_cache.resize(cache_bytes);
    value_cache.resize(cache_bytes);
    for (std::size_t i = 0; i < cache_bytes; ++i) {
      key_cache[i] = std::uint8_t(0x5a ^ (i * 0x3b));
      value_cache[i] = std::uint8_t(0xa5 ^ (i * 0x2d));
    }
    if (is_fp8(cfg.kv) && cfg.kv_scales > 0) {
      std::uniform_real_distribution<float> su(0.25f, 2.f);
      const int n = cfg.kv_scales == 2 ? cfg.num_kv_heads : 1;
      for (int i = 0; i < n; ++i) k_scale.push_back(su(rng)), v_scale.push_back(su(rng));
    }
  }

  // Views over memory laid out like this problem's arrays (null: absent).
  pagedjit::AppendKvArgs args(void* k, void* v, void* kc, void* vc, void* qs, void* cl, void* bt, void* ks, void* vs,
                              void* sc) const {
    using namespace pagedjit;
    AppendKvArgs a;
    const std::int64_t h = cfg.num_kv_heads;
    a.keys = TensorView(k, cfg.src, {total, h, cfg.head_dim}, {h * src_row, src_row, 1});
    a.values = TensorView(v, cfg.src, {total, h, cfg.head_dim}, {h * src_row, src_row, 1});
    const auto& n = cache_shape;
    const auto& st = cache_strides;
    a.key_cache = TensorView(kc, cfg.kv, {n[0], n[1], n[2], n[3]}, {st[0], st[1], st[2], st[3]});
    a.value_cache = TensorView(vc, cfg.kv, {n[0], n[1], n[2], n[3]}, {st[0], st[1], st[2], st[3]});
    a.layout = cfg.layout;
    const std::int64_t seqs = std::int64_t(cfg.q_lens.size());
    a.query_start = TensorView(qs, DType::i32, {seqs + 1});
    a.context_lens = TensorView(cl, DType::i32, {seqs});
    a.block_tables = TensorView(bt, DType::i32, {seqs, max_blocks});
    if (ks) a.k_scale = TensorView(ks, DType::f32, {std::int64_t(k_scale.size())});
    if (vs) a.v_scale = TensorView(vs, DType::f32, {std::int64_t(v_scale.size())});
    if (sc) a.seq_count = TensorView(sc, DType::i32, {1});
    return a;
  }

  pagedjit::AppendKvArgs host_args() {
    return args(keys.data(), values.data(), key_cache.data(), value_cache.data(), starts.data(), lens.data(),
                table.data(), k_scale.empty() ? nullptr : k_scale.data(), v_scale.empty() ? nullptr : v_scale.data(),
                count.empty() ? nullptr : count.data());
  }
};

// context_lens for sequences that already hold `prefix[s]` tokens.
inline std::vector<int> lens_after(const std::vector<int>& prefix, const std::vector<int>& q_lens) {
  std::vector<int> r(prefix.size());
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = prefix[i] + q_lens[i];
  return r;
}

}  // namespace pjtest
