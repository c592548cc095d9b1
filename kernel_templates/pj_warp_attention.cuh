// One warp's share of a tile: scores for 16 tokens against the (up to 16)
// query heads of the CTA, online softmax, and accumulation of p.V.
//
// Fragment ownership follows the m16n8k16 MMA accumulator layout for both
// paths: lane owns rows g = lane/4 and g + 8 (query heads), and per 8-column
// n-tile the columns 2*(lane%4) and +1 (tokens for scores, dims for output).
// The SIMT path (fp32, or any dtype on request) computes the same fragments
// with FMAs from shared memory, so softmax and epilogue code are shared.
#pragma once
#include "pj_params.cuh"
#include "pj_ptx.cuh"

namespace pj {

// Running softmax state of the two rows a lane owns, plus its output fragments.
template <int DV>
struct WarpState {
  float o[DV / 8][4];
  float m[2];  // running max (log2 domain) of rows g and g+8
  float l[2];  // this lane's partial row sums (reduced over the quad at the end)
  int lo[2];   // first and last visible position of rows g and g+8 (sliding
  int hi[2];   // window; causal limit of the row's query token)

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int i = 0; i < DV / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    m[0] = m[1] = neg_inf();
    l[0] = l[1] = 0.f;
  }

  // s: raw scores of 16 tokens (two n-tiles); turns them into probabilities in
  // place and rescales the accumulator when the running max moves. `scale`
  // multiplies q.k (the attention scale times an fp8 cache's k_scale).
  // ids: the tile's page ids (-1 = masked token), read only when `masked`
  // says the tile has any, or has positions outside some row's [lo, hi]
  // (its last tile, a bad block-table entry, or a multi-token query's edges).
  // pos0: position of the tile's first token.
  __device__ __forceinline__ void online_softmax(float (&s)[2][4], const DecodeParams& p, float scale, const int* ids,
                                                 int pos0, int tok0, bool masked) {
    const int tig = threadIdx.x % 4;
    if (p.soft_cap > 0.f) {
      const float inv_cap = 1.f / p.soft_cap;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) s[nt][i] = p.soft_cap * kLog2e * tanhf(s[nt][i] * scale * inv_cap);
    } else {
      const float scale_log2 = scale * kLog2e;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) s[nt][i] *= scale_log2;
    }
    if (masked) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int tok = tok0 + nt * 8 + 2 * tig;
        const int2 id = *reinterpret_cast<const int2*>(ids + tok);
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int pos = pos0 + tok + c;
          const bool bad = (c ? id.y : id.x) < 0;
          if (bad || pos < lo[0] || pos > hi[0]) s[nt][c] = neg_inf();
          if (bad || pos < lo[1] || pos > hi[1]) s[nt][2 + c] = neg_inf();
        }
      }
    }
    float a[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = fmaxf(fmaxf(s[0][2 * r], s[0][2 * r + 1]), fmaxf(s[1][2 * r], s[1][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      // All masked so far: keep everything at zero (avoids -inf - -inf).
      const float alpha = m_new == neg_inf() ? 1.f : fast_exp2(m[r] - m_new);
      const float base = m_new == neg_inf() ? 0.f : m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float e = fast_exp2(s[nt][2 * r + c] - base);
          s[nt][2 * r + c] = e;
          sum += e;
        }
      }
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
      a[r] = alpha;
    }
    // The running max settles after a few tiles: rescale only when it moved.
    if (__any_sync(0xffffffffu, a[0] != 1.f || a[1] != 1.f)) {
#pragma unroll
      for (int i = 0; i < DV / 8; ++i) {
        o[i][0] *= a[0], o[i][1] *= a[0];
        o[i][2] *= a[1], o[i][3] *= a[1];
      }
    }
  }
};

// Tensor-core path (fp16 / bf16). Scores use all HEAD_DIM dims; the output
// covers DV dims, of which the first dv_len are real (a partial last chunk).
template <class T, int HEAD_DIM, int DV>
struct MmaMath {
  static constexpr bool kQInRegs = HEAD_DIM <= 128;
  u32 qf[kQInRegs ? HEAD_DIM / 16 : 1][4];

  // The A fragments of Q (rows = heads, cols = dims) for k-step kd.
  __device__ __forceinline__ void load_q_frag(const char* q_smem, int pitch, int kd, u32 (&a)[4]) const {
    const int lane = threadIdx.x % 32;
    const int i = lane / 8;
    const int row = (lane & 7) + (i & 1) * 8;
    const int col = kd * 16 + (i >> 1) * 8;
    ldmatrix_x4(smem_addr(q_smem) + u32(row * pitch + col * 2), a[0], a[1], a[2], a[3]);
  }

