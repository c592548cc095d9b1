// Fuzz target (f): the ragged step's two calls through the C API,
// pagedjit_validate_ragged and pagedjit_validate_append, on mostly coherent
// argument sets made from the input and damaged in the C structs' own fields
// (ranks, sizes, strides, dtypes, pointers, reserved fields, layouts,
// max_query_len, seq_count, sinks, fp8 scales, the workspace; key and value
// caches interleaved in one buffer, rightly or not). Every accepted set goes
// to an oracle that works out, by exact 128-bit arithmetic of its own, the
// memory the kernels will touch: packed query / output / lse rows,
// query_start's num_seqs + 1 ints, seq_count, sinks, scales, the caches'
// pages, the append's key and value rows and its cache writes. None may wrap
// or be misaligned for its access width, and what a kernel writes may share
// no byte with anything else it touches. Accepted ragged calls are then
// planned for an H100 (the decode plan, and the prefill plan for long
// queries) and accepted appends get their launch shape: grids within the
// hardware's limits, shared memory within the device's, workspace sizes
// without overflow.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "attention/append.hpp"
#include "attention/planner.hpp"
#include "attention/prefill.hpp"
#include "attention/validate.hpp"
#include "call_generator.hpp"
#include "harness.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/pagedjit.h"
#include "pagedjit/ragged_attention.hpp"

