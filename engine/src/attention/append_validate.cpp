// Every rule an append_kv call must satisfy before anything is launched.
// Each failure names the argument, what was expected and what was given.
#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "attention/append.hpp"
#include "attention/validate.hpp"
#include "attention/view_checks.hpp"
#include "pagedjit/errors.hpp"

namespace pagedjit::attention {
namespace {

using namespace checks;

void rows(const AppendKvArgs& a, AppendShape& s) {
  const TensorView& k = a.keys;
  expect_rank(k, "keys", 3, "[total_tokens, num_kv_heads, head_dim]");
  expect_positive_shape(k, "keys");
  if (!is_float(k.dtype)) throw InvalidArgument("keys", "dtype fp32, fp16 or bf16", dtype_name(k.dtype));
  // Rows and heads index the grid: 31 bits and a grid dimension's 65535.
  if (k.shape[0] > 0x7fffffff) throw InvalidArgument("keys", "total_tokens < 2^31", k.describe());
  if (k.shape[1] < 1 || k.shape[1] > 65535)
    throw InvalidArgument("keys", "num_kv_heads in 1..65535", std::to_string(k.shape[1]));
  if (k.shape[2] < 16 || k.shape[2] % 16 != 0 || k.shape[2] > pj::kMaxHeadDim)
    throw InvalidArgument("keys", fmt::format("head_dim a multiple of 16 in [16, {}]", pj::kMaxHeadDim),
                          std::to_string(k.shape[2]));
  const TensorView& v = a.values;
  if (v.rank != 3 || v.shape[0] != k.shape[0] || v.shape[1] != k.shape[1] || v.shape[2] != k.shape[2])
    throw InvalidArgument("values", "the shape of keys " + k.describe(), v.describe());
  if (v.dtype != k.dtype)
    throw InvalidArgument("values", fmt::format("dtype {} (the keys')", dtype_name(k.dtype)), dtype_name(v.dtype));
  s.total_tokens = k.shape[0];
  s.num_kv_heads = int(k.shape[1]);
  s.head_dim = int(k.shape[2]);
  s.src_dtype = k.dtype;
}

void caches(const AppendKvArgs& a, AppendShape& s) {
  const TensorView& k = a.key_cache;
  const TensorView& v = a.value_cache;
  expect_rank(k, "key_cache", 4, "(paged cache)");
  expect_rank(v, "value_cache", 4, "(paged cache)");
  expect_positive_shape(k, "key_cache");
  if (!is_fp8(k.dtype) && k.dtype != s.src_dtype)
    throw InvalidArgument("key_cache", fmt::format("dtype {} (the keys'), e4m3 or e5m2", dtype_name(s.src_dtype)),
                          dtype_name(k.dtype));
  if (v.dtype != k.dtype)
    throw InvalidArgument("value_cache", fmt::format("dtype {} (the key cache's)", dtype_name(k.dtype)),
                          dtype_name(v.dtype));
  for (int i = 0; i < 4; ++i)
    if (v.shape[i] != k.shape[i])
      throw InvalidArgument("value_cache", "the shape of key_cache " + k.describe(), v.describe());
  const CacheAxes axes = cache_axes(a.layout);
  const std::int64_t blocks = k.shape[axes.block_axis], kv_heads = k.shape[axes.head_axis],
                     page = k.shape[axes.slot_axis];
  if (kv_heads != s.num_kv_heads)
    throw InvalidArgument("key_cache", fmt::format("num_kv_heads = {} (the keys') in {}", s.num_kv_heads, axes.dims),
                          k.describe());
  expect_dim(k, "key_cache", 3, s.head_dim, "head_dim of the keys");
  if (page < 1 || page > 256 || (page & (page - 1)) != 0)
    throw InvalidArgument("key_cache", fmt::format("page_size a power of two in [1, 256] ({})", axes.dims),
                          std::to_string(page));
  if (blocks < 1 || blocks > 0x7fffffff) throw InvalidArgument("key_cache", "num_blocks in [1, 2^31)", k.describe());
  for (auto [t, n] : {std::pair{&k, "key_cache"}, {&v, "value_cache"}})
    if (t->strides[axes.block_axis] >= (std::int64_t(1) << 31) || t->strides[axes.slot_axis] >= (std::int64_t(1) << 31))
      throw NotSupported(n, fmt::format("page and slot strides below 2^31 elements ({})", t->describe()));
  s.kv_dtype = k.dtype;
  s.layout = a.layout;
  s.num_blocks = int(blocks);
  s.page_size = int(page);
}

void int32_vector(const TensorView& t, const char* name, std::int64_t want, const char* what) {
  expect_rank(t, name, 1, what);
  if (t.dtype != DType::i32) throw InvalidArgument(name, "dtype int32", dtype_name(t.dtype));
  expect_dim(t, name, 0, want, what);
  // The kernel indexes it directly: it knows no stride.
  if (t.shape[0] > 1 && t.strides[0] != 1) throw InvalidArgument(name, "unit stride", t.describe());
}

void indices(const AppendKvArgs& a, AppendShape& s) {
  const TensorView& qs = a.query_start;
  expect_rank(qs, "query_start", 1, "[num_seqs + 1]");
  if (qs.shape[0] < 1 || qs.shape[0] > 0x7fffffff)
    throw InvalidArgument("query_start", "[num_seqs + 1] with num_seqs in [0, 2^31 - 1)", qs.describe());
  s.num_seqs = int(qs.shape[0] - 1);
  int32_vector(qs, "query_start", qs.shape[0], "[num_seqs + 1]");
  int32_vector(a.context_lens, "context_lens", s.num_seqs, "[num_seqs], num_seqs from query_start");
  s.max_blocks = block_table_width(a.block_tables, s.num_seqs, "num_seqs, from query_start");
  if (a.seq_count.data || a.seq_count.rank != 0) int32_vector(a.seq_count, "seq_count", 1, "[1]");
}

// fp8 quantization scales: fp32, one per tensor or per KV head; absent: 1.
void scales(const AppendKvArgs& a, const AppendShape& s) {
  for (auto [t, n] : {std::pair{&a.k_scale, "k_scale"}, {&a.v_scale, "v_scale"}}) {
    if (!t->data && t->rank == 0) continue;
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

// Pointers, alignment and the memory each view covers: the caches are
// written, so neither may share a byte with anything the kernel reads.
void memory(const AppendKvArgs& a) {
  struct Arg {
    const TensorView* view;
    const char* name;
  };
  std::vector<Arg> inputs = {{&a.keys, "keys"},
                             {&a.values, "values"},
                             {&a.query_start, "query_start"},
                             {&a.context_lens, "context_lens"},
                             {&a.block_tables, "block_tables"}};
  for (auto [t, n] : {std::pair{&a.k_scale, "k_scale"}, {&a.v_scale, "v_scale"}, {&a.seq_count, "seq_count"}})
    if (t->rank == 1) inputs.push_back({t, n});
  const std::vector<Arg> outputs = {{&a.key_cache, "key_cache"}, {&a.value_cache, "value_cache"}};
  for (const Arg& x : inputs) expect_data(*x.view, x.name);
  for (const Arg& x : outputs) expect_data(*x.view, x.name);
  for (const Arg& x : {inputs[0], inputs[1], outputs[0], outputs[1]}) expect_vector_rows(*x.view, x.name);
  for (std::size_t i = 2; i < inputs.size(); ++i) expect_aligned(*inputs[i].view, inputs[i].name, 4);

  std::vector<Range> read;
  for (const Arg& x : inputs) {
    const auto begin = reinterpret_cast<std::uintptr_t>(x.view->data);
    read.push_back({x.name, begin, begin + std::uint64_t(view_bytes(*x.view, x.name)), false});
  }
  // The two caches may interleave in one buffer (their ranges overlap), but
  // must not share an element.
  if (a.key_cache.data == a.value_cache.data)
    throw InvalidArgument("value_cache", "memory apart from key_cache (the same address would get both writes)",
                          fmt::format("{} for both", a.key_cache.data));
  for (const Arg& x : outputs) {
    // view_bytes first: the overlap rule's arithmetic relies on the extent it checks.
    const auto begin = reinterpret_cast<std::uintptr_t>(x.view->data);
    const std::int64_t bytes = view_bytes(*x.view, x.name);
    expect_no_self_overlap(*x.view, x.name);
    std::vector<Range> ranges = read;
    ranges.push_back({x.name, begin, begin + std::uint64_t(bytes), true});
    expect_disjoint(ranges);
  }
  expect_no_shared_elements(a.key_cache, "key_cache", a.value_cache, "value_cache");
}

}  // namespace

AppendShape validate_append(const AppendKvArgs& a) {
  AppendShape s;
  rows(a, s);
  caches(a, s);
  indices(a, s);
  scales(a, s);
  // Pointers last: shape errors are more useful than "null pointer" when both apply.
  if (s.total_tokens > 0 && s.num_seqs > 0) memory(a);
  return s;
}

}  // namespace pagedjit::attention