  __device__ __forceinline__ void prepare(const char* q_smem, int pitch) {
    if constexpr (kQInRegs) {
#pragma unroll
      for (int kd = 0; kd < HEAD_DIM / 16; ++kd) load_q_frag(q_smem, pitch, kd, qf[kd]);
    }
  }

  __device__ __forceinline__ void q_frag(const char* q_smem, int q_pitch, int kd, u32 (&a)[4]) const {
    if constexpr (kQInRegs) {
      a[0] = qf[kd][0], a[1] = qf[kd][1], a[2] = qf[kd][2], a[3] = qf[kd][3];
    } else {
      load_q_frag(q_smem, q_pitch, kd, a);
    }
  }

  // Scores of tokens [tok0, tok0 + 16) of the tile.
  __device__ __forceinline__ void scores(const char* q_smem, int q_pitch, const char* k_smem, int pitch, int tok0, int,
                                         float (&s)[2][4]) const {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    // Per-lane base address once; the k-steps are immediate offsets from it.
    const u32 kbase = smem_addr(k_smem) + u32((tok0 + (lane & 7) + (lane >> 4) * 8) * pitch + ((lane >> 3) & 1) * 16);
#pragma unroll
    for (int kd = 0; kd < HEAD_DIM / 16; ++kd) {
      u32 a[4];
      q_frag(q_smem, q_pitch, kd, a);
      u32 b0, b1, b2, b3;
      ldmatrix_x4(kbase + u32(kd * 32), b0, b1, b2, b3);
      mma16816(T(), s[0], a, b0, b1);
      mma16816(T(), s[1], a, b2, b3);
    }
  }

  // o += P . V for tokens [tok0, tok0 + 16); P comes straight from the score
  // fragments (the accumulator layout of two n-tiles is the A layout).
  __device__ __forceinline__ void accumulate(WarpState<DV>& st, const float (&pr)[2][4], const char* v_smem, int pitch,
                                             int tok0, float*, int dv_len) const {
    const int lane = threadIdx.x % 32;
    u32 a[4];
    a[0] = pack2(T(), pr[0][0], pr[0][1]);
    a[1] = pack2(T(), pr[0][2], pr[0][3]);
    a[2] = pack2(T(), pr[1][0], pr[1][1]);
    a[3] = pack2(T(), pr[1][2], pr[1][3]);
    const int i = lane / 8;
    const u32 vbase = smem_addr(v_smem) + u32((tok0 + (lane & 7) + (i & 1) * 8) * pitch + (i >> 1) * 16);
#pragma unroll
    for (int dp = 0; dp < DV / 16; ++dp) {
      if (DV != HEAD_DIM && dp * 16 >= dv_len) break;
      u32 b0, b1, b2, b3;
      ldmatrix_x4_trans(vbase + u32(dp * 32), b0, b1, b2, b3);
      mma16816(T(), st.o[2 * dp], a, b0, b1);
      mma16816(T(), st.o[2 * dp + 1], a, b2, b3);
    }
  }

  // The lane's output fragments into a [16][DV] fp32 tile.
  static __device__ __forceinline__ void store_o(const WarpState<DV>& st, float* ow) {
    const int lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
#pragma unroll
    for (int dt = 0; dt < DV / 8; ++dt) {
      const int d = dt * 8 + 2 * tig;
      *reinterpret_cast<float2*>(ow + g * DV + d) = make_float2(st.o[dt][0], st.o[dt][1]);
      *reinterpret_cast<float2*>(ow + (g + 8) * DV + d) = make_float2(st.o[dt][2], st.o[dt][3]);
    }
  }
};

// fp8 caches (e4m3 / e5m2): the query tile is fp16 in shared memory, keys and
// values stay 8-bit there and are widened in registers right before the fp16
// MMAs. Dot products do not care in which order the k dimension is summed, so
// both operands use the order the 8-bit data arrives in:
//  - q.k: ldmatrix of 8-bit K rows gives a lane the 4 dims 4*tig..4*tig+3 of a
//    16-dim step; the query tile is stored permuted to match (Fp8QueryOrder).
//  - p.V: ldmatrix.trans of 8-bit V gives a lane two tokens x two adjacent
//    dims; one byte permute makes per-dim token pairs, so the even and odd
//    dims of each 16-dim chunk form two n-tiles (store_o undoes it).
template <class KV, int HEAD_DIM, int DV>
struct Fp8MmaMath : MmaMath<f16, HEAD_DIM, DV> {
  typedef MmaMath<f16, HEAD_DIM, DV> Base;