namespace pjfuzz {
namespace {

using i128 = __int128;

std::uint64_t g_ragged = 0, g_ragged_ok = 0, g_ragged_launch = 0, g_planned = 0, g_prefill = 0;
std::uint64_t g_append = 0, g_append_ok = 0, g_append_launch = 0, g_interleaved = 0;

constexpr i128 kI32Max = 0x7fffffff;
constexpr i128 kI64Max = INT64_MAX;

void expect(bool ok, const char* call, const std::string& what) {
  if (!ok) throw Violation(std::string(call) + " accepted a call whose " + what);
}

int elem_size(std::int32_t dtype) {
  return dtype == PAGEDJIT_F32 || dtype == PAGEDJIT_I32 ? 4 : dtype == PAGEDJIT_F16 || dtype == PAGEDJIT_BF16 ? 2 : 1;
}

std::uintptr_t addr(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

// ---- the generator ----

// A placeholder address in tensor `slot`'s own region (2^41 bytes apart);
// now and then null, misaligned, or in another tensor's region.
void* pointer(Bytes& in, unsigned slot) {
  switch (in.u8() % 32) {
    case 0:
      return nullptr;
    case 1:
      return reinterpret_cast<void*>((std::uintptr_t(slot + 1) << 41) + in.u8() % 64);
    case 2:
      return reinterpret_cast<void*>((std::uintptr_t(in.u8() % 20 + 1) << 41) + 16 * (in.u8() % 4));
    default:
      return reinterpret_cast<void*>(std::uintptr_t(slot + 1) << 41);
  }
}

// A row-major view, strides wrapping for absurd sizes, the outer strides
// padded by `pad` elements.
void view(pagedjit_tensor& t, void* p, std::int32_t dtype, int rank, const std::int64_t* dims, std::int64_t pad) {
  t = pagedjit_tensor{};
  t.data = p;
  t.dtype = dtype;
  t.rank = rank;
  std::uint64_t s = 1;
  for (int k = rank - 1; k >= 0; --k) {
    t.shape[k] = dims[k];
    t.strides[k] = std::int64_t(s);
    s *= std::uint64_t(dims[k]);
    if (k == rank - 1) s += std::uint64_t(pad);
  }
}

// Mostly `usual`, sometimes anything.
std::int64_t mostly(Bytes& in, std::int64_t usual, unsigned odds = 8) {
  return in.one_in(odds) ? any_i64(in) : usual;
}

std::int32_t float_dtype(Bytes& in) {
  return in.one_in(32) ? std::int32_t(in.u8() % 8) - 1 : std::int32_t(in.u8() % 3);
}

void damage(Bytes& in, pagedjit_tensor& t) {
  switch (in.u8() % 6) {
    case 0:
      t.dtype = std::int32_t(in.u8() % 8) - 1;
      break;
    case 1:
      t.rank = int(in.u8() % 7) - 1;
      break;
    case 2: {  // anything, or one more or less than another axis (wrapping); the bytes in the order C++17 took them
      const std::int64_t v =
          in.flag()
              ? any_i64(in)
              : std::int64_t(std::uint64_t(t.shape[in.u8() % 4]) + (in.flag() ? std::uint64_t(1) : ~std::uint64_t(0)));
      t.shape[in.u8() % 4] = v;
      break;
    }
    case 3:
      t.strides[in.u8() % 4] = any_i64(in);
      break;
    case 4:
      t.data = reinterpret_cast<void*>(addr(t.data) + (in.flag() ? in.u8() % 32 : 16 * std::uintptr_t(in.u16())));
      break;
    default:
      t.data = pointer(in, in.u8() % 20);
      break;
  }
}

// The problem both calls share.
struct Problem {
  std::int64_t total_tokens, num_seqs, num_kv_heads, num_heads, head_dim, page_size, num_blocks, max_blocks;
  std::int32_t layout, dtype, kv_dtype;
  std::int64_t pad;
};

Problem problem(Bytes& in) {
  Problem p;
  // (Near 2^31: the grids' row arithmetic.)
  p.total_tokens = in.one_in(6) ? (in.one_in(4) ? 0x7fffffff - std::int64_t(in.u8()) : any_i64(in)) : in.u8() % 70;
  p.num_seqs = in.one_in(6) ? any_i64(in) : in.u8() % 9;
  p.num_kv_heads = mostly(in, 1 + in.u8() % 8);
  p.num_heads = std::int64_t(std::uint64_t(p.num_kv_heads) * std::uint64_t(mostly(in, 1 + in.u8() % 40)));
  p.head_dim = mostly(in, 16 * (1 + in.u8() % 32));
  p.page_size = mostly(in, std::int64_t(1) << (in.u8() % 9));
  p.num_blocks = mostly(in, 1 + in.u16() % 4096);
  p.max_blocks = mostly(in, 1 + in.u8() % 64);
  p.layout = in.one_in(32) ? std::int32_t(in.u32()) : std::int32_t(in.u8() % 3);
  p.dtype = float_dtype(in);
  p.kv_dtype = in.one_in(6) ? PAGEDJIT_E4M3 + (in.u8() & 1) : p.dtype;
  p.pad = in.one_in(4) ? mostly(in, 8 * (in.u8() % 4)) : 0;
  return p;
}

// The caches: each in its own region, or both in one buffer interleaved on
// their outermost axis (value = key + the outer span: right; or another
// offset: sharing elements, or overlapping what else the call touches).
void caches(Bytes& in, const Problem& p, pagedjit_tensor& k, pagedjit_tensor& v) {
  std::int64_t dims[4] = {p.num_blocks, p.num_kv_heads, p.page_size, p.head_dim};
  if (p.layout == PAGEDJIT_HEADS_BLOCKS) std::swap(dims[0], dims[1]);
  if (p.layout == PAGEDJIT_BLOCKS_TOKENS) std::swap(dims[1], dims[2]);
  const std::int64_t pad = in.one_in(4) ? p.pad : 0;
  view(k, pointer(in, 1), p.kv_dtype, 4, dims, pad);
  view(v, pointer(in, 2), p.kv_dtype, 4, dims, pad);
  if (in.one_in(3)) {
    const std::int64_t span = k.strides[0];
    for (pagedjit_tensor* t : {&k, &v}) t->strides[0] = std::int64_t(2 * std::uint64_t(span));
    const int es = elem_size(p.kv_dtype);
    std::uint64_t offset = std::uint64_t(span) * std::uint64_t(es);  // bytes
    switch (in.u8() % 4) {
      case 0:
        offset = 16 * std::uint64_t(in.u16() % 64);
        break;
      case 1:
        offset = std::uint64_t(any_i64(in)) & ~std::uint64_t(15);
        break;
      default:
        break;
    }
    v.data = reinterpret_cast<void*>(addr(k.data) + offset);
    if (in.one_in(4)) std::swap(k.data, v.data);
  }
}

// Optional fp32 [n] (or [1]) per-head tensors: fp8 scales, sinks.
void maybe_vector(Bytes& in, pagedjit_tensor& t, unsigned slot, std::int64_t n, bool usual) {
  if (!usual && !in.one_in(16)) return;
  const std::int64_t dims[1] = {in.one_in(3) ? 1 : mostly(in, n, 16)};
  view(t, pointer(in, slot), PAGEDJIT_F32, 1, dims, 0);
  if (in.one_in(8)) t.strides[0] = any_i64(in);
  if (in.one_in(16)) t.rank = 0;
}

void seq_count(Bytes& in, pagedjit_tensor& t) {
  if (!in.one_in(3)) return;
  const std::int64_t one[1] = {in.one_in(16) ? any_i64(in) : 1};
  view(t, pointer(in, 11), PAGEDJIT_I32, 1, one, 0);
  if (in.one_in(8)) t.strides[0] = any_i64(in);
}

void indices(Bytes& in, const Problem& p, pagedjit_tensor& qs, pagedjit_tensor& cl, pagedjit_tensor& bt) {
  const std::int64_t qd[1] = {std::int64_t(std::uint64_t(p.num_seqs) + 1)};
  view(qs, pointer(in, 4), PAGEDJIT_I32, 1, qd, 0);
  const std::int64_t cd[1] = {p.num_seqs};
  view(cl, pointer(in, 5), PAGEDJIT_I32, 1, cd, 0);
  const std::int64_t bd[2] = {p.num_seqs, p.max_blocks};
  view(bt, pointer(in, 6), PAGEDJIT_I32, 2, bd, in.one_in(4) ? p.pad : 0);
}

pagedjit_options options(Bytes& in) {
  pagedjit_options o;
  pagedjit_options_init(&o);
  if (in.one_in(4)) o.has_attn_scale = 1, o.attn_scale = in.one_in(4) ? in.f32_bits() : 0.125f;
  if (in.one_in(4)) o.has_max_context_len = std::int32_t(in.u8() % 3), o.max_context_len = mostly(in, in.u16());
  if (in.one_in(2)) o.num_splits = in.one_in(4) ? std::int32_t(any_i64(in)) : in.u8() % 40;
  if (in.one_in(8)) o.has_attn_logits_soft_cap = 1, o.attn_logits_soft_cap = in.one_in(4) ? in.f32_bits() : 30.f;
  if (in.one_in(4)) o.has_sliding_window = 1, o.sliding_window = mostly(in, 1 + in.u16());
  if (in.one_in(6))
    o.has_pages_per_compute_block = 1, o.pages_per_compute_block = in.one_in(4) ? int(any_i64(in)) : in.u8() % 20;
  if (in.one_in(64)) o.megacore_mode = "parallel";
  if (in.one_in(64)) o.inline_seq_dim = 0;
  if (in.one_in(64)) o.reserved0 = std::int32_t(in.u32());
  o.return_lse = in.one_in(16) ? std::int32_t(in.u32()) : in.u8() & 1;
  o.batch_invariant = in.one_in(4);
  if (in.one_in(3)) {
    o.has_kernel_config = 1;
    if (in.flag()) {
      o.tile_tokens = in.one_in(8) ? int(any_i64(in)) : 16 * (in.u8() % 18);
      o.warps = in.one_in(8) ? int(any_i64(in)) : in.u8() % 10;
      o.stages = in.one_in(8) ? int(any_i64(in)) : in.u8() % 10;
    }
    if (in.flag()) o.chunk_tokens = in.one_in(4) ? int(any_i64(in)) : 16 * in.u8();
    if (in.flag()) o.v_dims = in.one_in(8) ? int(any_i64(in)) : 16 * (in.u8() % 18);
  }
  return o;
}

pagedjit_ragged_args ragged_args(Bytes& in) {
  const Problem p = problem(in);
  pagedjit_ragged_args a{};
  const std::int64_t qd[3] = {p.total_tokens, p.num_heads, p.head_dim};
  view(a.query, pointer(in, 0), p.dtype, 3, qd, p.pad);
  caches(in, p, a.key_cache, a.value_cache);
  indices(in, p, a.query_start, a.context_lens, a.block_tables);
  view(a.output, pointer(in, 7), float_dtype(in), 3, qd, in.one_in(4) ? p.pad : 0);
  const std::int64_t ld[2] = {p.total_tokens, p.num_heads};
  view(a.lse, pointer(in, 8), PAGEDJIT_F32, 2, ld, 0);
  const bool fp8 = p.kv_dtype == PAGEDJIT_E4M3 || p.kv_dtype == PAGEDJIT_E5M2;
  maybe_vector(in, a.k_scale, 9, p.num_kv_heads, fp8 && !in.one_in(3));
  maybe_vector(in, a.v_scale, 10, p.num_kv_heads, fp8 && !in.one_in(3));
  maybe_vector(in, a.sinks, 12, p.num_heads, in.one_in(3));
  seq_count(in, a.seq_count);
  a.layout = p.layout;
  a.max_query_len = in.one_in(2) ? 0 : in.one_in(8) ? any_i64(in) : 1 + in.u8() % 20;
  if (in.one_in(4)) {
    a.workspace = pointer(in, 13);
    a.workspace_bytes = any_i64(in);
  }
  if (in.one_in(64)) a.reserved0 = std::int32_t(in.u32());
  pagedjit_tensor* tensors[] = {&a.query,        &a.query_start,  &a.key_cache, &a.value_cache,
                                &a.context_lens, &a.block_tables, &a.output,    &a.lse,
                                &a.k_scale,      &a.v_scale,      &a.sinks,     &a.seq_count};
  const std::uint8_t n = in.u8();
  for (int i = n % 8 < 4 ? 0 : 1 + n % 3; i > 0; --i) damage(in, *tensors[in.u8() % 12]);
  return a;
}

pagedjit_append_args append_args(Bytes& in) {
  const Problem p = problem(in);
  pagedjit_append_args a{};
  const std::int64_t kd[3] = {p.total_tokens, p.num_kv_heads, p.head_dim};
  const std::int32_t src = p.kv_dtype == p.dtype ? p.dtype : float_dtype(in);
  view(a.keys, pointer(in, 14), src, 3, kd, p.pad);
  view(a.values, pointer(in, 15), src, 3, kd, in.one_in(4) ? 0 : p.pad);
  if (in.one_in(8)) {  // keys and values interleaved in one buffer of rows
    a.keys.strides[0] = a.values.strides[0] = std::int64_t(2 * std::uint64_t(a.keys.strides[0]));
    a.values.data = reinterpret_cast<void*>(addr(a.keys.data) + std::uint64_t(a.keys.strides[0] / 2) * 2);
  }
  caches(in, p, a.key_cache, a.value_cache);
  indices(in, p, a.query_start, a.context_lens, a.block_tables);
  const bool fp8 = p.kv_dtype == PAGEDJIT_E4M3 || p.kv_dtype == PAGEDJIT_E5M2;
  maybe_vector(in, a.k_scale, 9, p.num_kv_heads, fp8 && !in.one_in(3));
  maybe_vector(in, a.v_scale, 10, p.num_kv_heads, fp8 && !in.one_in(3));
  seq_count(in, a.seq_count);
  a.layout = p.layout;
  if (in.one_in(64)) a.reserved0 = std::int32_t(in.u32());
  pagedjit_tensor* tensors[] = {&a.keys,      &a.values,      &a.query_start, &a.context_lens, &a.block_tables,
                                &a.key_cache, &a.value_cache, &a.k_scale,     &a.v_scale,      &a.seq_count};
  const std::uint8_t n = in.u8();
  for (int i = n % 8 < 4 ? 0 : 1 + n % 3; i > 0; --i) damage(in, *tensors[in.u8() % 10]);
  return a;
}

// ---- the oracle: the memory the kernels touch ----

std::string describe(const char* name, const pagedjit_tensor& t) {
  std::string d = std::string(name) + " " + std::to_string(addr(t.data)) + " dtype " + std::to_string(t.dtype) + " [";
  for (int i = 0; i < t.rank && i < 4; ++i) d += (i ? ", " : "") + std::to_string(t.shape[i]);
  d += "] strides [";
  for (int i = 0; i < t.rank && i < 4; ++i) d += (i ? ", " : "") + std::to_string(t.strides[i]);
  return d + "]\n";
}

// A Violation with the call's tensors appended (what a finding needs to be read).
[[noreturn]] void rethrow_described(const Violation& v,
                                    std::initializer_list<std::pair<const char*, const pagedjit_tensor*>> ts,
                                    std::int32_t layout) {
  std::string d = std::string(v.what()) + "\nlayout " + std::to_string(layout) + "\n";
  for (const auto& [n, t] : ts) d += describe(n, *t);
  throw Violation(d);
}

// A byte range the kernel touches (written or read), and at what width.
struct Touched {
  std::string name;
  const pagedjit_tensor* t;  // null: a raw range
  bool written;
  i128 begin = 0, end = 0;
};

// The bytes of every element of `t` (strides as given), checked not to
// wrap, to keep offsets within 64 bits, and aligned to `align` bytes for
// every element the kernel accesses at that width (pointer and outer
// strides; the innermost stride must be 1 where `rows`).
Touched measure(const char* call, const std::string& name, const pagedjit_tensor& t, bool written, int align,
                bool rows) {
  expect(t.data != nullptr, call, name + " is null");
  expect(t.rank >= 1 && t.rank <= 4, call, name + " has rank " + std::to_string(t.rank));
  const int es = elem_size(t.dtype);
  i128 lo = 0, hi = 0;
  for (int i = 0; i < t.rank; ++i) {
    expect(t.shape[i] >= 1, call, name + " is empty but touched");
    const i128 step = i128(t.strides[i]) * (t.shape[i] - 1);
    (step < 0 ? lo : hi) += step;
  }
  const i128 base = addr(t.data);
  Touched x{name, &t, written};
  x.begin = base + lo * es;
  x.end = base + (hi + 1) * es;
  expect(-lo * es <= kI64Max && (hi + 1) * es <= kI64Max, call, name + " has offsets past 64 bits");
  expect(x.begin >= 0 && x.end <= (i128(1) << 64), call, name + " wraps around the address space");
  expect(base % align == 0, call, name + " is misaligned for " + std::to_string(align) + "-byte accesses");
  if (rows) {
    expect(t.strides[t.rank - 1] == 1 || t.shape[t.rank - 1] == 1, call, name + " has a non-unit innermost stride");
    for (int i = 0; i + 1 < t.rank; ++i)
      expect(t.shape[i] == 1 || (i128(t.strides[i]) * es) % align == 0, call,
             name + " has a stride that misaligns rows");
  }
  return x;
}

// `n` consecutive ints (floats) at `t.data`, read by index without a stride.
Touched ints(const char* call, const std::string& name, const pagedjit_tensor& t, i128 n) {
  expect(t.rank == 1 && t.shape[0] == n, call,
         name + " does not hold the " + std::to_string(std::int64_t(n)) + " elements the kernel indexes");
  expect(n <= 1 || t.strides[0] == 1, call, name + " has a stride the kernel ignores");
  expect(elem_size(t.dtype) == 4, call, name + " is not 4-byte elements");
  return measure(call, name, t, false, 4, false);
}

// The element offsets (in elements) of every row start of a view whose last
// axis is a contiguous row; empty when there are more than `limit`.
std::vector<i128> row_starts(const pagedjit_tensor& t, std::size_t limit) {
  std::vector<i128> offsets(1, 0);
  for (int i = 0; i + 1 < t.rank; ++i) {
    if (offsets.size() * std::size_t(t.shape[i]) > limit) return {};
    std::vector<i128> next;
    for (i128 o : offsets)
      for (std::int64_t j = 0; j < t.shape[i]; ++j) next.push_back(o + i128(j) * t.strides[i]);
    offsets.swap(next);
  }
  return offsets;
}

// Written views: no two elements at the same address; with `other`, none
// shared with it either. Exact (every row enumerated) for small views; for
// large ones, sorted by stride each axis must step past all the smaller ones
// span (for a pair with equal strides: the pair as one view with an axis of
// two at their distance).
void expect_disjoint_elements(const char* call, const std::string& name, const pagedjit_tensor& t,
                              const pagedjit_tensor* other = nullptr) {
  const int es = elem_size(t.dtype);
  const i128 row = i128(t.shape[t.rank - 1]) * es;
  if (other) {
    const Touched x = measure(call, name, t, true, 1, false),
                  y = measure(call, name + "'s partner", *other, true, 1, false);
    if (x.end <= y.begin || y.end <= x.begin) return;  // apart
  }
  std::vector<std::pair<i128, i128>> spans;  // byte intervals of rows
  const std::vector<i128> a = row_starts(t, 4096);
  const std::vector<i128> b = other ? row_starts(*other, 4096) : std::vector<i128>{};
  if (!a.empty() && (!other || !b.empty())) {
    for (i128 o : a) spans.push_back({i128(addr(t.data)) + o * es, i128(addr(t.data)) + o * es + row});
    for (i128 o : b) spans.push_back({i128(addr(other->data)) + o * es, i128(addr(other->data)) + o * es + row});
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i)
      expect(spans[i - 1].second <= spans[i].first, call,
             other ? name + " shares memory with " + name + "'s partner or itself"
                   : name + " has elements sharing memory");
    if (other) ++g_interleaved;
    return;
  }
  // Large: a view of rank + 1 with the pair's distance as an extra axis.
  std::vector<std::pair<i128, i128>> axes;  // stride, size
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] > 1) axes.push_back({t.strides[i], t.shape[i]});
  if (other) {
    for (int i = 0; i < t.rank; ++i)
      expect(other->strides[i] == t.strides[i] || t.shape[i] == 1, call,
             name + " and its partner overlap with different strides");
    const i128 d = i128(addr(other->data)) - i128(addr(t.data));
    expect(d % es == 0, call, name + " and its partner are not whole elements apart");
    axes.push_back({d < 0 ? -d / es : d / es, 2});
  }
  std::sort(axes.begin(), axes.end());
  i128 covered = 1;
  for (const auto& [stride, size] : axes) {
    expect(stride >= covered, call,
           name + (other ? " shares memory with its partner" : " has elements sharing memory"));
    covered += stride * (size - 1);
  }
}

