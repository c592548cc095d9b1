// Every rule a call must satisfy before anything is launched. Each failure
// names the argument, what was expected and what was given.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>

#include "attention/validate.hpp"
#include "jit/kernel_spec.hpp"
#include "pagedjit/errors.hpp"
#include "pj_params.cuh"

namespace pagedjit {
namespace {

constexpr int kMaxHeadDim = 512;

bool is_float(DType d) {
  return d == DType::f32 || d == DType::f16 || d == DType::bf16;
}

void expect_rank(const TensorView& t, const char* name, int rank, const char* dims) {
  if (t.rank != rank) throw InvalidArgument(name, fmt::format("rank {} {}", rank, dims), t.describe());
}

void expect_data(const TensorView& t, const char* name) {
  if (!t.data) throw InvalidArgument(name, "a non-null device pointer", "null");
}

void expect_dim(const TensorView& t, const char* name, int axis, std::int64_t want, const char* what) {
  if (t.shape[axis] != want)
    throw InvalidArgument(name, fmt::format("shape[{}] = {} ({})", axis, want, what), t.describe());
}

void expect_positive_shape(const TensorView& t, const char* name) {
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] < 0) throw InvalidArgument(name, "non-negative sizes", t.describe());
}

// Rows are moved with 16-byte vector accesses: the pointer and every stride
// but the last must keep 16-byte alignment; the last stride must be 1.
void expect_vector_rows(const TensorView& t, const char* name) {
  if (t.strides[t.rank - 1] != 1) throw InvalidArgument(name, "unit stride on head_dim", t.describe());
  const auto addr = reinterpret_cast<std::uintptr_t>(t.data);
  if (addr % 16 != 0) throw InvalidArgument(name, "a 16-byte aligned pointer", fmt::format("{}", t.data));
  const std::int64_t es = std::int64_t(dtype_size(t.dtype));
  for (int i = 0; i + 1 < t.rank; ++i)
    if (t.strides[i] < 0 || t.strides[i] % (16 / es) != 0)  // (stride * es overflows for absurd strides)
      throw InvalidArgument(name,
                            fmt::format("non-negative strides that are multiples of 16 bytes ({} elements)", 16 / es),
                            t.describe());
}

}  // namespace

