// Log-sum-exp reduction of split partials: one CTA per (head, sequence).
// Partials stay fp32 until here; only the final output is rounded.
#pragma once
#include "pj_params.cuh"
#include "pj_types.cuh"

namespace pj {

constexpr int kCombineThreads = 128;

__device__ __forceinline__ float block_reduce(float v, bool is_max, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < kCombineThreads / 32; ++w) v = is_max ? fmaxf(v, scratch[w]) : v + scratch[w];
  return v;
}

template <class OUT, int HEAD_DIM>
__global__ void __launch_bounds__(kCombineThreads) paged_combine(const __grid_constant__ CombineParams p) {
  extern __shared__ __align__(16) float weights[];  // one per split
  __shared__ float scratch[kCombineThreads / 32];
  const int head = blockIdx.x, seq = blockIdx.y, n = p.num_splits;
  const i64 base = (i64(seq) * p.num_heads + head) * n;
  const float* lse = p.part_lse + base;

  float mx = neg_inf();
  for (int s = threadIdx.x; s < n; s += kCombineThreads) mx = fmaxf(mx, lse[s]);
  mx = block_reduce(mx, true, scratch);

  float sum = 0.f;
  for (int s = threadIdx.x; s < n; s += kCombineThreads) {
    const float w = mx == neg_inf() || lse[s] == neg_inf() ? 0.f : fast_exp2(lse[s] - mx);
    weights[s] = w;
    sum += w;
  }
  sum = block_reduce(sum, false, scratch);  // its barriers also publish `weights`

  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  typename OUT::storage* out =
      static_cast<typename OUT::storage*>(p.out) + i64(seq) * p.o_stride_seq + i64(head) * p.o_stride_head;
  for (int d = threadIdx.x * 4; d < HEAD_DIM; d += kCombineThreads * 4) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s = 0; s < n; ++s) {
      const float w = weights[s];
      if (w == 0.f) continue;
      const float4 o = *reinterpret_cast<const float4*>(p.part_o + (base + s) * HEAD_DIM + d);
      acc.x += w * o.x, acc.y += w * o.y, acc.z += w * o.z, acc.w += w * o.w;
    }
    out[d] = from_float(OUT(), acc.x * inv);
    out[d + 1] = from_float(OUT(), acc.y * inv);
    out[d + 2] = from_float(OUT(), acc.z * inv);
    out[d + 3] = from_float(OUT(), acc.w * inv);
  }
  if (threadIdx.x == 0 && p.lse)
    p.lse[i64(seq) * p.lse_stride_seq + head] = sum > 0.f ? (mx + log2f(sum)) * kLn2 : neg_inf();
}

}  // namespace pj
