#include "shard.hpp"

#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "pagedjit/reference.hpp"

namespace pjtp {

using pagedjit::DType;
using pagedjit::TensorView;

void check_shardable(const pagedjit::testing::ProblemConfig& cfg, int shards) {
  if (cfg.layout != pagedjit::CacheLayout::blocks_heads || cfg.pad_elems != 0)
    throw std::invalid_argument("sharding needs the blocks_heads cache layout without padding");
  if (shards < 1 || cfg.num_kv_heads % shards != 0 || cfg.num_heads % cfg.num_kv_heads != 0)
    throw std::invalid_argument(std::to_string(shards) + " shards do not divide " + std::to_string(cfg.num_heads) +
                                " query / " + std::to_string(cfg.num_kv_heads) + " KV heads into whole GQA groups");
}

ShardData slice_shard(const pagedjit::testing::HostProblem& host, int shards, int s) {
  const auto& cfg = host.config();
  check_shardable(cfg, shards);
  const std::int64_t S = std::int64_t(cfg.context_lens.size()), H = cfg.num_heads, KH = cfg.num_kv_heads;
  const std::int64_t D = cfg.head_dim, P = cfg.page_size, NB = host.num_blocks();
  const std::int64_t Hs = H / shards, KHs = KH / shards;
  const std::size_t es = pagedjit::dtype_size(cfg.dtype);
  ShardData out;
  const std::size_t q_run = std::size_t(Hs * D) * es;
  out.q.resize(std::size_t(S) * q_run);
  for (std::int64_t i = 0; i < S; ++i)
    std::memcpy(out.q.data() + std::size_t(i) * q_run, host.q.data() + std::size_t((i * H + s * Hs) * D) * es, q_run);
  const std::size_t kv_run = std::size_t(KHs * P * D) * es;
  for (const auto& [src, dst] : {std::pair{&host.k, &out.k}, {&host.v, &out.v}}) {
    dst->resize(std::size_t(NB) * kv_run);
    for (std::int64_t b = 0; b < NB; ++b)
      std::memcpy(dst->data() + std::size_t(b) * kv_run, src->data() + std::size_t((b * KH + s * KHs) * P * D) * es,
                  kv_run);
  }
  return out;
}

std::size_t output_bytes(const pagedjit::testing::ProblemConfig& cfg) {
  return cfg.context_lens.size() * std::size_t(cfg.num_heads) * std::size_t(cfg.head_dim) *
         pagedjit::dtype_size(cfg.out_dtype);
}

std::size_t slice_bytes(const pagedjit::testing::ProblemConfig& cfg, int shards) {
  return output_bytes(cfg) / std::size_t(shards);
}

pagedjit::PagedAttentionArgs shard_args(const pagedjit::testing::ProblemConfig& cfg, std::int64_t num_blocks,
                                        int shards, int s, void* q, void* k, void* v, void* lens, void* table,
                                        void* output) {
  check_shardable(cfg, shards);
  const std::int64_t S = std::int64_t(cfg.context_lens.size()), D = cfg.head_dim, P = cfg.page_size;
  const std::int64_t Hs = cfg.num_heads / shards, KHs = cfg.num_kv_heads / shards, NB = num_blocks;
  pagedjit::PagedAttentionArgs a;
  a.layout = pagedjit::CacheLayout::blocks_heads;
  a.query = TensorView(q, cfg.dtype, {S, Hs, D});
  a.key_cache = TensorView(k, cfg.dtype, {NB, KHs, P, D});
  a.value_cache = TensorView(v, cfg.dtype, {NB, KHs, P, D});
  a.context_lens = TensorView(lens, DType::i32, {S});
  a.block_tables = TensorView(table, DType::i32, {S, std::int64_t(cfg.max_blocks)});
  // Head-major: element (seq, head, d) at head * S * D + seq * D + d of this shard's slice.
  a.output = TensorView(static_cast<std::uint8_t*>(output) + std::size_t(s) * slice_bytes(cfg, shards), cfg.out_dtype,
                        {S, Hs, D}, {D, S * D, 1});
  return a;
}

std::vector<float> head_major_to_seq_major(const std::vector<std::uint8_t>& head_major,
                                           const pagedjit::testing::ProblemConfig& cfg) {
  const std::int64_t S = std::int64_t(cfg.context_lens.size()), H = cfg.num_heads, D = cfg.head_dim;
  if (head_major.size() != output_bytes(cfg))
    throw std::invalid_argument("head_major_to_seq_major: " + std::to_string(head_major.size()) + " bytes, expected " +
                                std::to_string(output_bytes(cfg)));
  std::vector<float> out(std::size_t(S * H * D));
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t i = 0; i < S; ++i)
      for (std::int64_t d = 0; d < D; ++d)
        out[std::size_t((i * H + h) * D + d)] =
            pagedjit::load_element(head_major.data(), (h * S + i) * D + d, cfg.out_dtype);
  return out;
}

}  // namespace pjtp
