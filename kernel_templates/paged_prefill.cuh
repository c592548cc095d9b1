// Paged-attention prefill: long queries (prefill chunks of hundreds to
// thousands of tokens), tiled over queries and keys, FlashAttention-2 style.
//
// One CTA per (KV head, query block): BLOCK_ROWS query rows of one sequence,
// each a (token, query head of the group) pair of the CTA's KV head,
// token-major, so the query heads of a GQA group share every K/V tile the
// CTA loads. The query block stays in shared memory; each of the WARPS warps
// owns 16 of its rows and keeps their online softmax state and output in
// registers for the whole key range, so no cross-warp merge is needed. Key
// tiles of BLOCK_KEYS tokens stream through a STAGES-deep cp.async pipeline
// (pj_tile_loader.cuh: page ids looked up once per token, a pipeline depth
// ahead; invalid pages masked, never read). Scores and P.V run on
// mma.sync m16n8k16 through the decode kernel's warp math (MmaMath, or
// Fp8MmaMath widening fp8 tiles in registers). Causality bounds the key range
// of a block to positions up to its last row's, and a sliding window from its
// first row's window start; only tiles that some row sees partly (the
// diagonal, the window's edge, a bad page) pay for per-row masks.
#pragma once
#include "pj_params.cuh"
#include "pj_ptx.cuh"
#include "pj_schedule.cuh"
#include "pj_tile_loader.cuh"
#include "pj_warp_attention.cuh"

namespace pj {

// Online softmax of one warp's 16 rows over a tile of NS 16-key slices (raw
// scores in `s`, MMA accumulator layout), turned into probabilities in place;
// the running max moves once per tile, not per slice. `masked`: some key of
// the tile is outside some row's [lo, hi] or has a masked page id (ids[k] < 0).
template <int NS, int D>
__device__ __forceinline__ void prefill_softmax(float (&s)[NS][2][4], WarpState<D>& st, const DecodeParams& p,
                                                float scale, const int* ids, int pos0, bool masked) {
  const int tig = threadIdx.x % 4;
  if (p.soft_cap > 0.f) {
    const float inv_cap = 1.f / p.soft_cap;
#pragma unroll
    for (int ks = 0; ks < NS; ++ks)
#pragma unroll
      for (int i = 0; i < 8; ++i)
        s[ks][i / 4][i % 4] = p.soft_cap * kLog2e * tanhf(s[ks][i / 4][i % 4] * scale * inv_cap);
  } else {
    const float scale_log2 = scale * kLog2e;
#pragma unroll
    for (int ks = 0; ks < NS; ++ks)
#pragma unroll
      for (int i = 0; i < 8; ++i) s[ks][i / 4][i % 4] *= scale_log2;
  }
  if (masked) {
#pragma unroll
    for (int ks = 0; ks < NS; ++ks)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int key = ks * 16 + nt * 8 + 2 * tig;
        const int2 id = *reinterpret_cast<const int2*>(ids + key);
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int pos = pos0 + key + c;
          const bool bad = (c ? id.y : id.x) < 0;
          if (bad || pos < st.lo[0] || pos > st.hi[0]) s[ks][nt][c] = neg_inf();
          if (bad || pos < st.lo[1] || pos > st.hi[1]) s[ks][nt][2 + c] = neg_inf();
        }
      }
  }
  float alpha[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = neg_inf();
#pragma unroll
    for (int ks = 0; ks < NS; ++ks)
      mx = fmaxf(mx, fmaxf(fmaxf(s[ks][0][2 * r], s[ks][0][2 * r + 1]), fmaxf(s[ks][1][2 * r], s[ks][1][2 * r + 1])));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(st.m[r], mx);
    // Everything masked so far: keep all at zero (no -inf - -inf).
    alpha[r] = m_new == neg_inf() ? 1.f : fast_exp2(st.m[r] - m_new);
    const float base = m_new == neg_inf() ? 0.f : m_new;
    float sum = 0.f;
#pragma unroll
    for (int ks = 0; ks < NS; ++ks)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float e = fast_exp2(s[ks][nt][2 * r + c] - base);
          s[ks][nt][2 * r + c] = e;
          sum += e;
        }
    st.l[r] = st.l[r] * alpha[r] + sum;
    st.m[r] = m_new;
  }
  if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      st.o[i][0] *= alpha[0], st.o[i][1] *= alpha[0];
      st.o[i][2] *= alpha[1], st.o[i][3] *= alpha[1];
    }
  }
}

