// The generator of whole calls both validation fuzz targets share.
#include "call_generator.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

namespace pjfuzz {

using pagedjit::CacheLayout;
using pagedjit::DType;
using pagedjit::TensorView;

namespace {

constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kI32Max = std::numeric_limits<std::int32_t>::max();

}  // namespace

// A size or stride: small, a power of two, a boundary of some check, or anything.
std::int64_t any_i64(Bytes& in) {
  static constexpr std::int64_t kEdges[] = {-1,
                                            0,
                                            1,
                                            15,
                                            16,
                                            17,
                                            255,
                                            256,
                                            257,
                                            512,
                                            528,
                                            4096,
                                            65535,
                                            65536,
                                            1 << 23,
                                            (1 << 23) + 1,
                                            kI32Max / 256,
                                            kI32Max / 256 + 1,
                                            kI32Max,
                                            kI32Max + 1ll,
                                            0xffffffffll,
                                            1ll << 32,
                                            1ll << 62,
                                            kI64Max,
                                            kI64Min,
                                            -kI32Max - 1ll};
  switch (in.u8() % 8) {
    case 0:
    case 1:
    case 2:
      return in.u8() % 300;
    case 3:
      return std::int64_t(1) << (in.u8() % 63);
    case 4:
      return kEdges[in.u8() % (sizeof kEdges / sizeof kEdges[0])];
    case 5:
      return std::int64_t(in.u16());
    case 6:
      return std::int64_t(std::int32_t(in.u32()));
    default:
      return std::int64_t(in.u64());
  }
}

namespace {

int any_int(Bytes& in) {
  const std::int64_t v = any_i64(in);
  return v > kI32Max || v < -kI32Max - 1 ? int(std::int32_t(std::uint32_t(std::uint64_t(v)))) : int(v);
}

// Mostly `usual`, sometimes anything.
std::int64_t mostly(Bytes& in, std::int64_t usual) {
  return in.one_in(8) ? any_i64(in) : usual;
}

std::int64_t wrap_mul(std::int64_t a, std::int64_t b) {
  return std::int64_t(std::uint64_t(a) * std::uint64_t(b));
}

DType any_dtype(Bytes& in) {
  const std::uint8_t b = in.u8();
  return b < 250 ? DType(b % 4) : DType(b);  // now and then a value no enumerator has
}

DType float_dtype(Bytes& in) {
  return in.one_in(16) ? any_dtype(in) : DType(in.u8() % 3);  // f32, f16, bf16
}

// A placeholder address (validation never dereferences one): each tensor's
// own region 2^41 bytes apart, so that views do not overlap unless a
// mutation points one at another's region; now and then null or misaligned.
void* any_pointer(Bytes& in, unsigned slot) {
  const std::uintptr_t region = std::uintptr_t(slot + 1) << 41;
  switch (in.u8() % 32) {
    case 0:
      return nullptr;
    case 1:
      return reinterpret_cast<void*>(region + in.u8() % 64);  // maybe misaligned
    default:
      return reinterpret_cast<void*>(region);
  }
}

// A row-major view with wrapping stride arithmetic (the sizes may be absurd),
// each outer stride padded by `pad` elements; or made by TensorView's own
// constructor when `pad` is -1.
TensorView view(void* p, DType dt, int rank, const std::int64_t* dims, std::int64_t pad) {
  if (pad == -1) {
    switch (rank) {
      case 1:
        return TensorView(p, dt, {dims[0]});
      case 2:
        return TensorView(p, dt, {dims[0], dims[1]});
      case 3:
        return TensorView(p, dt, {dims[0], dims[1], dims[2]});
      default:
        return TensorView(p, dt, {dims[0], dims[1], dims[2], dims[3]});
    }
  }
  TensorView t;
  t.data = p;
  t.dtype = dt;
  t.rank = rank;
  std::int64_t s = 1;
  for (int k = rank - 1; k >= 0; --k) {
    t.shape[std::size_t(k)] = dims[k];
    t.strides[std::size_t(k)] = s;
    s = wrap_mul(s, dims[k]);
    if (k == rank - 1) s = std::int64_t(std::uint64_t(s) + std::uint64_t(pad));
  }
  return t;
}

void mutate(Bytes& in, TensorView& t) {
  const std::size_t i = in.u8() % 4;
  switch (in.u8() % 6) {
    case 0:
      t.rank = in.one_in(4) ? any_int(in) : int(in.u8() % 11) - 3;
      break;
    case 1:
      t.shape[i] = any_i64(in);
      break;
    case 2:
      t.strides[i] = any_i64(in);
      break;
    case 3:
      t.dtype = any_dtype(in);
      break;
    case 4:
      t.data = any_pointer(in, in.u8() % 8);
      break;
    default:
      t.shape[i] = std::int64_t(std::uint64_t(t.shape[i]) + (in.one_in(2) ? 1u : ~std::uint64_t(0)));  // +-1
      break;
  }
}

float any_float(Bytes& in, float usual) {
  switch (in.u8() % 4) {
    case 0:
      return in.f32_bits();  // NaN, infinities, denormals, ...
    case 1:
      return float(std::int8_t(in.u8())) / 4.0f;
    default:
      return usual;
  }
}

}  // namespace

Call random_call(Bytes& in) {
  // The problem.
  const std::int64_t num_seqs = in.one_in(4) ? any_i64(in) : in.u8() % 9;
  const std::int64_t num_kv_heads = in.one_in(8) ? any_i64(in) : 1 + in.u8() % 8;
  const std::int64_t group = in.one_in(8) ? any_i64(in) : 1 + in.u8() % 40;
  const std::int64_t num_heads = wrap_mul(num_kv_heads, group);
  const std::int64_t head_dim = in.one_in(8) ? any_i64(in) : 16 * (1 + in.u8() % 33);
  const std::int64_t page_size = in.one_in(8) ? any_i64(in) : std::int64_t(1) << (in.u8() % 10);
  const std::int64_t num_blocks = in.one_in(8) ? any_i64(in) : 1 + in.u16() % 4096;
  const std::int64_t max_blocks = in.one_in(8) ? any_i64(in) : 1 + in.u8() % 64;
  const std::uint8_t layout_byte = in.u8();
  const CacheLayout layout = layout_byte < 252 ? CacheLayout(layout_byte % 3) : CacheLayout(layout_byte);
  const DType dtype = float_dtype(in), out_dtype = float_dtype(in);
  const std::int64_t pad0 = in.one_in(4) ? -1 : 0;  // -1: TensorView's constructor
  const std::int64_t q_pad = in.one_in(4) ? mostly(in, 8 * (in.u8() % 4)) : pad0;
  const std::int64_t kv_pad = in.one_in(4) ? mostly(in, 8 * (in.u8() % 4)) : pad0;

  Call call;
  pagedjit::PagedAttentionArgs& a = call.args;
  const std::int64_t qd[3] = {num_seqs, num_heads, head_dim};
  a.query = view(any_pointer(in, 0), dtype, 3, qd, q_pad);
  std::int64_t kd[4] = {num_blocks, num_kv_heads, page_size, head_dim};
  if (layout == CacheLayout::heads_blocks) std::swap(kd[0], kd[1]);
  if (layout == CacheLayout::blocks_tokens) std::swap(kd[1], kd[2]);
  a.key_cache = view(any_pointer(in, 1), dtype, 4, kd, kv_pad);
  a.value_cache = view(any_pointer(in, 2), dtype, 4, kd, kv_pad);
  const std::int64_t cd[1] = {num_seqs};
  a.context_lens = view(any_pointer(in, 3), DType::i32, 1, cd, pad0);
  const std::int64_t bd[2] = {num_seqs, max_blocks};
  a.block_tables = view(any_pointer(in, 4), DType::i32, 2, bd, pad0);
  a.output = view(any_pointer(in, 5), out_dtype, 3, qd, pad0);
  a.layout = layout;
  const std::int64_t ld[2] = {num_seqs, num_heads};
  a.lse = view(any_pointer(in, 6), DType::f32, 2, ld, pad0);
  if (in.one_in(4)) {
    a.workspace = any_pointer(in, 7);
    a.workspace_bytes = any_i64(in);
  }

  // The options.
  pagedjit::PagedAttentionOptions& o = call.options;
  if (in.one_in(4)) o.attn_scale = any_float(in, 0.125f);
  if (in.one_in(4)) o.max_context_len = mostly(in, in.u16());
  if (in.one_in(2)) o.num_splits = in.one_in(4) ? any_int(in) : in.u8() % 40;
  if (in.one_in(8)) o.mask_value = any_float(in, -1e30f);
  if (in.one_in(4)) o.attn_logits_soft_cap = any_float(in, 30.0f);
  if (in.one_in(4)) o.sliding_window = mostly(in, 1 + in.u16());
  if (in.one_in(4)) o.pages_per_compute_block = in.one_in(4) ? any_int(in) : in.u8() % 20;
  if (in.one_in(32)) o.megacore_mode = std::string("parallel");
  if (in.one_in(32)) o.inline_seq_dim = false;
  o.return_lse = in.flag();
  o.batch_invariant = in.one_in(4);
  if (in.one_in(3)) {
    pagedjit::KernelConfig c;
    if (in.flag()) {
      c.tile_tokens = in.one_in(8) ? any_int(in) : 16 * (in.u8() % 18);
      c.warps = in.one_in(8) ? any_int(in) : in.u8() % 10;
      c.stages = in.one_in(8) ? any_int(in) : in.u8() % 10;
    }
    if (in.flag()) c.chunk_tokens = in.one_in(4) ? any_int(in) : 16 * in.u8();
    if (in.flag()) c.v_dims = in.one_in(8) ? any_int(in) : 16 * (in.u8() % 18);
    o.kernel_config = c;
  }

  // Raw damage to the tensors.
  TensorView* tensors[] = {&a.query, &a.key_cache, &a.value_cache, &a.context_lens, &a.block_tables, &a.output, &a.lse};
  const std::uint8_t damage = in.u8();
  for (int n = damage % 8 < 5 ? 0 : 1 + damage % 3; n > 0; --n) mutate(in, *tensors[in.u8() % 7]);
  return call;
}

}  // namespace pjfuzz
