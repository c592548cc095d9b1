// Every rule a call must satisfy before anything is launched. Each failure
// names the argument, what was expected and what was given.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "attention/validate.hpp"
#include "attention/view_checks.hpp"
#include "jit/kernel_spec.hpp"
#include "pagedjit/errors.hpp"
#include "pj_params.cuh"

namespace pagedjit {
namespace {

// The decode kernel writes four consecutive output elements per thread.
constexpr int kOutputVector = 4;

}  // namespace

namespace checks {

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

int block_table_width(const TensorView& bt, std::int64_t num_seqs, const char* seqs_from) {
  expect_rank(bt, "block_tables", 2, "[num_seqs, max_blocks]");
  if (bt.dtype != DType::i32) throw InvalidArgument("block_tables", "dtype int32", dtype_name(bt.dtype));
  expect_dim(bt, "block_tables", 0, num_seqs, seqs_from);
  if (bt.shape[1] < 1 || bt.shape[1] > 0x7fffffff / 256)
    throw InvalidArgument("block_tables", "max_blocks in [1, 2^23]", bt.describe());
  if (bt.strides[1] != 1) throw InvalidArgument("block_tables", "unit stride on max_blocks", bt.describe());
  return int(bt.shape[1]);
}

void expect_positive_shape(const TensorView& t, const char* name) {
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] < 0) throw InvalidArgument(name, "non-negative sizes", t.describe());
}

void expect_aligned(const TensorView& t, const char* name, std::int64_t bytes) {
  if (reinterpret_cast<std::uintptr_t>(t.data) % std::uint64_t(bytes) != 0)
    throw InvalidArgument(name, fmt::format("a {}-byte aligned pointer", bytes), fmt::format("{}", t.data));
}

// Rows are moved with 16-byte vector accesses: the pointer and every stride
// but the last must keep 16-byte alignment; the last stride must be 1.
void expect_vector_rows(const TensorView& t, const char* name) {
  if (t.strides[t.rank - 1] != 1) throw InvalidArgument(name, "unit stride on head_dim", t.describe());
  expect_aligned(t, name, 16);
  const std::int64_t es = std::int64_t(dtype_size(t.dtype));
  for (int i = 0; i + 1 < t.rank; ++i)
    if (t.strides[i] < 0 || t.strides[i] % (16 / es) != 0)  // (stride * es overflows for absurd strides)
      throw InvalidArgument(name,
                            fmt::format("non-negative strides that are multiples of 16 bytes ({} elements)", 16 / es),
                            t.describe());
}

// The bytes a view covers, from its pointer to the end of its last element
// (0 when it has no element). Strides must be non-negative, the extent must
// fit 64 bits and stay below kMaxViewBytes, and the range must not wrap.
std::int64_t view_bytes(const TensorView& t, const char* name) {
  std::int64_t last = 0;  // offset of the last element, in elements
  for (int i = 0; i < t.rank; ++i) {
    if (t.strides[i] < 0) throw InvalidArgument(name, "non-negative strides", t.describe());
    if (t.shape[i] == 0) return 0;
  }
  std::int64_t step = 0;
  bool overflow = false;
  for (int i = 0; i < t.rank; ++i) {
    overflow = overflow || __builtin_mul_overflow(t.strides[i], t.shape[i] - 1, &step) ||
               __builtin_add_overflow(last, step, &last);
  }
  std::int64_t bytes = 0;
  overflow = overflow || __builtin_add_overflow(last, 1, &last) ||
             __builtin_mul_overflow(last, std::int64_t(dtype_size(t.dtype)), &bytes);
  if (overflow) throw InvalidArgument(name, "strides whose extent fits in 64 bits", t.describe());
  if (bytes > kMaxViewBytes)
    throw NotSupported(name, fmt::format("views spanning at most 2^40 bytes ({} spans {} bytes)", t.describe(), bytes));
  if (reinterpret_cast<std::uintptr_t>(t.data) > UINTPTR_MAX - std::uint64_t(bytes))
    throw InvalidArgument(name, "a view that does not wrap around the address space",
                          fmt::format("{} at {}", t.describe(), t.data));
  return bytes;
}