  __device__ __forceinline__ void scores(const char* q_smem, int q_pitch, const char* k_smem, int pitch, int tok0, int,
                                         float (&s)[2][4]) const {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    // Matrices: (tokens 0-7, step kd), (8-15, kd), (0-7, kd+1), (8-15, kd+1).
    const u32 kbase = smem_addr(k_smem) + u32((tok0 + (lane & 7) + ((lane >> 3) & 1) * 8) * pitch + (lane >> 4) * 16);
    constexpr int KSTEPS = HEAD_DIM / 16;
#pragma unroll
    for (int kd = 0; kd < KSTEPS; kd += 2) {
      u32 r[4];
      if (kd + 1 < KSTEPS) {
        ldmatrix_x4(kbase + u32(kd * 16), r[0], r[1], r[2], r[3]);
      } else {
        ldmatrix_x2(kbase + u32(kd * 16), r[0], r[1]);
        r[2] = r[3] = 0u;
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        if (kd + j >= KSTEPS) break;
        u32 a[4];
        this->q_frag(q_smem, q_pitch, kd + j, a);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          u32 b0, b1;
          fp8x4_to_f16x4(KV(), r[2 * j + nt], b0, b1);
          mma16816(f16(), s[nt], a, b0, b1);
        }
      }
    }
  }

  __device__ __forceinline__ void accumulate(WarpState<DV>& st, const float (&pr)[2][4], const char* v_smem, int pitch,
                                             int tok0, float*, int dv_len) const {
    const int lane = threadIdx.x % 32;
    u32 a[4];
    a[0] = pack2(f16(), pr[0][0], pr[0][1]);
    a[1] = pack2(f16(), pr[0][2], pr[0][3]);
    a[2] = pack2(f16(), pr[1][0], pr[1][1]);
    a[3] = pack2(f16(), pr[1][2], pr[1][3]);
    // Matrices: (tokens 0-7, chunk c), (8-15, c), (0-7, c+1), (8-15, c+1).
    const u32 vbase = smem_addr(v_smem) + u32((tok0 + (lane & 7) + ((lane >> 3) & 1) * 8) * pitch + (lane >> 4) * 16);
    constexpr int CHUNKS = DV / 16;
#pragma unroll
    for (int c = 0; c < CHUNKS; c += 2) {
      if (DV != HEAD_DIM && c * 16 >= dv_len) break;
      const bool two = c + 1 < CHUNKS && (DV == HEAD_DIM || (c + 1) * 16 < dv_len);
      u32 r[4];
      if (two) {
        ldmatrix_x4_trans(vbase + u32(c * 16), r[0], r[1], r[2], r[3]);
      } else {
        ldmatrix_x2_trans(vbase + u32(c * 16), r[0], r[1]);
        r[2] = r[3] = 0u;
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        if (j == 1 && !two) break;
        // {t0.d, t0.d+1, t1.d, t1.d+1} -> {t0.d, t1.d, t0.d+1, t1.d+1}
        u32 even0, odd0, even1, odd1;                                        // (dim parity, token pair)
        fp8x4_to_f16x4(KV(), prmt(r[2 * j], 0u, 0x3120u), even0, odd0);      // tokens 2*tig, +1
        fp8x4_to_f16x4(KV(), prmt(r[2 * j + 1], 0u, 0x3120u), even1, odd1);  // tokens 2*tig + 8, +9
        mma16816(f16(), st.o[2 * (c + j)], a, even0, even1);
        mma16816(f16(), st.o[2 * (c + j) + 1], a, odd0, odd1);
      }
    }
  }

  // n-tile 2c holds the even dims of chunk c, 2c + 1 the odd ones: a lane's
  // four values of a row are dims 16c + 4*tig + 0..3.
  static __device__ __forceinline__ void store_o(const WarpState<DV>& st, float* ow) {
    const int lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
#pragma unroll
    for (int c = 0; c < DV / 16; ++c) {
      const int d = c * 16 + 4 * tig;
      const float* e = st.o[2 * c];
      const float* o = st.o[2 * c + 1];
      *reinterpret_cast<float4*>(ow + g * DV + d) = make_float4(e[0], o[0], e[1], o[1]);
      *reinterpret_cast<float4*>(ow + (g + 8) * DV + d) = make_float4(e[2], o[2], e[3], o[3]);
    }
  }
};

