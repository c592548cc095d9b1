// Fuzz target (a'): whole argument sets through the C API's pagedjit_validate:
// the calls random_call makes, damaged further in the C structs' own fields
// (reserved fields, raw enums and ranks, option flags, fp8 caches and their
// scales, the workspace). Every set it accepts goes to an oracle that works
// out, by exact 128-bit arithmetic of its own, the memory the kernel will
// touch: it must not wrap, every access must be aligned for its width, and
// what the kernel writes must overlap neither itself nor anything else.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "call_generator.hpp"
#include "harness.hpp"
#include "pagedjit/pagedjit.h"

namespace pjfuzz {
namespace {

using i128 = __int128;

std::uint64_t g_accepted = 0, g_touching = 0;

pagedjit_tensor to_c(const pagedjit::TensorView& t) {
  pagedjit_tensor c{};
  c.data = t.data;
  c.dtype = std::int32_t(t.dtype);
  c.rank = t.rank;
  for (int i = 0; i < t.rank && i < PAGEDJIT_MAX_RANK; ++i) c.shape[i] = t.shape[i], c.strides[i] = t.strides[i];
  return c;
}

pagedjit_options to_c(const pagedjit::PagedAttentionOptions& o) {
  pagedjit_options c;
  pagedjit_options_init(&c);
  c.has_attn_scale = o.attn_scale.has_value();
  c.attn_scale = o.attn_scale.value_or(0.f);
  c.has_max_context_len = o.max_context_len.has_value();
  c.max_context_len = o.max_context_len.value_or(0);
  c.num_splits = o.num_splits;
  c.mask_value = o.mask_value;
  c.has_attn_logits_soft_cap = o.attn_logits_soft_cap.has_value();
  c.attn_logits_soft_cap = o.attn_logits_soft_cap.value_or(0.f);
  c.has_sliding_window = o.sliding_window.has_value();
  c.sliding_window = o.sliding_window.value_or(0);
  c.has_pages_per_compute_block = o.pages_per_compute_block.has_value();
  c.pages_per_compute_block = o.pages_per_compute_block.value_or(0);
  c.megacore_mode = o.megacore_mode ? "parallel" : nullptr;
  c.inline_seq_dim = o.inline_seq_dim;
  c.return_lse = o.return_lse;
  c.batch_invariant = o.batch_invariant;
  if (o.kernel_config) {
    c.has_kernel_config = 1;
    c.tile_tokens = o.kernel_config->tile_tokens, c.warps = o.kernel_config->warps;
    c.stages = o.kernel_config->stages, c.chunk_tokens = o.kernel_config->chunk_tokens;
    c.v_dims = o.kernel_config->v_dims;
  }
  return c;
}

// Damage only a C caller can do, now and then.
void damage_c(Bytes& in, pagedjit_args& a, pagedjit_options& o) {
  pagedjit_tensor* tensors[] = {&a.query,  &a.key_cache, &a.value_cache, &a.context_lens, &a.block_tables,
                                &a.output, &a.lse,       &a.k_scale,     &a.v_scale};
  if (in.one_in(8)) {  // an fp8 cache, with scales per tensor or per KV head
    a.key_cache.dtype = a.value_cache.dtype = in.flag() ? PAGEDJIT_E4M3 : PAGEDJIT_E5M2;
    for (pagedjit_tensor* s : {&a.k_scale, &a.v_scale}) {
      if (in.one_in(3)) continue;
      const std::int64_t n =
          in.flag()
              ? 1
              : a.key_cache.shape[a.layout == PAGEDJIT_BLOCKS_TOKENS ? 2 : 1 - (a.layout == PAGEDJIT_HEADS_BLOCKS)];
      pagedjit_tensor_init(s, reinterpret_cast<void*>((std::uintptr_t(s == &a.k_scale ? 9 : 10) << 41) + in.u8() % 8),
                           PAGEDJIT_F32, 1, &n);
      if (in.one_in(4)) s->strides[0] = any_i64(in);
    }
  }
  if (in.one_in(64)) a.reserved0 = std::int32_t(in.u32());
  if (in.one_in(64)) o.reserved0 = std::int32_t(in.u32());
  if (in.one_in(32)) a.layout = std::int32_t(in.u32());
  for (int n = in.one_in(4) ? 1 + in.u8() % 3 : 0; n > 0; --n) {
    pagedjit_tensor& t = *tensors[in.u8() % 9];
    switch (in.u8() % 4) {
      case 0:
        t.dtype = std::int32_t(in.u32() % 8);
        break;
      case 1:
        t.rank = int(in.u8() % 7) - 1;
        break;
      case 2:
        t.strides[in.u8() % 4] = any_i64(in);
        break;
      default:
        t.data = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(t.data) + in.u8() % 32);
        break;
    }
  }
  if (in.one_in(16)) {
    a.workspace = reinterpret_cast<void*>((std::uintptr_t(in.u8() % 12) << 41) + (in.flag() ? 0 : in.u8()));
    a.workspace_bytes = any_i64(in);
  }
  if (in.one_in(16)) o.has_sliding_window = std::int32_t(in.u32()), o.sliding_window = any_i64(in);
  if (in.one_in(16)) o.has_max_context_len = std::int32_t(in.u32()), o.max_context_len = any_i64(in);
  if (in.one_in(32)) o.inline_seq_dim = std::int32_t(in.u32());
  if (in.one_in(32)) o.return_lse = std::int32_t(in.u32());
}

int elem_size(std::int32_t dtype) {
  return dtype == PAGEDJIT_F32 || dtype == PAGEDJIT_I32 ? 4 : dtype == PAGEDJIT_F16 || dtype == PAGEDJIT_BF16 ? 2 : 1;
}

void expect(bool ok, const std::string& what) {
  if (!ok) throw Violation("pagedjit_validate accepted a call whose " + what);
}

// One tensor the kernel touches: every element of its shape, at
// data + sum(index * stride) elements.
struct Touched {
  const char* name;
  const pagedjit_tensor* t;
  bool written;
  std::int64_t align;  // bytes every accessed element's address must be a multiple of
  i128 begin = 0, end = 0;
};

// The byte range of a tensor, checked not to wrap and to keep every offset
// within what 64-bit pointer arithmetic represents.
void measure(Touched& x) {
  const pagedjit_tensor& t = *x.t;
  const int es = elem_size(t.dtype);
  i128 lo = 0, hi = 0;
  for (int i = 0; i < t.rank; ++i) {
    const i128 step = i128(t.strides[i]) * (t.shape[i] - 1);
    (step < 0 ? lo : hi) += step;
  }
  const auto base = i128(reinterpret_cast<std::uintptr_t>(t.data));
  x.begin = base + lo * es;
  x.end = base + (hi + 1) * es;
  const i128 i64_max = INT64_MAX;
  expect(-lo * es <= i64_max && hi * es <= i64_max, std::string(x.name) + " has offsets past 64 bits");
  expect(x.begin >= 0 && x.end <= (i128(1) << 64), std::string(x.name) + " wraps around the address space");
  expect(base % x.align == 0, std::string(x.name) + " is misaligned");
  for (int i = 0; i + 1 < t.rank; ++i)
    expect(t.shape[i] == 1 || (i128(t.strides[i]) * es) % x.align == 0,
           std::string(x.name) + " has a stride that misaligns rows");
  expect(t.rank == 0 || t.strides[t.rank - 1] == 1 || t.shape[t.rank - 1] == 1,
         std::string(x.name) + " has a non-unit innermost stride");
}

// No two elements of a written tensor at the same address: enumerated when
// small, else the axes, sorted by stride, must each step past all smaller ones.
void expect_injective(const Touched& x) {
  const pagedjit_tensor& t = *x.t;
  i128 numel = 1;
  for (int i = 0; i < t.rank; ++i) numel *= t.shape[i];
  if (numel <= (1 << 10)) {
    std::vector<i128> offsets(1, 0);
    for (int i = 0; i < t.rank; ++i) {
      std::vector<i128> next;
      for (i128 o : offsets)
        for (std::int64_t j = 0; j < t.shape[i]; ++j) next.push_back(o + i128(j) * t.strides[i]);
      offsets.swap(next);
    }
    std::sort(offsets.begin(), offsets.end());
    expect(std::adjacent_find(offsets.begin(), offsets.end()) == offsets.end(),
           std::string(x.name) + " has elements sharing memory");
    return;
  }
  std::vector<int> axes;
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] > 1) axes.push_back(i);
  std::sort(axes.begin(), axes.end(), [&](int p, int q) { return t.strides[p] < t.strides[q]; });
  i128 covered = 1;
  for (int i : axes) {
    expect(t.strides[i] >= covered, std::string(x.name) + " has elements sharing memory");
    covered += i128(t.strides[i]) * (t.shape[i] - 1);
  }
}