// Every written range disjoint from every other range.
void expect_apart(const char* call, const std::vector<Touched>& touched) {
  for (const Touched& w : touched)
    for (const Touched& r : touched)
      if (w.written && &w != &r) expect(w.end <= r.begin || r.end <= w.begin, call, w.name + " overlaps " + r.name);
}

// The cache's axes in a layout (head_dim last).
struct Axes {
  int blocks, heads, slots;
};
Axes axes_of(std::int32_t layout) {
  return layout == PAGEDJIT_HEADS_BLOCKS    ? Axes{1, 0, 2}
         : layout == PAGEDJIT_BLOCKS_TOKENS ? Axes{0, 2, 1}
                                            : Axes{0, 1, 2};
}

// What every kernel assumes of a cache pair it addresses in 32-bit page and
// slot arithmetic.
void expect_cache(const char* call, const pagedjit_tensor& k, const pagedjit_tensor& v, std::int32_t layout,
                  std::int64_t kv_heads, std::int64_t head_dim) {
  const Axes ax = axes_of(layout);
  expect(layout >= 0 && layout <= 2, call, "layout is not a pagedjit_layout");
  expect(k.rank == 4 && v.rank == 4, call, "caches are not 4-D");
  for (int i = 0; i < 4; ++i) expect(k.shape[i] == v.shape[i], call, "caches differ in shape");
  expect(k.dtype == v.dtype, call, "caches differ in dtype");
  expect(k.shape[ax.heads] == kv_heads && k.shape[3] == head_dim, call, "cache's heads or head_dim differ");
  const std::int64_t page = k.shape[ax.slots];
  expect(page >= 1 && page <= 256 && (page & (page - 1)) == 0, call, "page_size is not a power of two <= 256");
  expect(k.shape[ax.blocks] >= 1 && k.shape[ax.blocks] <= kI32Max, call, "num_blocks is outside int");
  for (const pagedjit_tensor* c : {&k, &v})
    expect(c->strides[ax.blocks] >= 0 && c->strides[ax.blocks] < (std::int64_t(1) << 31) && c->strides[ax.slots] >= 0 &&
               c->strides[ax.slots] < (std::int64_t(1) << 31),
           call, "cache has a page or slot stride outside 32 bits");
}

