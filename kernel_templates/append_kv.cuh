// Writes a step's new keys and values into their pages (Engine::append_kv):
// packed row query_start[s] + i (token i of sequence s) goes to position
// context_lens[s] - q_len(s) + i. Matching dtypes are copied bit for bit;
// an fp8 cache receives value / scale, rounded to nearest even and saturated
// to the largest finite value.
//
// A pure copy, so the layout serves the memory system: the grid is (row
// groups, KV heads), a CTA holds blockDim.y rows of one head and each thread
// moves one 16-byte column of the row's key and of its value. A thread issues
// its loads first (they depend on the row alone) and finds the row's
// sequence while they are in flight.
#pragma once
#include "pj_params.cuh"
#include "pj_types.cuh"

namespace pj {

// Two floats to two fp8 values, `lo` in the low byte; saturating (satfinite:
// out-of-range values and infinities become the largest finite value).
__device__ __forceinline__ u32 fp8x2(e4m3, float lo, float hi) {
  u16 r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ u32 fp8x2(e5m2, float lo, float hi) {
  u16 r;
  asm("cvt.rn.satfinite.e5m2x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}

// One 16-byte column of the cache from the IN source vectors that hold its
// elements. Division, not a reciprocal multiply: the contract (and the CPU
// reference) is value / scale, bit for bit.
template <class SRC, class KV, int IN>
__device__ __forceinline__ uint4 to_cache(const uint4 (&in)[IN], float scale) {
  if constexpr (!is_fp8<KV>::value) {
    return in[0];
  } else {
    float f[16];
#pragma unroll
    for (int j = 0; j < IN; ++j) unpack16(SRC(), in[j], f + j * (16 / IN));
    u32 w[4];
#pragma unroll
    for (int j = 0; j < 4; ++j)
      w[j] = fp8x2(KV(), f[4 * j] / scale, f[4 * j + 1] / scale) |
             (fp8x2(KV(), f[4 * j + 2] / scale, f[4 * j + 3] / scale) << 16);
    uint4 r;
    r.x = w[0], r.y = w[1], r.z = w[2], r.w = w[3];
    return r;
  }
}

// query_start[i] as the kernel trusts it: inside [0, total_tokens].
__device__ __forceinline__ int row_start(const AppendParams& p, int i) {
  return min(max(p.query_start[i], 0), p.total_tokens);
}

template <class SRC, class KV>
__global__ void __launch_bounds__(kAppendThreads) append_kv(const __grid_constant__ AppendParams p) {
  constexpr int IN = SRC::bytes / KV::bytes;  // source vectors per 16 cache bytes
  constexpr int VEC = 16 / KV::bytes;         // elements per thread
  const int row = int(blockIdx.x) * int(blockDim.y) + int(threadIdx.y);
  if (row >= p.total_tokens) return;
  const int head = int(blockIdx.y);
  const int col = int(threadIdx.x) * VEC;
  typedef typename SRC::storage S;
  typedef typename KV::storage T;
  const uint4* ks = reinterpret_cast<const uint4*>(static_cast<const S*>(p.k_src) + row * p.k_src_stride_tok +
                                                   head * p.k_src_stride_head + col);
  const uint4* vs = reinterpret_cast<const uint4*>(static_cast<const S*>(p.v_src) + row * p.v_src_stride_tok +
                                                   head * p.v_src_stride_head + col);
  uint4 kin[IN], vin[IN];
#pragma unroll
  for (int j = 0; j < IN; ++j) kin[j] = ks[j], vin[j] = vs[j];

  // The row's sequence: the last s < n whose rows start at or before it
  // (query_start is sorted; hostile values still give one s, and the row
  // must lie below its end).
  const int n = p.seq_count ? min(max(*p.seq_count, 0), p.num_seqs) : p.num_seqs;
  int lo = -1, hi = n;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (row_start(p, mid) <= row)
      lo = mid;
    else
      hi = mid;
  }
  if (lo < 0) return;
  const int s = lo, start = row_start(p, s), end = row_start(p, s + 1);
  if (row >= end) return;
  // Positions before 0 (q_len > context_len) or past the table are skipped.
  const i64 pos = i64(p.context_lens[s]) - (end - start) + (row - start);
  if (pos < 0 || pos >= (i64(p.max_blocks) << p.page_shift)) return;
  const int page = p.block_tables[s * p.bt_stride + int(pos >> p.page_shift)];
  if (page < 0 || page >= p.num_blocks) return;
  const unsigned slot = unsigned(pos) & ((1u << p.page_shift) - 1u);

  float k_scale = 1.f, v_scale = 1.f;
  if constexpr (is_fp8<KV>::value) {
    if (p.k_scale) k_scale = p.k_scale[head * p.k_scale_stride];
    if (p.v_scale) v_scale = p.v_scale[head * p.v_scale_stride];
  }
  T* kd = static_cast<T*>(p.k) + wide(unsigned(page), p.k_stride_page) + head * p.k_stride_head +
          wide(slot, p.k_stride_slot) + col;
  T* vd = static_cast<T*>(p.v) + wide(unsigned(page), p.v_stride_page) + head * p.v_stride_head +
          wide(slot, p.v_stride_slot) + col;
  *reinterpret_cast<uint4*>(kd) = to_cache<SRC, KV, IN>(kin, k_scale);
  *reinterpret_cast<uint4*>(vd) = to_cache<SRC, KV, IN>(vin, v_scale);
}

}  // namespace pj