// The output values a lane holds for its row g + 8 * r, as calls f(dim,
// value of dim, value of dim + 1): MmaMath's n-tiles hold dims 8 * tile +
// 2 * (lane % 4) and +1; Fp8MmaMath's hold the even and the odd dims of each
// 16-dim chunk (see its store_o).
template <bool FP8, int D, class F>
__device__ __forceinline__ void for_each_output_pair(const WarpState<D>& st, int r, F f) {
  const int tig = threadIdx.x % 4;
  if constexpr (FP8) {
#pragma unroll
    for (int c = 0; c < D / 16; ++c) {
      const float* even = st.o[2 * c];
      const float* odd = st.o[2 * c + 1];
      f(16 * c + 4 * tig, even[2 * r], odd[2 * r]);
      f(16 * c + 4 * tig + 2, even[2 * r + 1], odd[2 * r + 1]);
    }
  } else {
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) f(8 * dt + 2 * tig, st.o[dt][2 * r], st.o[dt][2 * r + 1]);
  }
}

// Max and min over the warp.
__device__ __forceinline__ int warp_max(int x) {
#pragma unroll
  for (int d = 16; d >= 1; d /= 2) x = max(x, __shfl_xor_sync(0xffffffffu, x, d));
  return x;
}
__device__ __forceinline__ int warp_min(int x) {
#pragma unroll
  for (int d = 16; d >= 1; d /= 2) x = min(x, __shfl_xor_sync(0xffffffffu, x, d));
  return x;
}

// Row r of a query block: token (row0 + r) / group of the sequence, query
// head kv_head * group + (row0 + r) % group.
struct BlockRows {
  int row0, group, kv_head;
  __device__ __forceinline__ int token(int r) const { return (row0 + r) / group; }
  __device__ __forceinline__ int head(int r) const { return kv_head * group + (row0 + r) % group; }
};

// The query block into shared memory, one padded row per query row; rows
// past the block's are zero. fp16/bf16 caches: by cp.async (the caller
// commits the group). fp8 caches: widened to fp16 (clamped to its range) in
// Fp8MmaMath's dim order, by plain stores (the caller's barrier publishes them).
template <class T, bool FP8, int HEAD_DIM, int BLOCK_ROWS, int NT>
__device__ __forceinline__ void load_query_block(const DecodeParams& p, const QueryBlock& qb, const BlockRows& rows,
                                                 char* q_smem, int q_pitch) {
  typedef typename T::storage S;
  const S* q_seq = static_cast<const S*>(p.q) + i64(qb.seq) * p.q_stride_seq;
  auto q_row = [&](int r) {  // padding rows read the last real one (and are zero-filled)
    const int rr = min(r, qb.rows - 1);
    return q_seq + i64(qb.q_start + rows.token(rr)) * p.q_stride_tok + i64(rows.head(rr)) * p.q_stride_head;
  };
  const int tid = threadIdx.x;
  if constexpr (FP8) {
    for (int c = tid; c < BLOCK_ROWS * (HEAD_DIM / 4); c += NT) {
      const int r = c / (HEAD_DIM / 4), d = (c % (HEAD_DIM / 4)) * 4;
      const S* src = q_row(r) + d;
      float x[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) x[j] = r < qb.rows ? fminf(fmaxf(to_float(T(), src[j]), -65504.f), 65504.f) : 0.f;
      char* row = q_smem + r * q_pitch;
      *reinterpret_cast<u32*>(row + 2 * fp8_query_pos(d)) = pack2(f16(), x[0], x[1]);
      *reinterpret_cast<u32*>(row + 2 * fp8_query_pos(d + 2)) = pack2(f16(), x[2], x[3]);
    }
  } else {
    constexpr int CHUNKS_PER_ROW = HEAD_DIM * 2 / 16;
    const u32 q_base = smem_addr(q_smem);
    for (int c = tid; c < BLOCK_ROWS * CHUNKS_PER_ROW; c += NT) {
      const int r = c / CHUNKS_PER_ROW, col = c % CHUNKS_PER_ROW;
      cp_async16(q_base + u32(r * q_pitch + col * 16), q_row(r) + col * 8, r < qb.rows ? 16 : 0);
    }
  }
}