// The kernel writes every element of `t` once: no two may share memory.
// Sufficient and exact for the layouts callers make: sorted by stride, each
// axis must step over everything the smaller axes span.
void expect_no_self_overlap(const TensorView& t, const char* name) {
  std::vector<int> axes;
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] > 1) axes.push_back(i);
  std::sort(axes.begin(), axes.end(), [&](int x, int y) { return t.strides[x] < t.strides[y]; });
  std::int64_t span = 1;  // elements the smaller axes cover (fits: view_bytes checked it)
  for (int i : axes) {
    if (t.strides[i] < span)
      throw InvalidArgument(name, "strides under which no two elements share memory", t.describe());
    span = t.strides[i] * (t.shape[i] - 1) + span;
  }
}

void expect_no_shared_elements(const TensorView& a, const char* a_name, const TensorView& b, const char* b_name) {
  const auto a_begin = reinterpret_cast<std::uintptr_t>(a.data), b_begin = reinterpret_cast<std::uintptr_t>(b.data);
  const auto a_end = a_begin + std::uint64_t(view_bytes(a, a_name)),
             b_end = b_begin + std::uint64_t(view_bytes(b, b_name));
  if (a_end == a_begin || b_end == b_begin || a_end <= b_begin || b_end <= a_begin) return;  // empty or apart
  const std::string why = fmt::format("memory sharing no element with {} {} at {}", a_name, a.describe(), a.data);
  const std::string got = fmt::format("{} at {}", b.describe(), b.data);
  // The ranges overlap: both spans are below kMaxViewBytes, so is the distance.
  const std::uint64_t distance = a_begin < b_begin ? b_begin - a_begin : a_begin - b_begin;
  const std::uint64_t es = dtype_size(a.dtype);
  if (b.rank != a.rank || b.dtype != a.dtype || distance % es != 0) throw InvalidArgument(b_name, why, got);
  std::vector<std::pair<std::int64_t, std::int64_t>> axes = {{std::int64_t(distance / es), 2}};  // stride, size
  for (int i = 0; i < a.rank; ++i) {
    if (a.shape[i] != b.shape[i] || (a.shape[i] > 1 && a.strides[i] != b.strides[i]))
      throw InvalidArgument(b_name, why + " (interleaved views need the same shape and strides)", got);
    if (a.shape[i] > 1) axes.push_back({a.strides[i], a.shape[i]});
  }
  std::sort(axes.begin(), axes.end());
  std::int64_t span = 1;  // elements the smaller axes cover (below 2^41: both views and their distance are)
  for (const auto& [stride, size] : axes) {
    if (stride < span) throw InvalidArgument(b_name, why, got);
    span = stride * (size - 1) + span;
  }
}

// What the kernel writes may share no byte with anything else it touches:
// other CTAs read the inputs (and their own outputs) while one writes.
void expect_disjoint(const std::vector<Range>& ranges) {
  for (const Range& w : ranges) {
    if (!w.written) continue;
    for (const Range& r : ranges)
      if (&r != &w && r.begin < w.end && w.begin < r.end)
        throw InvalidArgument(w.name, fmt::format("memory disjoint from {}", r.name),
                              fmt::format("bytes [{:#x}, {:#x}) overlapping {}'s [{:#x}, {:#x})", w.begin, w.end,
                                          r.name, r.begin, r.end));
  }
}

}  // namespace checks

