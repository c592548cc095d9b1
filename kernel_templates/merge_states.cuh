// Merges two attention results over disjoint parts of a context (cascade /
// shared-prefix attention): with a = exp(lse_a), b = exp(lse_b),
//   out = (a * out_a + b * out_b) / (a + b),   lse = log(a + b).
// Rows are the flattened leading dims (heads, query tokens, sequences); one
// thread merges four dims of a row. Natural-log lse, as paged_attention writes.
#pragma once
#include "pj_params.cuh"
#include "pj_types.cuh"

namespace pj {

template <class IN, class OUT>
__global__ void __launch_bounds__(kMergeThreads) merge_states(const __grid_constant__ MergeParams p) {
  const int groups = p.head_dim / 4;
  const i64 idx = i64(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.rows * groups) return;
  const i64 row = idx / groups;
  const int d = int(idx % groups) * 4;
  const float la = p.lse_a[row * p.lse_a_stride], lb = p.lse_b[row * p.lse_b_stride];
  const float m = fmaxf(la, lb);
  // Empty parts have lse -inf and weight 0; both empty: a zero row, lse -inf.
  const float wa = la == neg_inf() ? 0.f : __expf(la - m);
  const float wb = lb == neg_inf() ? 0.f : __expf(lb - m);
  const float sum = wa + wb;
  const float fa = sum > 0.f ? wa / sum : 0.f, fb = sum > 0.f ? wb / sum : 0.f;
  const typename IN::storage* a = static_cast<const typename IN::storage*>(p.out_a) + row * p.a_row_stride + d;
  const typename IN::storage* b = static_cast<const typename IN::storage*>(p.out_b) + row * p.b_row_stride + d;
  typename OUT::storage* o = static_cast<typename OUT::storage*>(p.out) + row * p.out_row_stride + d;
  float r[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    // A part with weight 0 is not read into the sum: its output may be anything.
    const float xa = fa > 0.f ? to_float(IN(), a[j]) * fa : 0.f;
    const float xb = fb > 0.f ? to_float(IN(), b[j]) * fb : 0.f;
    r[j] = xa + xb;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) o[j] = from_float(OUT(), r[j]);
  if (p.lse && d == 0) p.lse[row * p.lse_stride] = sum > 0.f ? m + __logf(sum) : neg_inf();
}

}  // namespace pj