// The epilogue, straight from registers: each lane writes its rows g and
// g + 8 of the warp's 16 (`first_row`: the warp's first in the block),
// out = o / (l + e^(sink - m)) with the sink (a logit per query head) joining
// the denominator only, and the natural-log sum-exp. A row that saw no key
// writes zeros, and lse -inf (or the sink).
template <class OUT, bool FP8, int D>
__device__ __forceinline__ void write_rows(const DecodeParams& p, const QueryBlock& qb, const BlockRows& rows,
                                           int first_row, const WarpState<D>& st, float out_scale) {
  typedef typename OUT::storage OS;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = st.l[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = first_row + lane / 4 + 8 * r;
    if (row >= qb.rows) continue;
    const int head = rows.head(row);
    const i64 tok = qb.q_start + rows.token(row);
    const float m = st.m[r];
    const float sink2 = p.sinks ? p.sinks[head] * kLog2e : neg_inf();
    const float top = fmaxf(m, sink2);  // both -inf: no key and no sink
    const float f = m == neg_inf() ? 0.f : fast_exp2(m - top);
    const float denom = top == neg_inf() ? 0.f : l * f + (p.sinks ? fast_exp2(sink2 - top) : 0.f);
    const float inv = denom > 0.f ? f * out_scale / denom : 0.f;
    OS* o = static_cast<OS*>(p.out) + i64(qb.seq) * p.o_stride_seq + tok * p.o_stride_tok + i64(head) * p.o_stride_head;
    for_each_output_pair<FP8>(st, r, [&](int d, float a, float b) {
      o[d] = from_float(OUT(), a * inv);
      o[d + 1] = from_float(OUT(), b * inv);
    });
    if (p.lse && lane % 4 == 0)
      p.lse[i64(qb.seq) * p.lse_stride_seq + tok * p.lse_stride_tok + head] =
          denom > 0.f ? (top + log2f(denom)) * kLn2 : neg_inf();
  }
}