namespace {

using namespace checks;

void refuse_meaningless_options(const PagedAttentionOptions& o) {
  // Options with no meaning here are refused first: they change nothing else.
  if (o.megacore_mode)
    throw NotSupported("options.megacore_mode", "a TPU notion; GPUs have no megacore (got '" + *o.megacore_mode + "')");
  if (!o.inline_seq_dim) throw NotSupported("options.inline_seq_dim", "only inline_seq_dim = true is implemented");
}

// `ragged`: the leading dim is packed query rows, not sequences.
ProblemShape query_shape(const TensorView& q, bool ragged = false) {
  if (q.rank != 3 && q.rank != 4)
    throw InvalidArgument("query", "rank 3 [num_seqs, num_heads, head_dim] or 4 [num_seqs, q_len, num_heads, head_dim]",
                          q.describe());
  expect_positive_shape(q, "query");
  if (!is_float(q.dtype)) throw InvalidArgument("query", "dtype fp32, fp16 or bf16", dtype_name(q.dtype));
  const int qh = q.rank - 2;  // axis of the heads
  if (q.rank == 4 && (q.shape[1] < 1 || q.shape[1] > 8))
    throw InvalidArgument("query", "q_len (shape[1]) in 1..8", std::to_string(q.shape[1]));
  if (!ragged && q.shape[0] > 65535) throw InvalidArgument("query", "num_seqs <= 65535", std::to_string(q.shape[0]));
  if (q.shape[qh] < 1 || q.shape[qh] > 65535)
    throw InvalidArgument("query", "num_heads in 1..65535", std::to_string(q.shape[qh]));
  if (q.shape[qh + 1] < 16 || q.shape[qh + 1] % 16 != 0 || q.shape[qh + 1] > pj::kMaxHeadDim)
    throw InvalidArgument("query", fmt::format("head_dim a multiple of 16 in [16, {}]", pj::kMaxHeadDim),
                          std::to_string(q.shape[qh + 1]));
  ProblemShape s;
  s.num_seqs = int(q.shape[0]);
  s.q_len = q.rank == 4 ? int(q.shape[1]) : 1;
  s.num_heads = int(q.shape[qh]);
  s.head_dim = int(q.shape[qh + 1]);
  s.dtype = q.dtype;
  return s;
}

void cache_dtypes(const TensorView& k, const TensorView& v, ProblemShape& s) {
  if (is_fp8(k.dtype)) {
    if (s.dtype == DType::f32)
      throw InvalidArgument("query", fmt::format("dtype fp16 or bf16 with a {} cache", dtype_name(k.dtype)),
                            dtype_name(s.dtype));
  } else if (k.dtype != s.dtype) {
    throw InvalidArgument("key_cache", fmt::format("dtype {} (the query's), e4m3 or e5m2", dtype_name(s.dtype)),
                          dtype_name(k.dtype));
  }
  s.kv_dtype = k.dtype;
  if (v.dtype != k.dtype)
    throw InvalidArgument("value_cache", fmt::format("dtype {} (the key cache's)", dtype_name(k.dtype)),
                          dtype_name(v.dtype));
}

void cache_shape(const PagedAttentionArgs& a, ProblemShape& s) {
  const TensorView& k = a.key_cache;
  const TensorView& v = a.value_cache;
  expect_rank(k, "key_cache", 4, "(paged cache)");
  expect_rank(v, "value_cache", 4, "(paged cache)");
  expect_positive_shape(k, "key_cache");
  cache_dtypes(k, v, s);
  for (int i = 0; i < 4; ++i)
    if (v.shape[i] != k.shape[i])
      throw InvalidArgument("value_cache", "the shape of key_cache " + k.describe(), v.describe());
  const CacheAxes axes = cache_axes(a.layout);
  const char* dims = axes.dims;
  // Sizes are checked as 64-bit values, before they are narrowed to int.
  const std::int64_t blocks = k.shape[axes.block_axis], kv_heads = k.shape[axes.head_axis],
                     page = k.shape[axes.slot_axis];
  if (blocks > 0x7fffffff) throw InvalidArgument("key_cache", "num_blocks < 2^31", k.describe());
  expect_dim(k, "key_cache", 3, s.head_dim, "head_dim of the query");
  if (kv_heads < 1 || kv_heads > s.num_heads)
    throw InvalidArgument("key_cache", fmt::format("num_kv_heads in 1..{} (num_heads) in {}", s.num_heads, dims),
                          k.describe());
  if (s.num_heads % kv_heads != 0)
    throw InvalidArgument("query", fmt::format("num_heads a multiple of num_kv_heads = {}", kv_heads),
                          std::to_string(s.num_heads));
  if (page < 1 || page > 256 || (page & (page - 1)) != 0)
    throw InvalidArgument("key_cache", fmt::format("page_size a power of two in [1, 256] ({})", dims),
                          std::to_string(page));
  if (blocks < 1) throw InvalidArgument("key_cache", "num_blocks >= 1", k.describe());
  for (auto [t, n] : {std::pair{&k, "key_cache"}, {&v, "value_cache"}})
    if (t->strides[axes.block_axis] >= (std::int64_t(1) << 31) || t->strides[axes.slot_axis] >= (std::int64_t(1) << 31))
      throw NotSupported(n, fmt::format("page and slot strides below 2^31 elements ({})", t->describe()));
  s.num_blocks = int(blocks);
  s.num_kv_heads = int(kv_heads);
  s.page_size = int(page);
}

void index_shape(const PagedAttentionArgs& a, ProblemShape& s) {
  const TensorView& cl = a.context_lens;
  expect_rank(cl, "context_lens", 1, "[num_seqs]");
  if (cl.dtype != DType::i32) throw InvalidArgument("context_lens", "dtype int32", dtype_name(cl.dtype));
  expect_dim(cl, "context_lens", 0, s.num_seqs, "num_seqs");
  // The kernel reads context_lens[seq]: it knows no stride.
  if (cl.shape[0] > 1 && cl.strides[0] != 1) throw InvalidArgument("context_lens", "unit stride", cl.describe());
  s.max_blocks = block_table_width(a.block_tables, s.num_seqs, "num_seqs");
}

void output_shape(const PagedAttentionArgs& a, const PagedAttentionOptions& o, ProblemShape& s) {
  const TensorView& q = a.query;
  const TensorView& out = a.output;
  if (out.rank != q.rank) throw InvalidArgument("output", "the query's shape " + q.describe(), out.describe());
  if (!is_float(out.dtype)) throw InvalidArgument("output", "dtype fp32, fp16 or bf16", dtype_name(out.dtype));
  for (int i = 0; i < q.rank; ++i)
    if (out.shape[i] != q.shape[i])
      throw InvalidArgument("output", "the query's shape " + q.describe(), out.describe());
  if (out.strides[q.rank - 1] != 1) throw InvalidArgument("output", "unit stride on head_dim", out.describe());
  s.out_dtype = out.dtype;
  if (!o.return_lse) return;
  const TensorView& l = a.lse;
  const std::string want = q.rank == 4 ? fmt::format("[{}, {}, {}]", s.num_seqs, s.q_len, s.num_heads)
                                       : fmt::format("[{}, {}]", s.num_seqs, s.num_heads);
  if (l.rank != q.rank - 1) throw InvalidArgument("lse", "shape " + want + " (the query's leading dims)", l.describe());
  if (l.dtype != DType::f32) throw InvalidArgument("lse", "dtype fp32", dtype_name(l.dtype));
  for (int i = 0; i < l.rank; ++i)
    if (l.shape[i] != q.shape[i] || l.strides[i] < 0)
      throw InvalidArgument("lse", "shape " + want + " with non-negative strides", l.describe());
  if (l.strides[l.rank - 1] != 1) throw InvalidArgument("lse", "unit stride on heads", l.describe());
}

// fp8 dequantization scales: fp32, one per tensor or per KV head.
void scales(const PagedAttentionArgs& a, const ProblemShape& s) {
  for (auto [t, n] : {std::pair{&a.k_scale, "k_scale"}, {&a.v_scale, "v_scale"}}) {
    if (!t->data && t->rank == 0) continue;  // absent: 1
    if (!is_fp8(s.kv_dtype))
      throw InvalidArgument(
          n, fmt::format("absent (scales apply to e4m3/e5m2 caches; this one is {})", dtype_name(s.kv_dtype)),
          t->describe());
    if (t->dtype != DType::f32 || t->rank != 1 || (t->shape[0] != 1 && t->shape[0] != s.num_kv_heads) ||
        (t->shape[0] > 1 && t->strides[0] != 1))
      throw InvalidArgument(n, fmt::format("fp32 [1] or contiguous [{}] (num_kv_heads)", s.num_kv_heads),
                            t->describe());
  }
}

void kernel_config(const KernelConfig& c, const ProblemShape& s) {
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
  if (c.work_waves < 0 || c.work_waves > pj::kMaxWorkWaves)
    throw InvalidArgument("options.kernel_config.work_waves",
                          fmt::format("0 (engine chooses) or 1..{}", pj::kMaxWorkWaves), std::to_string(c.work_waves));
}

void options(const PagedAttentionOptions& o, const ProblemShape& s) {
  if (o.attn_scale && !std::isfinite(*o.attn_scale))
    throw InvalidArgument("options.attn_scale", "a finite number", fmt::format("{}", *o.attn_scale));
  if (o.num_splits < 0 || o.num_splits > 65535)
    throw InvalidArgument("options.num_splits", "0 (automatic) or 1..65535", std::to_string(o.num_splits));
  // Masked positions get zero weight: +inf (or NaN) cannot be their logit.
  if (std::isnan(o.mask_value) || o.mask_value == INFINITY)
    throw InvalidArgument("options.mask_value", "a number below +inf", fmt::format("{}", o.mask_value));
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
  if (o.kernel_config) kernel_config(*o.kernel_config, s);
  if (o.max_context_len && (*o.max_context_len < 0 || *o.max_context_len > 0x7fffffff))
    throw InvalidArgument("options.max_context_len", "a length in [0, 2^31)", std::to_string(*o.max_context_len));
}

void workspace(const PagedAttentionArgs& a) {
  if (a.workspace_bytes < 0) throw InvalidArgument("workspace_bytes", ">= 0", std::to_string(a.workspace_bytes));
  // Partials are read and written as float4.
  if (reinterpret_cast<std::uintptr_t>(a.workspace) % 16 != 0)
    throw InvalidArgument("workspace", "a 16-byte aligned pointer", fmt::format("{}", a.workspace));
  if (a.workspace && reinterpret_cast<std::uintptr_t>(a.workspace) > UINTPTR_MAX - std::uint64_t(a.workspace_bytes))
    throw InvalidArgument("workspace_bytes", "a size that does not wrap around the address space",
                          std::to_string(a.workspace_bytes));
}

// Attention sinks: one fp32 logit per query head.
void sinks(const TensorView& t, const ProblemShape& s) {
  if (!t.data && t.rank == 0) return;  // absent
  if (t.dtype != DType::f32 || t.rank != 1 || t.shape[0] != s.num_heads || (t.shape[0] > 1 && t.strides[0] != 1))
    throw InvalidArgument("sinks", fmt::format("fp32 contiguous [{}] (num_heads)", s.num_heads), t.describe());
}

struct Arg {
  const TensorView* view;
  const char* name;
  bool written;
};

// Pointers, alignment, and the memory each view covers; `more`: views only
// some calls have.
void memory(const PagedAttentionArgs& a, const PagedAttentionOptions& o, const std::vector<Arg>& more = {}) {
  const TensorView &q = a.query, &k = a.key_cache, &v = a.value_cache, &out = a.output;
  std::vector<Arg> args = {{&q, "query", false},
                           {&k, "key_cache", false},
                           {&v, "value_cache", false},
                           {&a.context_lens, "context_lens", false},
                           {&a.block_tables, "block_tables", false},
                           {&out, "output", true}};
  if (o.return_lse) args.push_back({&a.lse, "lse", true});
  for (auto [t, n] : {std::pair{&a.k_scale, "k_scale"}, {&a.v_scale, "v_scale"}, {&a.sinks, "sinks"}})
    if (t->rank == 1) args.push_back({t, n, false});
  args.insert(args.end(), more.begin(), more.end());
  for (const Arg& x : args) expect_data(*x.view, x.name);

  expect_vector_rows(q, "query");
  expect_vector_rows(k, "key_cache");
  expect_vector_rows(v, "value_cache");
  expect_aligned(out, "output", kOutputVector * std::int64_t(dtype_size(out.dtype)));
  for (int i = 0; i + 1 < out.rank; ++i)
    if (out.strides[i] % kOutputVector != 0)
      throw InvalidArgument("output", fmt::format("strides that are multiples of {} elements", kOutputVector),
                            out.describe());
  for (const Arg& x : args)
    if (dtype_size(x.view->dtype) == 4 && x.view != &q && x.view != &out) expect_aligned(*x.view, x.name, 4);

  std::vector<Range> ranges;
  for (const Arg& x : args) {
    const auto begin = reinterpret_cast<std::uintptr_t>(x.view->data);
    ranges.push_back({x.name, begin, begin + std::uint64_t(view_bytes(*x.view, x.name)), x.written});
    if (x.written) expect_no_self_overlap(*x.view, x.name);
  }
  if (a.workspace) {
    const auto begin = reinterpret_cast<std::uintptr_t>(a.workspace);
    ranges.push_back({"workspace", begin, begin + std::uint64_t(a.workspace_bytes), true});
  }
  expect_disjoint(ranges);
}

// The ragged call's own tensors: query_start and seq_count, int32 on the device.
void ragged_indices(const RaggedAttentionArgs& r, const ProblemShape& s) {
  const TensorView& qs = r.query_start;
  expect_rank(qs, "query_start", 1, "[num_seqs + 1]");
  if (qs.dtype != DType::i32) throw InvalidArgument("query_start", "dtype int32", dtype_name(qs.dtype));
  if (qs.shape[0] != std::int64_t(s.num_seqs) + 1 || qs.strides[0] != 1)
    throw InvalidArgument(
        "query_start",
        fmt::format("contiguous [{}] (num_seqs + 1, num_seqs from context_lens)", std::int64_t(s.num_seqs) + 1),
        qs.describe());
  const TensorView& sc = r.seq_count;
  if (!sc.data && sc.rank == 0) return;
  if (sc.rank != 1 || sc.shape[0] != 1 || sc.dtype != DType::i32)
    throw InvalidArgument("seq_count", "int32 [1]", sc.describe());
}

}  // namespace