ProblemShape validate_call(const PagedAttentionArgs& a, const PagedAttentionOptions& o) {
  // Options with no meaning here are refused first: they change nothing else.
  if (o.megacore_mode)
    throw NotSupported("options.megacore_mode", "a TPU notion; GPUs have no megacore (got '" + *o.megacore_mode + "')");
  if (!o.inline_seq_dim) throw NotSupported("options.inline_seq_dim", "only inline_seq_dim = true is implemented");

  const TensorView& q = a.query;
  if (q.rank != 3 && q.rank != 4)
    throw InvalidArgument("query", "rank 3 [num_seqs, num_heads, head_dim] or 4 [num_seqs, q_len, num_heads, head_dim]",
                          q.describe());
  expect_positive_shape(q, "query");
  if (!is_float(q.dtype)) throw InvalidArgument("query", "dtype fp32, fp16 or bf16", dtype_name(q.dtype));
  const int qh = q.rank - 2;  // axis of the heads

  ProblemShape s;
  s.num_seqs = int(q.shape[0]);
  s.q_len = q.rank == 4 ? int(q.shape[1]) : 1;
  s.num_heads = int(q.shape[qh]);
  s.head_dim = int(q.shape[qh + 1]);
  s.dtype = q.dtype;
  if (q.rank == 4 && (q.shape[1] < 1 || q.shape[1] > 8))
    throw InvalidArgument("query", "q_len (shape[1]) in 1..8", std::to_string(q.shape[1]));
  s.layout = a.layout;
  if (q.shape[0] > 65535) throw InvalidArgument("query", "num_seqs <= 65535", std::to_string(q.shape[0]));
  if (q.shape[qh] < 1 || q.shape[qh] > 65535)
    throw InvalidArgument("query", "num_heads in 1..65535", std::to_string(q.shape[qh]));
  if (q.shape[qh + 1] < 16 || q.shape[qh + 1] % 16 != 0 || q.shape[qh + 1] > 512)
    throw InvalidArgument("query", "head_dim a multiple of 16 in [16, 512]", std::to_string(s.head_dim));
  if (s.head_dim > kMaxHeadDim)
    throw NotSupported("query", fmt::format("head_dim {} (this version handles up to {})", s.head_dim, kMaxHeadDim));

  const TensorView& k = a.key_cache;
  const TensorView& v = a.value_cache;
  expect_rank(k, "key_cache", 4, "(paged cache)");
  expect_rank(v, "value_cache", 4, "(paged cache)");
  expect_positive_shape(k, "key_cache");
  if (is_fp8(k.dtype)) {
    if (q.dtype == DType::f32)
      throw InvalidArgument("query", fmt::format("dtype fp16 or bf16 with a {} cache", dtype_name(k.dtype)),
                            dtype_name(q.dtype));
  } else if (k.dtype != q.dtype) {
    throw InvalidArgument("key_cache", fmt::format("dtype {} (the query's), e4m3 or e5m2", dtype_name(q.dtype)),
                          dtype_name(k.dtype));
  }
  s.kv_dtype = k.dtype;
  if (v.dtype != k.dtype)
    throw InvalidArgument("value_cache", fmt::format("dtype {} (the key cache's)", dtype_name(k.dtype)),
                          dtype_name(v.dtype));
  for (int i = 0; i < 4; ++i)
    if (v.shape[i] != k.shape[i])
      throw InvalidArgument("value_cache", "the shape of key_cache " + k.describe(), v.describe());
  int ax_blocks = 0, ax_heads = 1, ax_slots = 2;
  const char* dims = "[num_blocks, num_kv_heads, page_size, head_dim]";
  if (a.layout == CacheLayout::heads_blocks)
    ax_blocks = 1, ax_heads = 0, dims = "[num_kv_heads, num_blocks, page_size, head_dim]";
  if (a.layout == CacheLayout::blocks_tokens)
    ax_slots = 1, ax_heads = 2, dims = "[num_blocks, page_size, num_kv_heads, head_dim]";
  s.num_blocks = int(k.shape[ax_blocks]);
  s.num_kv_heads = int(k.shape[ax_heads]);
  s.page_size = int(k.shape[ax_slots]);
  if (k.shape[ax_blocks] > 0x7fffffff) throw InvalidArgument("key_cache", "num_blocks < 2^31", k.describe());
  expect_dim(k, "key_cache", 3, s.head_dim, "head_dim of the query");
  if (s.num_kv_heads < 1)
    throw InvalidArgument("key_cache", fmt::format("num_kv_heads >= 1 in {}", dims), k.describe());
  if (s.num_heads % s.num_kv_heads != 0)
    throw InvalidArgument("query", fmt::format("num_heads a multiple of num_kv_heads = {}", s.num_kv_heads),
                          std::to_string(s.num_heads));
  if (s.page_size < 1 || s.page_size > 256 || (s.page_size & (s.page_size - 1)) != 0)
    throw InvalidArgument("key_cache", fmt::format("page_size a power of two in [1, 256] ({})", dims),
                          std::to_string(s.page_size));
  if (s.num_blocks < 1) throw InvalidArgument("key_cache", "num_blocks >= 1", k.describe());
  for (auto [t, n] : {std::pair{&k, "key_cache"}, {&v, "value_cache"}})
    if (t->strides[ax_blocks] >= (std::int64_t(1) << 31) || t->strides[ax_slots] >= (std::int64_t(1) << 31))
      throw NotSupported(n, fmt::format("page and slot strides below 2^31 elements ({})", t->describe()));

  const TensorView& cl = a.context_lens;
  expect_rank(cl, "context_lens", 1, "[num_seqs]");
  if (cl.dtype != DType::i32) throw InvalidArgument("context_lens", "dtype int32", dtype_name(cl.dtype));
  expect_dim(cl, "context_lens", 0, s.num_seqs, "num_seqs");
  const TensorView& bt = a.block_tables;
  expect_rank(bt, "block_tables", 2, "[num_seqs, max_blocks]");
  if (bt.dtype != DType::i32) throw InvalidArgument("block_tables", "dtype int32", dtype_name(bt.dtype));
  expect_dim(bt, "block_tables", 0, s.num_seqs, "num_seqs");
  if (bt.shape[1] < 1 || bt.shape[1] > 0x7fffffff / 256)
    throw InvalidArgument("block_tables", "max_blocks in [1, 2^23]", bt.describe());
  if (bt.strides[1] != 1) throw InvalidArgument("block_tables", "unit stride on max_blocks", bt.describe());
  s.max_blocks = int(bt.shape[1]);

  const TensorView& out = a.output;
  if (out.rank != q.rank) throw InvalidArgument("output", "the query's shape " + q.describe(), out.describe());
  if (!is_float(out.dtype)) throw InvalidArgument("output", "dtype fp32, fp16 or bf16", dtype_name(out.dtype));
  for (int i = 0; i < q.rank; ++i)
    if (out.shape[i] != q.shape[i])
      throw InvalidArgument("output", "the query's shape " + q.describe(), out.describe());
  if (out.strides[q.rank - 1] != 1) throw InvalidArgument("output", "unit stride on head_dim", out.describe());
  s.out_dtype = out.dtype;

  if (o.return_lse) {
    const TensorView& l = a.lse;
    const std::string want = q.rank == 4 ? fmt::format("[{}, {}, {}]", s.num_seqs, s.q_len, s.num_heads)
                                         : fmt::format("[{}, {}]", s.num_seqs, s.num_heads);
    if (l.rank != q.rank - 1)
      throw InvalidArgument("lse", "shape " + want + " (the query's leading dims)", l.describe());
    if (l.dtype != DType::f32) throw InvalidArgument("lse", "dtype fp32", dtype_name(l.dtype));
    for (int i = 0; i < l.rank; ++i)
      if (l.shape[i] != q.shape[i] || l.strides[i] < 0)
        throw InvalidArgument("lse", "shape " + want + " with non-negative strides", l.describe());
    if (l.strides[l.rank - 1] != 1) throw InvalidArgument("lse", "unit stride on heads", l.describe());
  }

  // fp8 dequantization scales: fp32, one per tensor or per KV head.
  for (auto [t, n] : {std::pair{&a.k_scale, "k_scale"}, {&a.v_scale, "v_scale"}}) {
    if (!t->data && t->rank == 0) continue;  // absent: 1
    if (!is_fp8(k.dtype))
      throw InvalidArgument(
          n, fmt::format("absent (scales apply to e4m3/e5m2 caches; this one is {})", dtype_name(k.dtype)),
          t->describe());
    if (t->dtype != DType::f32 || t->rank != 1 || (t->shape[0] != 1 && t->shape[0] != s.num_kv_heads) ||
        (t->shape[0] > 1 && t->strides[0] != 1))
      throw InvalidArgument(n, fmt::format("fp32 [1] or contiguous [{}] (num_kv_heads)", s.num_kv_heads),
                            t->describe());
  }

  if (o.attn_scale && !std::isfinite(*o.attn_scale))
    throw InvalidArgument("options.attn_scale", "a finite number", fmt::format("{}", *o.attn_scale));
  if (o.num_splits < 0 || o.num_splits > 65535)
    throw InvalidArgument("options.num_splits", "0 (automatic) or 1..65535", std::to_string(o.num_splits));
  if (std::isnan(o.mask_value)) throw InvalidArgument("options.mask_value", "a number", "NaN");
  if (o.attn_logits_soft_cap && !(*o.attn_logits_soft_cap > 0 && std::isfinite(*o.attn_logits_soft_cap)))
    throw InvalidArgument("options.attn_logits_soft_cap", "a finite value > 0",
                          fmt::format("{}", *o.attn_logits_soft_cap));
  if (o.sliding_window && (*o.sliding_window <= 0 || *o.sliding_window > 0x7fffffff))
    throw InvalidArgument("options.sliding_window", "a window in [1, 2^31)", std::to_string(*o.sliding_window));
  if (o.pages_per_compute_block &&
      (*o.pages_per_compute_block < 1 || std::int64_t(*o.pages_per_compute_block) * s.page_size > 4096))
    throw InvalidArgument("options.pages_per_compute_block",
                          fmt::format("1..{} (at most 4096 tokens per block)", std::max(1, 4096 / s.page_size)),
                          std::to_string(*o.pages_per_compute_block));
  if (o.kernel_config) {
    const KernelConfig& c = *o.kernel_config;
    const bool shape_given = c.tile_tokens || c.warps || c.stages;
    if (shape_given && !(c.warps >= 1 && c.warps <= 8 && c.stages >= 2 && c.stages <= 8 && c.tile_tokens > 0 &&
                         pj::tile_shape_ok(c.tile_tokens, c.warps) && c.tile_tokens <= 256))
      throw InvalidArgument("options.kernel_config",
                            fmt::format("tile_tokens (<= 256, {}), warps in 1..8 and stages in 2..8, all set",
                                        jit::tile_shape_rule(c.warps)),
                            fmt::format("tile_tokens {} warps {} stages {}", c.tile_tokens, c.warps, c.stages));
    if (c.v_dims < 0 || c.v_dims % 16 != 0 || c.v_dims > std::min(256, s.head_dim))
      throw InvalidArgument("options.kernel_config.v_dims",
                            fmt::format("0 or a multiple of 16 up to {}", std::min(256, s.head_dim)),
                            std::to_string(c.v_dims));
    if (c.chunk_tokens < 0)
      throw InvalidArgument("options.kernel_config.chunk_tokens", ">= 0", std::to_string(c.chunk_tokens));
  }
  if (o.max_context_len && (*o.max_context_len < 0 || *o.max_context_len > 0x7fffffff))
    throw InvalidArgument("options.max_context_len", "a length in [0, 2^31)", std::to_string(*o.max_context_len));

  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  s.max_context_len = o.max_context_len ? std::min<std::int64_t>(*o.max_context_len, capacity) : capacity;

  // Pointers last: shape errors are more useful than "null pointer" when both apply.
  if (s.num_seqs > 0) {
    for (auto [t, n] : {std::pair{&q, "query"},
                        {&k, "key_cache"},
                        {&v, "value_cache"},
                        {&cl, "context_lens"},
                        {&bt, "block_tables"},
                        {&out, "output"}})
      expect_data(*t, n);
    if (o.return_lse) expect_data(a.lse, "lse");
    for (auto [t, n] : {std::pair{&a.k_scale, "k_scale"}, {&a.v_scale, "v_scale"}})
      if (t->rank == 1) expect_data(*t, n);
    expect_vector_rows(q, "query");
    expect_vector_rows(k, "key_cache");
    expect_vector_rows(v, "value_cache");
  }
  return s;
}

}  // namespace pagedjit