// T: the query's type (fp16/bf16); KV: the cache's (T, or e4m3/e5m2).
template <class T, class KV, class OUT, int HEAD_DIM, int BLOCK_ROWS, int BLOCK_KEYS, int WARPS, int STAGES>
__global__ void __launch_bounds__(WARPS * 32) paged_prefill(const __grid_constant__ DecodeParams p) {
  typedef typename KV::storage KS;
  constexpr bool FP8 = is_fp8<KV>::value;
  constexpr int NT = WARPS * 32;
  constexpr int NS = BLOCK_KEYS / 16;  // 16-key slices of a tile
  static_assert(T::mma, "the prefill kernel runs on tensor cores: fp16 or bf16 queries");
  static_assert(FP8 || same_type<T, KV>::value, "the cache holds the query's dtype or fp8");
  static_assert(HEAD_DIM % 16 == 0 && HEAD_DIM <= kPrefillMaxHeadDim, "head dims: multiples of 16 up to 256");
  static_assert(BLOCK_ROWS == kPrefillWarpRows * WARPS, "each warp owns 16 query rows");
  static_assert(BLOCK_KEYS % 16 == 0 && BLOCK_KEYS >= 16, "key tiles of whole 16-key slices");
  static_assert(STAGES >= 2, "the pipeline needs two stages");
  constexpr PrefillSmem L = prefill_smem(HEAD_DIM, 2, KV::bytes, BLOCK_ROWS, BLOCK_KEYS, STAGES);
  static_assert(L.stage_bytes * STAGES >= 8 * (NT / 32) + 32, "the schedule's scratch fits the pipeline");
  typedef typename conditional<FP8, Fp8MmaMath<KV, HEAD_DIM, HEAD_DIM>, MmaMath<T, HEAD_DIM, HEAD_DIM>>::type Math;
  typedef TileLoader<KV, HEAD_DIM, HEAD_DIM, BLOCK_KEYS, NT> Loader;
  constexpr int ID_SLOTS = STAGES + 1;  // page ids are looked up a pipeline depth ahead

  extern __shared__ __align__(16) char smem[];
  char* q_smem = smem;
  int* ids_ring = reinterpret_cast<int*>(smem + L.q_bytes);
  char* pipe = smem + L.q_bytes + L.ids_bytes;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int kvh = blockIdx.x;

  // Every input may come from the previous kernel on the stream.
  wait_prior_grids();
  allow_dependent_grids();
  const QueryBlock qb = ragged_block<NT>(p, BLOCK_ROWS, blockIdx.y, pipe);
  if (qb.seq < 0) return;
  // Tokens past the table's capacity are ignored, as in the decode kernel.
  const int len = int(min(i64(max(qb.context_len, 0)), i64(p.max_blocks) << p.page_shift));
  const int first_pos = len - qb.q_len;  // position of query token 0 (< 0: early tokens see nothing)
  const BlockRows rows{qb.row0, p.group, kvh};
  auto window_lo = [&](int hi) { return p.window > 0 ? int(max(i64(0), i64(hi) + 1 - p.window)) : 0; };
  // The block's keys: from its first row's window start to its last row's
  // position. Keys in [common_lo, common_hi] are seen by every row.
  const int pos_first = first_pos + rows.token(0), pos_last = first_pos + rows.token(qb.rows - 1);
  const int key_begin = window_lo(pos_first), key_end = max(0, pos_last + 1);
  const int common_lo = window_lo(pos_last), common_hi = pos_first;
  const int tile0 = key_begin / BLOCK_KEYS * BLOCK_KEYS;  // tiles aligned to the key grid: fewer page crossings
  const int ntiles = key_end > key_begin ? (key_end - tile0 + BLOCK_KEYS - 1) / BLOCK_KEYS : 0;
  // fp8: dequantization folds into the logit scale and the output.
  const float qk_scale = p.k_scale ? p.scale * p.k_scale[kvh * p.k_scale_stride] : p.scale;
  const float out_scale = p.v_scale ? p.v_scale[kvh * p.v_scale_stride] : 1.f;

  const KS* k_head = static_cast<const KS*>(p.k) + i64(kvh) * p.k_stride_head;
  const KS* v_head = static_cast<const KS*>(p.v) + i64(kvh) * p.v_stride_head;
  const int* bt_row = p.block_tables + i64(qb.seq) * p.bt_stride;
  auto stage_k = [&](int t) { return pipe + (t % STAGES) * L.stage_bytes; };
  auto stage_v = [&](int t) { return pipe + (t % STAGES) * L.stage_bytes + BLOCK_KEYS * L.kv_pitch; };
  auto ids = [&](int t) { return ids_ring + (t % ID_SLOTS) * BLOCK_KEYS; };
  auto issue = [&](int t) {
    Loader::issue(p, k_head, v_head, HEAD_DIM, tile0 + t * BLOCK_KEYS, ids(t), smem_addr(stage_k(t)),
                  smem_addr(stage_v(t)), L.kv_pitch, L.kv_pitch);
  };

  // Prologue: the first tiles' table lookups and the query block in flight
  // together (the query by cp.async, in the first copy group).
  Loader first[STAGES];
#pragma unroll
  for (int t = 0; t < STAGES; ++t)
    if (t < ntiles) first[t].load_ids(p, bt_row, tile0 + t * BLOCK_KEYS, key_end);
  load_query_block<T, FP8, HEAD_DIM, BLOCK_ROWS, NT>(p, qb, rows, q_smem, L.q_pitch);
  unsigned masked_bits = 0;  // bit t % ID_SLOTS: this thread stored a masked id for tile t
#pragma unroll
  for (int t = 0; t < STAGES; ++t)
    if (t < ntiles) masked_bits |= unsigned(first[t].store_ids(ids(t))) << (t % ID_SLOTS);
  __syncthreads();  // page ids visible
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) {
    if (t < ntiles) issue(t);
    cp_async_commit();
  }

  // This lane's rows g and g + 8 of the warp; padding rows see nothing.
  WarpState<HEAD_DIM> st;
  st.init();
  int row_lo = 0x7fffffff;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp * kPrefillWarpRows + lane / 4 + 8 * r;
    st.hi[r] = row < qb.rows ? first_pos + rows.token(row) : -1;
    st.lo[r] = window_lo(st.hi[r]);
    if (row < qb.rows) row_lo = min(row_lo, st.lo[r]);
  }
  // The warp's key range: it skips the compute of tiles outside it (the
  // causal diagonal's upper part, the window's far side).
  const int warp_hi = warp_max(max(st.hi[0], st.hi[1])), warp_lo = warp_min(row_lo);
  const char* q_warp = q_smem + warp * kPrefillWarpRows * L.q_pitch;

  Math math;
  Loader loader;
  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait<STAGES - 2>();
    const int pos0 = tile0 + t * BLOCK_KEYS;
    const bool edge = pos0 + BLOCK_KEYS - 1 > common_hi || pos0 < common_lo;
    // Tile t visible to all, the stage refilled below no longer read, and
    // whether any key of tile t has a masked page.
    const bool masked = __syncthreads_or((masked_bits >> (t % ID_SLOTS)) & 1u) || edge;
    if (t == 0) math.prepare(q_warp, L.q_pitch);  // the query arrived with tile 0
    const int tn = t + STAGES - 1;
    if (tn < ntiles) issue(tn);
    cp_async_commit();
    const int t_ids = t + STAGES;  // the tile whose page ids are looked up now
    const bool more = t_ids < ntiles;
    if (more) loader.load_ids(p, bt_row, tile0 + t_ids * BLOCK_KEYS, key_end);

    if (pos0 <= warp_hi && pos0 + BLOCK_KEYS - 1 >= warp_lo) {
      float s[NS][2][4];
#pragma unroll
      for (int ks = 0; ks < NS; ++ks) math.scores(q_warp, L.q_pitch, stage_k(t), L.kv_pitch, ks * 16, 16, s[ks]);
      prefill_softmax<NS>(s, st, p, qk_scale, ids(t), pos0, masked);
#pragma unroll
      for (int ks = 0; ks < NS; ++ks) math.accumulate(st, s[ks], stage_v(t), L.kv_pitch, ks * 16, nullptr, HEAD_DIM);
    }
    if (more) {
      const unsigned bit = 1u << (t_ids % ID_SLOTS);
      masked_bits = loader.store_ids(ids(t_ids)) ? masked_bits | bit : masked_bits & ~bit;
    }
  }
  cp_async_wait<0>();  // nothing in flight when the CTA exits

  write_rows<OUT, FP8, HEAD_DIM>(p, qb, rows, warp * kPrefillWarpRows, st, out_scale);
}

}  // namespace pj