PagedAttentionArgs paged_view(const RaggedAttentionArgs& r) {
  PagedAttentionArgs a;
  a.query = r.query;
  a.key_cache = r.key_cache;
  a.value_cache = r.value_cache;
  a.context_lens = r.context_lens;
  a.block_tables = r.block_tables;
  a.output = r.output;
  a.layout = r.layout;
  a.lse = r.lse;
  a.k_scale = r.k_scale;
  a.v_scale = r.v_scale;
  a.sinks = r.sinks;
  a.workspace = r.workspace;
  a.workspace_bytes = r.workspace_bytes;
  return a;
}

ProblemShape validate_ragged(const RaggedAttentionArgs& r, const PagedAttentionOptions& o) {
  refuse_meaningless_options(o);
  const PagedAttentionArgs a = paged_view(r);
  if (r.query.rank != 3)
    throw InvalidArgument("query", "rank 3 [total_tokens, num_heads, head_dim]", r.query.describe());
  if (r.query.shape[0] > 0x7fffffff) throw InvalidArgument("query", "total_tokens < 2^31", r.query.describe());
  // query_shape reads the leading dim as sequences: here it is the packed tokens.
  ProblemShape s = query_shape(r.query, true);
  output_shape(a, o, s);
  s.ragged = true;
  s.total_tokens = s.num_seqs;
  if (r.context_lens.rank != 1) throw InvalidArgument("context_lens", "rank 1 [num_seqs]", r.context_lens.describe());
  // (A negative size would pass every check that compares it, and skip the memory checks.)
  if (r.context_lens.shape[0] < 0 || r.context_lens.shape[0] > 65535)
    throw InvalidArgument("context_lens", "num_seqs in [0, 65535]", std::to_string(r.context_lens.shape[0]));
  s.num_seqs = int(r.context_lens.shape[0]);
  if (r.max_query_len < 0 || r.max_query_len > s.total_tokens)
    throw InvalidArgument("max_query_len", fmt::format("0 (total_tokens) or 1..{} (total_tokens)", s.total_tokens),
                          std::to_string(r.max_query_len));
  s.q_len = int(std::max<std::int64_t>(1, r.max_query_len ? r.max_query_len : s.total_tokens));
  // Query rows of a KV head (group x tokens) are counted in 32 bits on the device.
  if (std::int64_t(s.q_len) * s.num_heads > (std::int64_t(1) << 30))
    throw NotSupported("max_query_len", fmt::format("max_query_len x num_heads <= 2^30 (here {} x {}); pass a "
                                                    "tighter max_query_len or split the step",
                                                    s.q_len, s.num_heads));
  s.layout = r.layout;
  cache_shape(a, s);
  index_shape(a, s);
  ragged_indices(r, s);
  scales(a, s);
  sinks(r.sinks, s);
  options(o, s);
  workspace(a);
  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  s.max_context_len = o.max_context_len ? std::min<std::int64_t>(*o.max_context_len, capacity) : capacity;
  std::vector<Arg> more = {{&r.query_start, "query_start", false}};
  if (r.seq_count.rank == 1) more.push_back({&r.seq_count, "seq_count", false});
  if (s.num_seqs > 0 && s.total_tokens > 0) memory(a, o, more);
  return s;
}

ProblemShape validate_call(const PagedAttentionArgs& a, const PagedAttentionOptions& o) {
  refuse_meaningless_options(o);
  ProblemShape s = query_shape(a.query);
  s.layout = a.layout;
  cache_shape(a, s);
  index_shape(a, s);
  output_shape(a, o, s);
  scales(a, s);
  sinks(a.sinks, s);
  options(o, s);
  workspace(a);
  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  s.max_context_len = o.max_context_len ? std::min<std::int64_t>(*o.max_context_len, capacity) : capacity;
  // Pointers last: shape errors are more useful than "null pointer" when both apply.
  if (s.num_seqs > 0) memory(a, o);
  return s;
}

}  // namespace pagedjit