// ---- ragged_paged_attention ----

pagedjit::TensorView to_view(const pagedjit_tensor& t) {
  pagedjit::TensorView v;
  v.data = t.data;
  v.dtype = pagedjit::DType(t.dtype);
  v.rank = t.rank;
  for (int i = 0; i < t.rank && i < 4; ++i)
    v.shape[std::size_t(i)] = t.shape[i], v.strides[std::size_t(i)] = t.strides[i];
  return v;
}

pagedjit::PagedAttentionOptions from_c(const pagedjit_options& o) {
  pagedjit::PagedAttentionOptions r;
  if (o.has_attn_scale) r.attn_scale = o.attn_scale;
  if (o.has_max_context_len) r.max_context_len = o.max_context_len;
  r.num_splits = o.num_splits;
  r.mask_value = o.mask_value;
  if (o.has_attn_logits_soft_cap) r.attn_logits_soft_cap = o.attn_logits_soft_cap;
  if (o.has_sliding_window) r.sliding_window = o.sliding_window;
  if (o.has_pages_per_compute_block) r.pages_per_compute_block = o.pages_per_compute_block;
  r.return_lse = o.return_lse != 0;
  r.batch_invariant = o.batch_invariant != 0;
  if (o.has_kernel_config) {
    pagedjit::KernelConfig c;
    c.tile_tokens = o.tile_tokens, c.warps = o.warps, c.stages = o.stages;
    c.chunk_tokens = o.chunk_tokens, c.v_dims = o.v_dims;
    r.kernel_config = c;
  }
  return r;
}

