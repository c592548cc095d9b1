// Element types and conversions. We do not include the toolkit's
// cuda_fp16.h / cuda_bf16.h: they dominate NVRTC compile time, and the kernels
// only need bit containers plus a few conversion instructions.
#pragma once

namespace pj {

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
typedef long long i64;

template <bool B, class A, class C>
struct conditional {
  typedef A type;
};
template <class A, class C>
struct conditional<false, A, C> {
  typedef C type;
};

template <class A, class B>
struct same_type {
  static constexpr bool value = false;
};
template <class A>
struct same_type<A, A> {
  static constexpr bool value = true;
};

// dtype tags: `storage` is what sits in memory.
struct f32 {
  typedef float storage;
  static constexpr int bytes = 4;
  static constexpr bool mma = false;  // no fp32-exact tensor-core path
};
struct f16 {
  typedef u16 storage;
  static constexpr int bytes = 2;
  static constexpr bool mma = true;
};
struct bf16 {
  typedef u16 storage;
  static constexpr int bytes = 2;
  static constexpr bool mma = true;
};

// 8-bit float KV caches (OCP FP8). They are only storage: tiles are widened
// to fp16 in registers (exact for both formats) and multiplied on the fp16
// tensor cores, so `mma` is false here and the kernel picks Fp8MmaMath.
struct e4m3 {
  typedef unsigned char storage;
  static constexpr int bytes = 1;
  static constexpr bool mma = false;
  static constexpr bool fp8 = true;
};
struct e5m2 {
  typedef unsigned char storage;
  static constexpr int bytes = 1;
  static constexpr bool mma = false;
  static constexpr bool fp8 = true;
};
template <class T>
struct is_fp8 {
  static constexpr bool value = false;
};
template <>
struct is_fp8<e4m3> {
  static constexpr bool value = true;
};
template <>
struct is_fp8<e5m2> {
  static constexpr bool value = true;
};

// Four fp8 values (low byte first) to two fp16 pairs (low half first): bytes
// 0-1 to `lo`, bytes 2-3 to `hi`. One F2FP instruction per pair on sm_89+.
__device__ __forceinline__ void fp8x4_to_f16x4(e4m3, u32 x, u32& lo, u32& hi) {
  asm("{ .reg .b16 a, b; mov.b32 {a, b}, %2; cvt.rn.f16x2.e4m3x2 %0, a; cvt.rn.f16x2.e4m3x2 %1, b; }"
      : "=r"(lo), "=r"(hi)
      : "r"(x));
}
__device__ __forceinline__ void fp8x4_to_f16x4(e5m2, u32 x, u32& lo, u32& hi) {
  asm("{ .reg .b16 a, b; mov.b32 {a, b}, %2; cvt.rn.f16x2.e5m2x2 %0, a; cvt.rn.f16x2.e5m2x2 %1, b; }"
      : "=r"(lo), "=r"(hi)
      : "r"(x));
}

__device__ __forceinline__ float to_float(f32, float x) {
  return x;
}
__device__ __forceinline__ float to_float(f16, u16 x) {
  float r;
  asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(x));
  return r;
}
__device__ __forceinline__ float to_float(bf16, u16 x) {
  return __uint_as_float(u32(x) << 16);
}

__device__ __forceinline__ float from_float(f32, float x) {
  return x;
}
__device__ __forceinline__ u16 from_float(f16, float x) {
  u16 r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ u16 from_float(bf16, float x) {
  u16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
  return r;
}

// Two floats packed into one 32-bit register, `lo` in the low half: the
// element order the MMA fragments expect.
__device__ __forceinline__ u32 pack2(f16, float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ u32 pack2(bf16, float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// Unpack one 16-byte vector of storage elements into floats.
template <class T>
struct Vec16 {
  static constexpr int n = 16 / T::bytes;
};

__device__ __forceinline__ void unpack16(f32, const uint4& v, float* out) {
  out[0] = __uint_as_float(v.x);
  out[1] = __uint_as_float(v.y);
  out[2] = __uint_as_float(v.z);
  out[3] = __uint_as_float(v.w);
}
template <class T>
__device__ __forceinline__ void unpack16(T t, const uint4& v, float* out) {
  const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = to_float(t, u16(w[i] & 0xffffu));
    out[2 * i + 1] = to_float(t, u16(w[i] >> 16));
  }
}

// 32 x 32 -> 64-bit product: a single IMAD.WIDE.U32 (a plain i64 multiply
// costs four instructions).
__device__ __forceinline__ long long wide(unsigned a, unsigned b) {
  return (long long)(((unsigned long long)a) * ((unsigned long long)b));
}

__device__ __forceinline__ float fast_exp2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
__device__ __forceinline__ float neg_inf() {
  return __int_as_float(0xff800000u);
}

}  // namespace pj