void check_accepted(const pagedjit_args& a, const pagedjit_options& o) {
  const pagedjit_tensor& q = a.query;
  if (q.shape[0] == 0) return;  // nothing is launched
  ++g_touching;
  const int qh = q.rank - 2;
  const pagedjit_tensor& k = a.key_cache;
  int ax_blocks = 0, ax_heads = 1, ax_slots = 2;
  if (a.layout == PAGEDJIT_HEADS_BLOCKS) ax_blocks = 1, ax_heads = 0;
  if (a.layout == PAGEDJIT_BLOCKS_TOKENS) ax_slots = 1, ax_heads = 2;
  // What the kernel's int and 32-bit arithmetic assumes.
  for (int i = 0; i < 4; ++i) expect(k.shape[i] >= 1 && k.shape[i] <= INT32_MAX, "cache has a size outside int");
  expect(q.shape[qh] % k.shape[ax_heads] == 0, "query heads are not a multiple of the cache's");
  expect(k.shape[3] == q.shape[qh + 1] && a.value_cache.shape[3] == k.shape[3], "head_dims differ");
  for (const pagedjit_tensor* c : {&a.key_cache, &a.value_cache})
    expect(c->strides[ax_blocks] < (std::int64_t(1) << 31) && c->strides[ax_slots] < (std::int64_t(1) << 31),
           "cache has a page or slot stride past 32 bits");
  expect(i128(a.block_tables.shape[1]) * k.shape[ax_slots] <= INT32_MAX, "table capacity in tokens is past int");
  expect(a.context_lens.shape[0] == q.shape[0] && a.block_tables.shape[0] == q.shape[0], "index tensors' sizes");
  expect(a.context_lens.shape[0] <= 1 || a.context_lens.strides[0] == 1,
         "context_lens has a stride the kernel ignores");

  std::vector<Touched> touched = {{"query", &q, false, 16},
                                  {"key_cache", &a.key_cache, false, 16},
                                  {"value_cache", &a.value_cache, false, 16},
                                  {"context_lens", &a.context_lens, false, 4},
                                  {"block_tables", &a.block_tables, false, 4},
                                  {"output", &a.output, true, elem_size(a.output.dtype)}};
  if (o.return_lse) touched.push_back({"lse", &a.lse, true, 4});
  for (const pagedjit_tensor* s : {&a.k_scale, &a.v_scale})
    if (s->rank == 1) touched.push_back({s == &a.k_scale ? "k_scale" : "v_scale", s, false, 4});
  for (Touched& x : touched) {
    expect(x.t->data != nullptr, std::string(x.name) + " is null");
    measure(x);
    if (x.written) expect_injective(x);
  }
  if (a.workspace && a.workspace_bytes > 0) {
    const auto w = i128(reinterpret_cast<std::uintptr_t>(a.workspace));
    expect(w % 16 == 0, "workspace is misaligned");
    touched.push_back({"workspace", nullptr, true, 16, w, w + a.workspace_bytes});
    expect(touched.back().end <= (i128(1) << 64), "workspace wraps around the address space");
  }
  for (const Touched& w : touched)
    for (const Touched& r : touched)
      if (w.written && &w != &r)
        expect(w.end <= r.begin || r.end <= w.begin, std::string(w.name) + " overlaps " + r.name);
}

}  // namespace