pagedjit::RaggedAttentionArgs from_c(const pagedjit_ragged_args& a) {
  pagedjit::RaggedAttentionArgs r;
  r.query = to_view(a.query), r.query_start = to_view(a.query_start);
  r.key_cache = to_view(a.key_cache), r.value_cache = to_view(a.value_cache);
  r.context_lens = to_view(a.context_lens), r.block_tables = to_view(a.block_tables);
  r.output = to_view(a.output), r.lse = to_view(a.lse);
  r.k_scale = to_view(a.k_scale), r.v_scale = to_view(a.v_scale);
  r.sinks = to_view(a.sinks), r.seq_count = to_view(a.seq_count);
  r.layout = pagedjit::CacheLayout(a.layout);
  r.max_query_len = a.max_query_len;
  r.workspace = a.workspace, r.workspace_bytes = a.workspace_bytes;
  return r;
}

constexpr const char* kRagged = "pagedjit_validate_ragged";
constexpr const char* kAppend = "pagedjit_validate_append";

// Optional per-head fp32 vectors the kernels read where the pointer is set.
void scales(const char* call, std::vector<Touched>& touched, const pagedjit_tensor& k_scale,
            const pagedjit_tensor& v_scale, std::int32_t kv_dtype, std::int64_t kv_heads) {
  for (const pagedjit_tensor* s : {&k_scale, &v_scale}) {
    if (!s->data) continue;
    const char* name = s == &k_scale ? "k_scale" : "v_scale";
    expect(kv_dtype == PAGEDJIT_E4M3 || kv_dtype == PAGEDJIT_E5M2, call,
           std::string(name) + " is set on a non-fp8 cache");
    expect(s->dtype == PAGEDJIT_F32, call, std::string(name) + " is not fp32");
    touched.push_back(ints(call, name, *s, s->rank == 1 && s->shape[0] > 1 ? kv_heads : 1));
  }
}