// Query rows for Fp8MmaMath: fp16, with the dims of each 16-dim step
// reordered so that the standard A-fragment ldmatrix yields, for lane tig,
// dims 4*tig, +1 (k = 2*tig, +1) and 4*tig + 2, +3 (k = 2*tig + 8, +9).
// Dims 4t + j go to position 2t + j (j < 2) or 8 + 2t + j - 2.
__device__ __forceinline__ int fp8_query_pos(int d) {
  const int base = d & ~15, t = (d & 15) >> 2, j = d & 3;
  return base + (j < 2 ? 2 * t + j : 8 + 2 * t + j - 2);
}

// CUDA-core path: same fragments, computed from shared memory. Used for fp32
// (tensor cores have no fp32-exact mode) and as a cross-check of the MMA path.
template <class T, int HEAD_DIM, int DV>
struct SimtMath {
  typedef typename T::storage S;
  static constexpr int kVec = 16 / T::bytes;

  __device__ __forceinline__ void prepare(const char*, int) {}

  __device__ __forceinline__ void scores(const char* q_smem, int q_pitch, const char* k_smem, int pitch, int tok0,
                                         int nrows, float (&s)[2][4]) const {
    const int lane = threadIdx.x % 32;
    const int g = lane / 4, tig = lane % 4;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = g + (i >> 1) * 8;
        const int tok = tok0 + nt * 8 + 2 * tig + (i & 1);
        // kVec independent partial sums: shorter rounding chains (fp32 at
        // head_dim 512 needs them to stay within 1e-5 of float64).
        float acc[kVec] = {};
        if (row < nrows) {
          const uint4* qv = reinterpret_cast<const uint4*>(q_smem + row * q_pitch);
          const uint4* kv = reinterpret_cast<const uint4*>(k_smem + tok * pitch);
#pragma unroll 4
          for (int c = 0; c < HEAD_DIM / kVec; ++c) {
            float qf[kVec], kf[kVec];
            unpack16(T(), qv[c], qf);
            unpack16(T(), kv[c], kf);
#pragma unroll
            for (int e = 0; e < kVec; ++e) acc[e] = fmaf(qf[e], kf[e], acc[e]);
          }
        }
        float sum = 0.f;
#pragma unroll
        for (int e = 0; e < kVec; ++e) sum += acc[e];
        s[nt][i] = sum;
      }
    }
  }

  // p_tile: this warp's 16x16 fp32 scratch; probabilities are exchanged through
  // it because each output column needs all 16 tokens of a row.
  __device__ __forceinline__ void accumulate(WarpState<DV>& st, const float (&pr)[2][4], const char* v_smem, int pitch,
                                             int tok0, float* p_tile, int dv_len) const {
    const int lane = threadIdx.x % 32;
    const int g = lane / 4, tig = lane % 4;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) p_tile[(g + (i >> 1) * 8) * 16 + nt * 8 + 2 * tig + (i & 1)] = pr[nt][i];
    }
    __syncwarp();
#pragma unroll 2
    for (int t = 0; t < 16; ++t) {
      const float p0 = p_tile[g * 16 + t];
      const float p1 = p_tile[(g + 8) * 16 + t];
      const S* vrow = reinterpret_cast<const S*>(v_smem + (tok0 + t) * pitch);
#pragma unroll
      for (int dt = 0; dt < DV / 8; ++dt) {
        if (DV != HEAD_DIM && dt * 8 >= dv_len) break;
        const int d = dt * 8 + 2 * tig;
        const float v0 = to_float(T(), vrow[d]);
        const float v1 = to_float(T(), vrow[d + 1]);
        st.o[dt][0] = fmaf(p0, v0, st.o[dt][0]);
        st.o[dt][1] = fmaf(p0, v1, st.o[dt][1]);
        st.o[dt][2] = fmaf(p1, v0, st.o[dt][2]);
        st.o[dt][3] = fmaf(p1, v1, st.o[dt][3]);
      }
    }
    __syncwarp();
  }

  static __device__ __forceinline__ void store_o(const WarpState<DV>& st, float* ow) {
    MmaMath<f16, HEAD_DIM, DV>::store_o(st, ow);  // same fragment layout
  }
};

}  // namespace pj