std::string views_stats() {
  return std::to_string(g_accepted) + " accepted, " + std::to_string(g_touching) + " touching memory, all checked";
}

void views_one(const std::uint8_t* data, std::size_t size) {
  Bytes in(data, size);
  const Call call = random_call(in);
  pagedjit_args a{};
  const pagedjit::PagedAttentionArgs& c = call.args;
  a.query = to_c(c.query), a.key_cache = to_c(c.key_cache), a.value_cache = to_c(c.value_cache);
  a.context_lens = to_c(c.context_lens), a.block_tables = to_c(c.block_tables), a.output = to_c(c.output);
  a.lse = to_c(c.lse), a.k_scale = to_c(c.k_scale), a.v_scale = to_c(c.v_scale);
  a.layout = std::int32_t(c.layout);
  a.workspace = c.workspace, a.workspace_bytes = c.workspace_bytes;
  pagedjit_options o = to_c(call.options);
  damage_c(in, a, o);
  const bool defaults = in.one_in(64);
  if (defaults) pagedjit_options_init(&o);
  const pagedjit_status status = pagedjit_validate(&a, defaults ? nullptr : &o);
  if (status != PAGEDJIT_OK) {
    if (status != PAGEDJIT_ERROR_INVALID_ARGUMENT && status != PAGEDJIT_ERROR_NOT_SUPPORTED)
      throw Violation("pagedjit_validate returned " + std::string(pagedjit_status_name(status)) + ": " +
                      pagedjit_last_error());
    return;
  }
  ++g_accepted;
  check_accepted(a, o);
}

}  // namespace pjfuzz

PJFUZZ_ENTRY(pjfuzz::views_one)
PJFUZZ_STATS(fuzz_views, pjfuzz::views_stats)