void check_ragged_memory(const pagedjit_ragged_args& a, const pagedjit_options& o) {
  const pagedjit_tensor& q = a.query;
  expect(q.rank == 3, kRagged, "query is not [total_tokens, num_heads, head_dim]");
  const std::int64_t total = q.shape[0], heads = q.shape[1], head_dim = q.shape[2];
  const std::int64_t seqs = a.context_lens.shape[0];
  expect(a.context_lens.rank == 1, kRagged, "context_lens is not [num_seqs]");
  if (total == 0 || seqs == 0) return;  // nothing is launched
  ++g_ragged_launch;
  const pagedjit_tensor& k = a.key_cache;
  const Axes ax = axes_of(a.layout);
  const std::int64_t kv_heads = k.rank == 4 ? k.shape[ax.heads] : 0;
  expect(total >= 1 && total <= kI32Max, kRagged, "total_tokens is outside int");
  expect(seqs >= 1 && seqs <= 65535, kRagged, "num_seqs is outside a grid's 65535");
  expect(heads >= 1 && heads <= 65535 && kv_heads >= 1 && heads % kv_heads == 0, kRagged,
         "query heads are not a multiple of the cache's");
  expect(head_dim >= 16 && head_dim <= 512 && head_dim % 16 == 0, kRagged, "head_dim is not a multiple of 16 <= 512");
  expect(q.dtype >= PAGEDJIT_F32 && q.dtype <= PAGEDJIT_BF16, kRagged, "query is not a float dtype");
  expect(k.dtype == q.dtype || ((k.dtype == PAGEDJIT_E4M3 || k.dtype == PAGEDJIT_E5M2) && q.dtype != PAGEDJIT_F32),
         kRagged, "cache dtype does not go with the query's");
  expect_cache(kRagged, a.key_cache, a.value_cache, a.layout, kv_heads, head_dim);
  const pagedjit_tensor& out = a.output;
  expect(out.rank == 3 && out.shape[0] == total && out.shape[1] == heads && out.shape[2] == head_dim, kRagged,
         "output is not the query's shape");
  expect(out.dtype >= PAGEDJIT_F32 && out.dtype <= PAGEDJIT_BF16, kRagged, "output is not a float dtype");
  const pagedjit_tensor& bt = a.block_tables;
  expect(
      bt.rank == 2 && bt.shape[0] == seqs && bt.shape[1] >= 1 && bt.shape[1] <= (1 << 23) && bt.dtype == PAGEDJIT_I32,
      kRagged, "block_tables is not int32 [num_seqs, max_blocks <= 2^23]");
  expect(bt.strides[1] == 1, kRagged, "block_tables has a non-unit entry stride");
  expect(i128(bt.shape[1]) * k.shape[ax.slots] <= kI32Max, kRagged, "table capacity in tokens is past int");

  std::vector<Touched> touched;
  const int o_es = elem_size(out.dtype);
  touched.push_back(measure(kRagged, "query", q, false, 16, true));
  touched.push_back(measure(kRagged, "key_cache", a.key_cache, false, 16, true));
  touched.push_back(measure(kRagged, "value_cache", a.value_cache, false, 16, true));
  // Output: four consecutive elements a thread.
  touched.push_back(measure(kRagged, "output", out, true, 4 * o_es, true));
  expect_disjoint_elements(kRagged, "output", out);
  touched.push_back(ints(kRagged, "query_start", a.query_start, i128(seqs) + 1));
  expect(a.query_start.dtype == PAGEDJIT_I32, kRagged, "query_start is not int32");
  touched.push_back(ints(kRagged, "context_lens", a.context_lens, seqs));
  expect(a.context_lens.dtype == PAGEDJIT_I32, kRagged, "context_lens is not int32");
  touched.push_back(measure(kRagged, "block_tables", bt, false, 4, false));
  if (a.seq_count.data) {
    touched.push_back(ints(kRagged, "seq_count", a.seq_count, 1));
    expect(a.seq_count.dtype == PAGEDJIT_I32, kRagged, "seq_count is not int32");
  }
  if (a.sinks.data) {
    touched.push_back(ints(kRagged, "sinks", a.sinks, heads));
    expect(a.sinks.dtype == PAGEDJIT_F32, kRagged, "sinks is not fp32");
  }
  scales(kRagged, touched, a.k_scale, a.v_scale, k.dtype, kv_heads);
  if (o.return_lse) {
    const pagedjit_tensor& l = a.lse;
    expect(l.rank == 2 && l.shape[0] == total && l.shape[1] == heads && l.dtype == PAGEDJIT_F32, kRagged,
           "lse is not fp32 [total_tokens, num_heads]");
    touched.push_back(measure(kRagged, "lse", l, true, 4, true));
    expect_disjoint_elements(kRagged, "lse", l);
  }
  if (a.workspace && a.workspace_bytes > 0) {
    const i128 w = addr(a.workspace);
    expect(w % 16 == 0, kRagged, "workspace is misaligned");
    touched.push_back({"workspace", nullptr, true, w, w + a.workspace_bytes});
    expect(touched.back().end <= (i128(1) << 64), kRagged, "workspace wraps around the address space");
  }
  expect_apart(kRagged, touched);
}

// The plans an accepted ragged call may launch on an H100.
void check_ragged_plans(const pagedjit_ragged_args& c, const pagedjit_options& co) {
  const pagedjit::RaggedAttentionArgs a = from_c(c);
  const pagedjit::PagedAttentionOptions o = from_c(co);
  pagedjit::ProblemShape s;
  try {
    s = pagedjit::validate_ragged(a, o);
  } catch (const pagedjit::Error& e) {
    throw Violation(std::string("validate_ragged refused what pagedjit_validate_ragged accepted: ") + e.what());
  }
  const bool launched = s.num_seqs > 0 && s.total_tokens > 0;
  const pagedjit::DeviceInfo d = pagedjit::DeviceInfo::h100_sxm();
  const auto plan_check = [&](bool ok, const std::string& what) {
    if (!ok)
      throw Violation("plan of an accepted ragged call: " + what + " (seqs " + std::to_string(s.num_seqs) + " tokens " +
                      std::to_string(s.total_tokens) + " q_len " + std::to_string(s.q_len) + " heads " +
                      std::to_string(s.num_heads) + "/" + std::to_string(s.num_kv_heads) + " head_dim " +
                      std::to_string(s.head_dim) + ")");
  };
  const auto grid_check = [&](const int* g, int threads, int smem) {
    if (!launched) return;
    plan_check(g[0] >= 1 && i128(g[0]) <= kI32Max, "grid x outside [1, 2^31 - 1]");
    plan_check(g[1] >= 1 && g[1] <= 65535 && g[2] >= 1 && g[2] <= 65535, "grid y or z outside [1, 65535]");
    plan_check(threads >= 32 && threads <= 1024 && threads % 32 == 0, "threads outside whole warps up to 1024");
    plan_check(smem >= 0 && smem <= d.max_smem_per_block, "shared memory past the device's");
  };
  plan_check(s.q_len >= 1 && s.q_len <= s.total_tokens + (s.total_tokens == 0), "q_len outside [1, total_tokens]");
  try {
    const pagedjit::LaunchInfo p = pagedjit::plan_problem(s, o, d);
    ++g_planned;
    grid_check(p.grid, p.threads, p.smem_bytes);
    plan_check(p.smem_bytes > 0, "no shared memory");
    plan_check(i128(p.heads_per_cta) * p.head_chunks >= i128(s.group()) * s.q_len, "row chunks miss query rows");
    plan_check(i128(p.v_dims) * p.dv_chunks >= s.head_dim, "v_dims miss head dims");
    plan_check(i128(p.grid[0]) == i128(s.num_kv_heads) * p.head_chunks * p.dv_chunks, "grid x is not the CTA columns");
    // The workspace of a global merge, recomputed in 128 bits.
    plan_check(p.workspace_bytes >= 0, "negative workspace");
    const bool device_schedule = p.work_items > 0;
    if (device_schedule || (p.num_splits > 1 && p.cluster == 1)) {
      const i128 part_rows =
          (device_schedule ? i128(s.num_seqs) + p.work_items : i128(s.num_seqs) * p.num_splits) * s.num_heads * s.q_len;
      const i128 need = part_rows * (s.head_dim + p.dv_chunks) * 4 + i128(s.num_seqs) * p.grid[0] * 4;
      plan_check(need <= kI64Max && p.workspace_bytes >= need, "workspace smaller than its partials (or overflowed)");
    }
    if (pagedjit::attention::long_queries(s)) plan_check(p.num_splits == 1 && !device_schedule, "long queries split");
  } catch (const pagedjit::Error&) {
  }
  if (!pagedjit::attention::long_queries(s)) return;
  try {
    const pagedjit::attention::PrefillPlan p = pagedjit::attention::plan_prefill(s, o, d);
    if (!p.supported) return;
    ++g_prefill;
    grid_check(p.grid, p.threads, p.smem_bytes);
    plan_check(p.grid[0] == s.num_kv_heads && p.grid[2] == 1, "prefill grid x / z");
    plan_check(p.block_rows >= 16 && p.block_rows * 2 == p.threads, "prefill rows per warp");
    const i128 blocks = (i128(s.total_tokens) * s.group() + p.block_rows - 1) / p.block_rows + s.num_seqs;
    plan_check(!launched || blocks <= p.grid[1], "prefill grid y below its query blocks");
    plan_check(i128(s.total_tokens) * s.num_heads <= kI32Max, "prefill rows past 32 bits");
    plan_check(s.dtype != pagedjit::DType::f32, "prefill of fp32 queries");
  } catch (const pagedjit::Error&) {
  }
}

