// The semantics of docs/contract.md, spelled out in float64 on the CPU.
#include "pagedjit/reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

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

ReferenceOutputs reference_paged_attention(const PagedAttentionArgs& a, const PagedAttentionOptions& o,
                                           std::vector<int> seqs) {
  const ProblemShape s = validate_call(a, o);
  const int group = s.group();
  const int D = s.head_dim;
  const double scale = o.attn_scale ? double(*o.attn_scale) : 1.0 / std::sqrt(double(D));
  const CacheAxes axes = cache_axes(s.layout);
  const int block_axis = axes.block_axis, head_axis = axes.head_axis, slot_axis = axes.slot_axis;
  const TensorView &q = a.query, &kc = a.key_cache, &vc = a.value_cache;
  const auto* lens = static_cast<const std::int32_t*>(a.context_lens.data);
  const auto* table = static_cast<const std::int32_t*>(a.block_tables.data);
  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  const int L = s.q_len;
  const int qt = q.rank == 4 ? 1 : -1, qh = q.rank - 2;  // axes of query tokens and heads
  // fp8 caches hold value / scale: dequantize with the (host) scales.
  auto scale_of = [&](const TensorView& t, int kvh) {
    if (!t.data) return 1.0;
    return double(static_cast<const float*>(t.data)[t.shape[0] > 1 ? kvh : 0]);
  };
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
      const std::int64_t last = len - L + i;
      const std::int64_t start = o.sliding_window ? std::max<std::int64_t>(0, last + 1 - *o.sliding_window) : 0;
      for (int h = 0; h < s.num_heads; ++h) {
        const int kvh = h / group;
        const double ks = scale_of(a.k_scale, kvh), vs = scale_of(a.v_scale, kvh);
        const std::int64_t qbase = seq * q.strides[0] + (qt > 0 ? i * q.strides[qt] : 0) + h * q.strides[qh];
        for (int d = 0; d < D; ++d) qrow[std::size_t(d)] = load_element(q.data, qbase + d, q.dtype);
        logits.clear();
        vrow.clear();
        for (std::int64_t t = start; t <= last; ++t) {
          const int page = table[seq * a.block_tables.strides[0] + t / s.page_size];
          if (page < 0 || page >= s.num_blocks) continue;  // masked, never dereferenced
          const std::int64_t slot = t % s.page_size;
          const std::int64_t kb =
              page * kc.strides[block_axis] + kvh * kc.strides[head_axis] + slot * kc.strides[slot_axis];
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += qrow[std::size_t(d)] * double(load_element(kc.data, kb + d, kc.dtype));
          double x = scale * ks * dot;
          if (o.attn_logits_soft_cap) x = *o.attn_logits_soft_cap * std::tanh(x / *o.attn_logits_soft_cap);
          logits.push_back(x);
          vrow.push_back(page * vc.strides[block_axis] + kvh * vc.strides[head_axis] + slot * vc.strides[slot_axis]);
        }
        if (logits.empty()) continue;  // zero row, lse -inf
        const double mx = *std::max_element(logits.begin(), logits.end());
        double sum = 0;
        for (double& x : logits) sum += (x = std::exp(x - mx));
        const std::size_t row = (si * std::size_t(L) + std::size_t(i)) * std::size_t(s.num_heads) + std::size_t(h);
        double* o_row = &out.output[row * std::size_t(D)];
        for (std::size_t j = 0; j < logits.size(); ++j) {
          const double p = logits[j] / sum * vs;
          for (int d = 0; d < D; ++d) o_row[d] += p * double(load_element(vc.data, vrow[j] + d, vc.dtype));
        }
        out.lse[row] = mx + std::log(sum);
      }
    }
  }
  return out;
}

}  // namespace pagedjit
