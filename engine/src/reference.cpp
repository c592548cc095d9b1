// The semantics of docs/contract.md, spelled out in float64 on the CPU.
#include "pagedjit/reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "attention/validate.hpp"
#include "pagedjit/errors.hpp"

namespace pagedjit {
namespace {

std::uint16_t f32_to_f16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t mant = x & 0x7fffffu;
  const int exp = int((x >> 23) & 0xffu);
  if (exp == 0xff) return std::uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0u));
  const int e = exp - 127 + 15;
  if (e >= 31) return std::uint16_t(sign | 0x7c00u);
  if (e <= 0) {  // half subnormal (or zero)
    if (e < -10) return std::uint16_t(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    std::uint32_t h = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (h & 1u))) ++h;
    return std::uint16_t(sign | h);
  }
  std::uint32_t h = (std::uint32_t(e) << 10) | (mant >> 13);
  const std::uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is correct rounding
  return std::uint16_t(sign | h);
}

float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const int exp = (h >> 10) & 0x1f;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t x;
  if (exp == 0x1f) {
    x = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while ((mant & 0x400u) == 0);
      x = sign | (std::uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else {
    x = sign | (std::uint32_t(exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

std::uint16_t f32_to_bf16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return std::uint16_t(x >> 16);
}

float bf16_to_f32(std::uint16_t b) {
  const std::uint32_t x = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// OCP 8-bit floats. e4m3 ("fn"): bias 7, no infinities, 0x7f/0xff are NaN,
// largest 448. e5m2: bias 15, IEEE-like infinities and NaNs, largest 57344.
struct Fp8Format {
  int mant_bits, bias;
  bool has_inf;
  float max_finite;
};
constexpr Fp8Format kE4m3{3, 7, false, 448.f};
constexpr Fp8Format kE5m2{2, 15, true, 57344.f};

float fp8_to_f32(std::uint8_t b, const Fp8Format& f) {
  const int exp_bits = 7 - f.mant_bits;
  const int e = (b >> f.mant_bits) & ((1 << exp_bits) - 1);
  const int m = b & ((1 << f.mant_bits) - 1);
  const float sign = (b & 0x80u) ? -1.f : 1.f;
  const int e_max = (1 << exp_bits) - 1;
  if (f.has_inf && e == e_max) return m ? std::numeric_limits<float>::quiet_NaN() : sign * INFINITY;
  if (!f.has_inf && e == e_max && m == (1 << f.mant_bits) - 1) return std::numeric_limits<float>::quiet_NaN();
  if (e == 0) return sign * std::ldexp(float(m), 1 - f.bias - f.mant_bits);
  return sign * std::ldexp(float(m + (1 << f.mant_bits)), e - f.bias - f.mant_bits);
}

// Round to nearest even; saturates to the largest finite value (the
// "satfinite" conversion quantizers use).
std::uint8_t f32_to_fp8(float x, const Fp8Format& f) {
  if (std::isnan(x)) return 0x7f;
  const std::uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isinf(x) && f.has_inf) return std::uint8_t(sign | 0x7c);  // e5m2 keeps infinities
  const double a = std::min(std::fabs(double(x)), double(f.max_finite));
  const int emin = 1 - f.bias;  // exponent of the smallest normal
  int e = std::max(emin, std::ilogb(a == 0 ? std::ldexp(1.0, emin) : a));
  // a = q * 2^(e - mant_bits) with q in [2^mant_bits, 2^(mant_bits+1)) (or below for subnormals)
  const double q = std::nearbyint(std::ldexp(a, f.mant_bits - e));  // ties to even in the default mode
  long code = long(q);
  if (e == emin && code < (1L << f.mant_bits)) return std::uint8_t(sign | code);  // subnormal or zero
  if (code == (2L << f.mant_bits)) ++e, code >>= 1;                               // rounded up a binade
  return std::uint8_t(sign | ((e + f.bias) << f.mant_bits) | (code - (1L << f.mant_bits)));
}

}  // namespace

float round_to_dtype(float x, DType dtype) {
  switch (dtype) {
    case DType::f16:
      return f16_to_f32(f32_to_f16(x));
    case DType::bf16:
      return bf16_to_f32(f32_to_bf16(x));
    case DType::e4m3:
      return fp8_to_f32(f32_to_fp8(x, kE4m3), kE4m3);
    case DType::e5m2:
      return fp8_to_f32(f32_to_fp8(x, kE5m2), kE5m2);
    default:
      return x;
  }
}

void store_element(void* base, std::int64_t i, float x, DType dtype) {
  switch (dtype) {
    case DType::f32:
      static_cast<float*>(base)[i] = x;
      return;
    case DType::f16:
      static_cast<std::uint16_t*>(base)[i] = f32_to_f16(x);
      return;
    case DType::bf16:
      static_cast<std::uint16_t*>(base)[i] = f32_to_bf16(x);
      return;
    case DType::i32:
      static_cast<std::int32_t*>(base)[i] = std::int32_t(x);
      return;
    case DType::e4m3:
      static_cast<std::uint8_t*>(base)[i] = f32_to_fp8(x, kE4m3);
      return;
    case DType::e5m2:
      static_cast<std::uint8_t*>(base)[i] = f32_to_fp8(x, kE5m2);
      return;
  }
}

float load_element(const void* base, std::int64_t i, DType dtype) {
  switch (dtype) {
    case DType::f32:
      return static_cast<const float*>(base)[i];
    case DType::f16:
      return f16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    case DType::bf16:
      return bf16_to_f32(static_cast<const std::uint16_t*>(base)[i]);
    case DType::i32:
      return float(static_cast<const std::int32_t*>(base)[i]);
    case DType::e4m3:
      return fp8_to_f32(static_cast<const std::uint8_t*>(base)[i], kE4m3);
    case DType::e5m2:
      return fp8_to_f32(static_cast<const std::uint8_t*>(base)[i], kE5m2);
  }
  return 0.f;
}

namespace {

// What one row's attention reads: the caches through the block table, the
// scales and the options. Rows differ only in their query, sequence, head
// and visible positions.
struct CacheReader {
  const TensorView *kc, *vc;
  CacheAxes axes;
  const std::int32_t* table;
  std::int64_t table_stride;
  int page_size, num_blocks, group;
  double scale;
  std::optional<double> soft_cap;
  const TensorView *k_scale, *v_scale;

  // fp8 caches hold value / scale: dequantize with the (host) scales.
  static double scale_of(const TensorView& t, int kvh) {
    if (!t.data) return 1.0;
    return double(static_cast<const float*>(t.data)[t.shape[0] > 1 ? kvh : 0]);
  }

  // Attends query row `q` of head `h` of sequence `seq` to positions
  // [start, last] (masked pages skipped); adds the result into `out`
  // (head_dim values, zero on entry) and returns the natural-log sum-exp.
  // A sink (a logit) joins the denominator only. No key and no sink: zeros
  // and -inf.
  double attend(const std::vector<double>& q, int seq, int h, std::int64_t start, std::int64_t last,
                std::optional<double> sink, double* out, std::vector<double>& logits,
                std::vector<std::int64_t>& vrow) const {
    const int kvh = h / group;
    const int D = int(q.size());
    const double ks = scale_of(*k_scale, kvh), vs = scale_of(*v_scale, kvh);
    logits.clear();
    vrow.clear();
    for (std::int64_t t = start; t <= last; ++t) {
      const int page = table[seq * table_stride + t / page_size];
      if (page < 0 || page >= num_blocks) continue;  // masked, never dereferenced
      const std::int64_t slot = t % page_size;
      const std::int64_t kb =
          page * kc->strides[axes.block_axis] + kvh * kc->strides[axes.head_axis] + slot * kc->strides[axes.slot_axis];
      double dot = 0;
      for (int d = 0; d < D; ++d) dot += q[std::size_t(d)] * double(load_element(kc->data, kb + d, kc->dtype));
      double x = scale * ks * dot;
      if (soft_cap) x = *soft_cap * std::tanh(x / *soft_cap);
      logits.push_back(x);
      vrow.push_back(page * vc->strides[axes.block_axis] + kvh * vc->strides[axes.head_axis] +
                     slot * vc->strides[axes.slot_axis]);
    }
    if (logits.empty() && !sink) return -std::numeric_limits<double>::infinity();
    double mx = sink ? *sink : -std::numeric_limits<double>::infinity();
    for (double x : logits) mx = std::max(mx, x);
    double sum = sink ? std::exp(*sink - mx) : 0.0;
    for (double& x : logits) sum += (x = std::exp(x - mx));
    for (std::size_t j = 0; j < logits.size(); ++j) {
      const double p = logits[j] / sum * vs;
      for (int d = 0; d < D; ++d) out[d] += p * double(load_element(vc->data, vrow[j] + d, vc->dtype));
    }
    return mx + std::log(sum);
  }
};

CacheReader cache_reader(const TensorView& kc, const TensorView& vc, CacheLayout layout, const TensorView& table,
                         int num_heads, const TensorView& k_scale, const TensorView& v_scale,
                         const PagedAttentionOptions& o) {
  const CacheAxes axes = cache_axes(layout);
  CacheReader r{
      &kc,          &vc,      axes,    static_cast<const std::int32_t*>(table.data), table.strides[0], 0, 0, 0, 0.0,
      std::nullopt, &k_scale, &v_scale};
  r.page_size = int(kc.shape[axes.slot_axis]);
  r.num_blocks = int(kc.shape[axes.block_axis]);
  r.group = num_heads / int(kc.shape[axes.head_axis]);
  const int D = int(kc.shape[3]);
  r.scale = o.attn_scale ? double(*o.attn_scale) : 1.0 / std::sqrt(double(D));
  if (o.attn_logits_soft_cap) r.soft_cap = double(*o.attn_logits_soft_cap);
  return r;
}

std::optional<double> sink_of(const TensorView& sinks, int h) {
  if (!sinks.data) return std::nullopt;
  return double(static_cast<const float*>(sinks.data)[h * sinks.strides[0]]);
}

// Positions query token i of q_len sees in a context of len tokens: [start, last].
std::pair<std::int64_t, std::int64_t> visible(std::int64_t len, std::int64_t q_len, std::int64_t i,
                                              const PagedAttentionOptions& o) {
  const std::int64_t last = len - q_len + i;
  const std::int64_t start = o.sliding_window ? std::max<std::int64_t>(0, last + 1 - *o.sliding_window) : 0;
  return {start, last};
}

}  // namespace

ReferenceOutputs reference_paged_attention(const PagedAttentionArgs& a, const PagedAttentionOptions& o,
                                           std::vector<int> seqs) {
  const ProblemShape s = validate_call(a, o);
  const int D = s.head_dim;
  const TensorView& q = a.query;
  const CacheReader reader =
      cache_reader(a.key_cache, a.value_cache, s.layout, a.block_tables, s.num_heads, a.k_scale, a.v_scale, o);
  const auto* lens = static_cast<const std::int32_t*>(a.context_lens.data);
  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  const int L = s.q_len;
  const int qt = q.rank == 4 ? 1 : -1, qh = q.rank - 2;  // axes of query tokens and heads
  if (seqs.empty())
    for (int i = 0; i < s.num_seqs; ++i) seqs.push_back(i);

  ReferenceOutputs out;
  out.seqs = seqs;
  out.output.assign(seqs.size() * std::size_t(L) * std::size_t(s.num_heads) * D, 0.0);
  out.lse.assign(seqs.size() * std::size_t(L) * std::size_t(s.num_heads), -std::numeric_limits<double>::infinity());
  std::vector<double> logits, qrow(std::size_t(D), 0.0);
  std::vector<std::int64_t> vrow;
  for (std::size_t si = 0; si < seqs.size(); ++si) {
    const int seq = seqs[si];
    if (seq < 0 || seq >= s.num_seqs)
      throw InvalidArgument("seqs", "sequence indices in [0, num_seqs)", std::to_string(seq));
    const std::int64_t len = std::clamp<std::int64_t>(lens[seq * a.context_lens.strides[0]], 0, capacity);
    for (int i = 0; i < L; ++i) {
      // Query token i sees positions [start, last]: causal within the query tokens.
      const auto [start, last] = visible(len, L, i, o);
      for (int h = 0; h < s.num_heads; ++h) {
        const std::int64_t qbase = seq * q.strides[0] + (qt > 0 ? i * q.strides[qt] : 0) + h * q.strides[qh];
        for (int d = 0; d < D; ++d) qrow[std::size_t(d)] = load_element(q.data, qbase + d, q.dtype);
        const std::size_t row = (si * std::size_t(L) + std::size_t(i)) * std::size_t(s.num_heads) + std::size_t(h);
        out.lse[row] = reader.attend(qrow, seq, h, start, last, sink_of(a.sinks, h), &out.output[row * std::size_t(D)],
                                     logits, vrow);
      }
    }
  }
  return out;
}

ReferenceOutputs reference_ragged_attention(const RaggedAttentionArgs& a, const PagedAttentionOptions& o) {
  const TensorView& q = a.query;
  if (q.rank != 3) throw InvalidArgument("query", "[total_tokens, num_heads, head_dim]", q.describe());
  const std::int64_t total = q.shape[0];
  const int H = int(q.shape[1]), D = int(q.shape[2]);
  const CacheReader reader =
      cache_reader(a.key_cache, a.value_cache, a.layout, a.block_tables, H, a.k_scale, a.v_scale, o);
  const int num_seqs = int(a.context_lens.shape[0]);
  const auto* lens = static_cast<const std::int32_t*>(a.context_lens.data);
  const auto* starts = static_cast<const std::int32_t*>(a.query_start.data);
  const std::int64_t capacity = a.block_tables.shape[1] * reader.page_size;
  int count = num_seqs;
  if (a.seq_count.data) count = std::clamp(*static_cast<const std::int32_t*>(a.seq_count.data), 0, num_seqs);

  ReferenceOutputs out;
  out.output.assign(std::size_t(total) * std::size_t(H) * std::size_t(D), 0.0);
  out.lse.assign(std::size_t(total) * std::size_t(H), -std::numeric_limits<double>::infinity());
  std::vector<double> logits, qrow(std::size_t(D), 0.0);
  std::vector<std::int64_t> vrow;
  for (int seq = 0; seq < count; ++seq) {
    out.seqs.push_back(seq);
    // The kernels' reading of query_start: clamped into [0, total_tokens], a
    // decreasing pair empty.
    const std::int64_t begin = std::clamp<std::int64_t>(starts[seq], 0, total);
    const std::int64_t end = std::clamp<std::int64_t>(starts[seq + 1], 0, total);
    const std::int64_t q_len = std::max<std::int64_t>(0, end - begin);
    const std::int64_t len = std::clamp<std::int64_t>(lens[seq * a.context_lens.strides[0]], 0, capacity);
    for (std::int64_t i = 0; i < q_len; ++i) {
      const auto [start, last] = visible(len, q_len, i, o);
      for (int h = 0; h < H; ++h) {
        const std::int64_t qbase = (begin + i) * q.strides[0] + h * q.strides[1];
        for (int d = 0; d < D; ++d) qrow[std::size_t(d)] = load_element(q.data, qbase + d, q.dtype);
        const std::size_t row = std::size_t(begin + i) * std::size_t(H) + std::size_t(h);
        std::fill_n(&out.output[row * std::size_t(D)], D, 0.0);  // overlapping (hostile) sequences: the last wins
        out.lse[row] = reader.attend(qrow, seq, h, start, last, sink_of(a.sinks, h), &out.output[row * std::size_t(D)],
                                     logits, vrow);
      }
    }
  }
  return out;
}

}  // namespace pagedjit