void ragged_one(Bytes& in) {
  ++g_ragged;
  pagedjit_ragged_args a = ragged_args(in);
  pagedjit_options o = options(in);
  const bool defaults = in.one_in(16);
  if (defaults) pagedjit_options_init(&o);
  const pagedjit_status status = pagedjit_validate_ragged(&a, defaults ? nullptr : &o);
  if (status != PAGEDJIT_OK) {
    if (status != PAGEDJIT_ERROR_INVALID_ARGUMENT && status != PAGEDJIT_ERROR_NOT_SUPPORTED)
      throw Violation(std::string(kRagged) + " returned " + pagedjit_status_name(status) + ": " +
                      pagedjit_last_error());
    return;
  }
  ++g_ragged_ok;
  try {
    check_ragged_memory(a, o);
    check_ragged_plans(a, o);
  } catch (const Violation& v) {
    rethrow_described(v,
                      {{"query", &a.query},
                       {"query_start", &a.query_start},
                       {"key_cache", &a.key_cache},
                       {"value_cache", &a.value_cache},
                       {"context_lens", &a.context_lens},
                       {"block_tables", &a.block_tables},
                       {"output", &a.output},
                       {"lse", &a.lse},
                       {"k_scale", &a.k_scale},
                       {"v_scale", &a.v_scale},
                       {"sinks", &a.sinks},
                       {"seq_count", &a.seq_count}},
                      a.layout);
  }
}

// ---- append_kv ----

pagedjit::AppendKvArgs from_c(const pagedjit_append_args& a) {
  pagedjit::AppendKvArgs r;
  r.keys = to_view(a.keys), r.values = to_view(a.values), r.query_start = to_view(a.query_start);
  r.context_lens = to_view(a.context_lens), r.block_tables = to_view(a.block_tables);
  r.key_cache = to_view(a.key_cache), r.value_cache = to_view(a.value_cache);
  r.layout = pagedjit::CacheLayout(a.layout);
  r.k_scale = to_view(a.k_scale), r.v_scale = to_view(a.v_scale), r.seq_count = to_view(a.seq_count);
  return r;
}

void check_append(const pagedjit_append_args& a) {
  const pagedjit_tensor& k = a.keys;
  expect(k.rank == 3 && a.values.rank == 3, kAppend, "keys or values are not [total_tokens, num_kv_heads, head_dim]");
  for (int i = 0; i < 3; ++i) expect(a.values.shape[i] == k.shape[i], kAppend, "values are not the keys' shape");
  const std::int64_t total = k.shape[0], kv_heads = k.shape[1], head_dim = k.shape[2];
  expect(a.query_start.rank == 1 && a.query_start.shape[0] >= 1, kAppend, "query_start is not [num_seqs + 1]");
  const std::int64_t seqs = a.query_start.shape[0] - 1;
  if (total == 0 || seqs == 0) return;  // nothing is launched
  ++g_append_launch;
  expect(total >= 1 && total <= kI32Max, kAppend, "total_tokens is outside int");
  expect(kv_heads >= 1 && kv_heads <= 65535, kAppend, "num_kv_heads is outside a grid's 65535");
  expect(head_dim >= 16 && head_dim <= 512 && head_dim % 16 == 0, kAppend, "head_dim is not a multiple of 16 <= 512");
  expect(k.dtype >= PAGEDJIT_F32 && k.dtype <= PAGEDJIT_BF16 && a.values.dtype == k.dtype, kAppend,
         "keys and values are not one float dtype");
  const pagedjit_tensor& kc = a.key_cache;
  const bool fp8 = kc.dtype == PAGEDJIT_E4M3 || kc.dtype == PAGEDJIT_E5M2;
  expect(fp8 || kc.dtype == k.dtype, kAppend, "cache dtype does not go with the keys'");
  expect_cache(kAppend, a.key_cache, a.value_cache, a.layout, kv_heads, head_dim);
  const Axes ax = axes_of(a.layout);
  const pagedjit_tensor& bt = a.block_tables;
  expect(
      bt.rank == 2 && bt.shape[0] == seqs && bt.shape[1] >= 1 && bt.shape[1] <= (1 << 23) && bt.dtype == PAGEDJIT_I32,
      kAppend, "block_tables is not int32 [num_seqs, max_blocks <= 2^23]");
  expect(bt.strides[1] == 1, kAppend, "block_tables has a non-unit entry stride");
  expect(i128(bt.shape[1]) * kc.shape[ax.slots] <= kI32Max, kAppend, "table capacity in tokens is past int");

  std::vector<Touched> touched;
  touched.push_back(measure(kAppend, "keys", k, false, 16, true));
  touched.push_back(measure(kAppend, "values", a.values, false, 16, true));
  touched.push_back(ints(kAppend, "query_start", a.query_start, seqs + 1));
  touched.push_back(ints(kAppend, "context_lens", a.context_lens, seqs));
  expect(a.query_start.dtype == PAGEDJIT_I32 && a.context_lens.dtype == PAGEDJIT_I32, kAppend,
         "query_start or context_lens is not int32");
  touched.push_back(measure(kAppend, "block_tables", bt, false, 4, false));
  if (a.seq_count.data) {
    touched.push_back(ints(kAppend, "seq_count", a.seq_count, 1));
    expect(a.seq_count.dtype == PAGEDJIT_I32, kAppend, "seq_count is not int32");
  }
  scales(kAppend, touched, a.k_scale, a.v_scale, kc.dtype, kv_heads);
  // The caches are written, 16 bytes a thread: each disjoint from every
  // input, and the two sharing no element (they may interleave).
  for (const pagedjit_tensor* c : {&a.key_cache, &a.value_cache}) {
    std::vector<Touched> with = touched;
    with.push_back(measure(kAppend, c == &kc ? "key_cache" : "value_cache", *c, true, 16, true));
    expect_apart(kAppend, with);
  }
  expect_disjoint_elements(kAppend, "key_cache", kc, &a.value_cache);

  // The launch: one thread per 16 cache bytes of a row, rows of a CTA in y;
  // the kernel's row index (blockIdx.x * blockDim.y + threadIdx.y) is an int.
  pagedjit::attention::AppendShape s;
  try {
    s = pagedjit::attention::validate_append(from_c(a));
  } catch (const pagedjit::Error& e) {
    throw Violation(std::string("validate_append refused what pagedjit_validate_append accepted: ") + e.what());
  }
  const pagedjit::attention::AppendLaunch l = pagedjit::attention::append_launch(from_c(a), s);
  const auto launch_check = [&](bool ok, const std::string& what) {
    if (!ok)
      throw Violation("append launch of an accepted call: " + what + " (tokens " + std::to_string(total) +
                      " kv_heads " + std::to_string(kv_heads) + " head_dim " + std::to_string(head_dim) + ", grid " +
                      std::to_string(l.grid[0]) + " x " + std::to_string(l.grid[1]) + ", block " +
                      std::to_string(l.block[0]) + " x " + std::to_string(l.block[1]) + ")");
  };
  launch_check(l.grid[0] >= 1 && l.grid[0] <= kI32Max && l.grid[1] >= 1 && l.grid[1] <= 65535, "grid past its limits");
  launch_check(l.block[0] >= 1 && l.block[1] >= 1 && l.block[0] * l.block[1] <= 1024, "block past 1024 threads");
  launch_check(i128(l.block[0]) * 16 == i128(head_dim) * elem_size(kc.dtype), "threads do not cover a cache row");
  launch_check(i128(l.grid[0]) * l.block[1] >= total, "rows not covered");
  launch_check(i128(l.grid[0]) * l.block[1] - 1 <= kI32Max, "row index past int");
}

void append_one(Bytes& in) {
  ++g_append;
  const pagedjit_append_args a = append_args(in);
  const pagedjit_status status = pagedjit_validate_append(&a);
  if (status != PAGEDJIT_OK) {
    if (status != PAGEDJIT_ERROR_INVALID_ARGUMENT && status != PAGEDJIT_ERROR_NOT_SUPPORTED)
      throw Violation(std::string(kAppend) + " returned " + pagedjit_status_name(status) + ": " +
                      pagedjit_last_error());
    return;
  }
  ++g_append_ok;
  try {
    check_append(a);
  } catch (const Violation& v) {
    rethrow_described(v,
                      {{"keys", &a.keys},
                       {"values", &a.values},
                       {"query_start", &a.query_start},
                       {"context_lens", &a.context_lens},
                       {"block_tables", &a.block_tables},
                       {"key_cache", &a.key_cache},
                       {"value_cache", &a.value_cache},
                       {"k_scale", &a.k_scale},
                       {"v_scale", &a.v_scale},
                       {"seq_count", &a.seq_count}},
                      a.layout);
  }
}

}  // namespace

std::string ragged_stats() {
  return std::to_string(g_ragged_ok) + "/" + std::to_string(g_ragged) + " ragged calls accepted (" +
         std::to_string(g_ragged_launch) + " launching, " + std::to_string(g_planned) + " planned, " +
         std::to_string(g_prefill) + " prefill plans), " + std::to_string(g_append_ok) + "/" +
         std::to_string(g_append) + " appends accepted (" + std::to_string(g_append_launch) + " launching, " +
         std::to_string(g_interleaved) + " cache pairs enumerated), all checked";
}

void ragged_one(const std::uint8_t* data, std::size_t size) {
  Bytes in(data, size);
  if (in.flag())
    append_one(in);
  else
    ragged_one(in);
}

}  // namespace pjfuzz

PJFUZZ_ENTRY(pjfuzz::ragged_one)
PJFUZZ_STATS(fuzz_ragged, pjfuzz::ragged_stats)
