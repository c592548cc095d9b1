// Paged-attention decode: one CTA per (KV head, row chunk, output-dim chunk)
// x sequence x partition.
//
// The CTA computes every query row of its GQA group (query heads x query
// tokens, up to 16) against each key/value it loads, so the cache is read once
// per KV head. Tiles of TILE
// tokens stream through a STAGES-deep cp.async pipeline; each of the WARPS
// warps takes a 16-token multiple of every tile (and, with more warps than
// 16-token slices, a part of the output dims: pj::dim_split) and keeps its
// own online softmax state, and the warps merge once at the end. MERGE says how a
// sequence's partitions combine (pj::Merge): one partition writes the final
// output; otherwise fp32 partials that the last partition to finish reduces
// by log-sum-exp, or a cluster's shared memory. Head dims above 256 are cut into DV-dim output
// chunks (each CTA still reads whole keys), which bounds the accumulator.
#pragma once
#include "pj_params.cuh"
#include "pj_ptx.cuh"
#include "pj_schedule.cuh"
#include "pj_tile_loader.cuh"
#include "pj_warp_attention.cuh"

namespace pj {

// Four output elements of one row (query head `head`, query token `tok`:
// the packed row of a ragged call), and (with_lse) its natural-log sum-exp
// from the log2-domain value. A sink joins the denominator here, once the
// row's partitions are merged: it scales the output by l / (l + e^sink).
template <class OUT>
__device__ __forceinline__ void write_output(const DecodeParams& p, int seq, int head, int tok, int d, float4 v,
                                             bool with_lse, float lse2) {
  const float sink2 = p.sinks ? p.sinks[head] * kLog2e : neg_inf();
  const float top = fmaxf(lse2, sink2);
  if (p.sinks && top != neg_inf()) {  // (a sink of -inf is no sink)
    const float total = top + log2f(exp2f(lse2 - top) + exp2f(sink2 - top));
    const float f = exp2f(lse2 - total);  // 0 for a row with no key
    v.x *= f, v.y *= f, v.z *= f, v.w *= f;
    lse2 = total;
  }
  typename OUT::storage* o = static_cast<typename OUT::storage*>(p.out) + i64(seq) * p.o_stride_seq +
                             i64(tok) * p.o_stride_tok + i64(head) * p.o_stride_head + d;
  o[0] = from_float(OUT(), v.x);
  o[1] = from_float(OUT(), v.y);
  o[2] = from_float(OUT(), v.z);
  o[3] = from_float(OUT(), v.w);
  if (with_lse && p.lse) p.lse[i64(seq) * p.lse_stride_seq + i64(tok) * p.lse_stride_tok + head] = lse2 * kLn2;
}

// Log-sum-exp merge of the `n` partial results of a row's four output dims
// (each normalized, with its log2-domain sum-exp), in partition order, so the
// result does not depend on which partition finished last or where the
// partials live (global memory or the cluster's shared memory). One pass with
// a running maximum, kBatch partials at a time: their loads are independent,
// so the merge waits ceil(n / kBatch) memory trips instead of 2n/4 for a
// max-then-sum over a loop unrolled by four (32 partitions: 4 trips, not 16).
template <class Lse, class O>
__device__ __forceinline__ float4 merge_partials(int n, Lse lse_of, O o_of, float& lse2) {
  constexpr int kBatch = 8;
  float mx = neg_inf(), sum = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 1
  for (int s0 = 0; s0 < n; s0 += kBatch) {
    float l[kBatch];
    float4 o[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const bool in = s0 + j < n;
      l[j] = in ? lse_of(s0 + j) : neg_inf();
      o[j] = in ? o_of(s0 + j) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float m2 = mx;
#pragma unroll
    for (int j = 0; j < kBatch; ++j) m2 = fmaxf(m2, l[j]);
    // While every partition so far is empty, weigh against 0: all weights are
    // 0, and a NaN partial (NaN scores leave lse -inf) still reaches the
    // output, as it does unsplit. Otherwise the same bits as skipping.
    const float base = m2 == neg_inf() ? 0.f : m2;
    const float r = fast_exp2(mx - base);  // 0 while mx is -inf
    sum *= r, acc.x *= r, acc.y *= r, acc.z *= r, acc.w *= r;
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const float w = fast_exp2(l[j] - base);  // 0 for an empty partition (its o is 0 too)
      sum += w;
      acc.x += w * o[j].x, acc.y += w * o[j].y, acc.z += w * o[j].z, acc.w += w * o[j].w;
    }
    mx = m2;
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  acc.x *= inv, acc.y *= inv, acc.z *= inv, acc.w *= inv;
  lse2 = sum > 0.f ? mx + log2f(sum) : neg_inf();
  return acc;
}

// The decode kernel's compile-time shape and its steps. T: the query's type;
// KV: the cache's (T, or an fp8 format with T fp16/bf16). PAGE_SHIFT, GROUP,
// SPLITS: launch values compiled in, or unset (read from DecodeParams):
// pj::DecodeConsts.
template <class T, class KV, class OUT, int HEAD_DIM, int DV, int TILE, int WARPS, int STAGES, bool MMA, Merge MERGE,
          Schedule SCHEDULE, int PAGE_SHIFT, int GROUP, int SPLITS>
struct DecodeKernel {
  typedef typename T::storage S;
  typedef typename KV::storage KS;
  static constexpr bool FP8 = is_fp8<KV>::value;
  static constexpr int NT = WARPS * 32;
  static constexpr int DSPLIT = dim_split(TILE, WARPS);   // warp groups that split the output dims (pj_params.cuh)
  static constexpr int TOKEN_WARPS = WARPS / DSPLIT;      // warps that share out a tile's tokens
  static constexpr int WARP_TOKENS = TILE / TOKEN_WARPS;  // tokens per warp per tile
  static constexpr int WARP_DIMS = DV / DSPLIT;           // output dims per warp
  static constexpr bool CLUSTER = MERGE == Merge::cluster;
  static constexpr bool DEVICE_SCHEDULE = SCHEDULE == Schedule::device;
  static_assert(HEAD_DIM % 16 == 0 && DV % 16 == 0 && DV <= HEAD_DIM, "dims must be multiples of 16");
  static_assert(HEAD_DIM <= kMaxHeadDim, "head dims up to kMaxHeadDim");
  static_assert(tile_shape_ok(TILE, WARPS), "each warp takes whole 16-token slices");
  static_assert(dim_split_ok(TILE, WARPS, DV, MMA), "a dim split needs MMA and whole 16-dim steps per warp");
  static_assert(STAGES >= 2, "the pipeline needs two stages");
  static_assert(FP8 ? (MMA && T::mma) : same_type<T, KV>::value, "fp8 caches need an fp16/bf16 query and MMA");
  static_assert(!MMA || T::mma, "tensor-core path needs fp16 or bf16");
  static_assert(!DEVICE_SCHEDULE || MERGE == Merge::global, "device-scheduled partitions merge through global memory");
  static_assert(SPLITS == kUnsetSplits || (!DEVICE_SCHEDULE && (MERGE == Merge::none) == (SPLITS == 1)),
                "a fixed split count: the host schedule's, 1 exactly when unmerged");
  typedef DecodeConsts<PAGE_SHIFT, GROUP, SPLITS> Consts;
  // The shared-memory layout (pj_params.cuh), a local constant in each step
  // that needs it: as a static member its fields would be loads from a
  // global that the compiler folds later, which changes the generated code.
  static constexpr DecodeSmem smem_layout() {
    return decode_smem(HEAD_DIM, DV, FP8 ? 2 : T::bytes, KV::bytes, TILE, WARPS, STAGES, !MMA);
  }
  typedef typename conditional<
      FP8, Fp8MmaMath<KV, HEAD_DIM, WARP_DIMS>,
      typename conditional<MMA, MmaMath<T, HEAD_DIM, WARP_DIMS>, SimtMath<T, HEAD_DIM, WARP_DIMS>>::type>::type Math;

  // Where a thread works: its warp's share of each tile, and the CTA's KV
  // head, row chunk and output-dim chunk (grid x).
  struct Cta {
    int tid, warp, lane;
    int twarp, dpart;  // token slice and dim part of this warp
    int dv_chunk, kvh;
    int dv0, dv_len;  // the chunk's first dim and its real dims
    int dw_len;       // this warp's real dims
    int r0, grow0;    // first row: among the KV head's rows, and among the sequence's
    // Rows are (query token, query head) pairs, token-major: row `row` of
    // this CTA is query head head(row) of query token tok(row).
    __device__ __forceinline__ int head(const DecodeParams& p, int row) const {
      return kvh * Consts::group(p) + (r0 + row) % Consts::group(p);
    }
    __device__ __forceinline__ int tok(const DecodeParams& p, int row) const { return (r0 + row) / Consts::group(p); }
  };

  static __device__ __forceinline__ Cta coordinates(const DecodeParams& p) {
    Cta c;
    c.tid = threadIdx.x, c.warp = c.tid / 32, c.lane = c.tid % 32;
    c.twarp = c.warp % TOKEN_WARPS, c.dpart = c.warp / TOKEN_WARPS;
    // Output-dim chunks of one row chunk are adjacent: they read the same keys,
    // so the second read mostly hits L2.
    c.dv_chunk = blockIdx.x % p.dv_chunks;
    const int row_chunk = (blockIdx.x / p.dv_chunks) % p.row_chunks;
    c.kvh = blockIdx.x / (p.dv_chunks * p.row_chunks);
    c.dv0 = c.dv_chunk * DV;
    c.dv_len = min(DV, HEAD_DIM - c.dv0);
    c.dw_len = DSPLIT == 1 ? c.dv_len : max(0, min(WARP_DIMS, c.dv_len - c.dpart * WARP_DIMS));
    // Rows of this KV head: (query token, query head) pairs, token-major, so a
    // sequence with fewer tokens than the call's bound q_len has its rows
    // first; this CTA takes rows [r0, r0 + nrows).
    // (Consts::group(p) and Consts::num_splits(p) are read where used, as
    // p.group and p.num_splits were: unset, the kernel's code is unchanged.)
    const int kv_rows = Consts::group(p) * p.q_len;
    c.r0 = row_chunk * p.rows_per_cta;
    c.grow0 = c.kvh * kv_rows + c.r0;
    return c;
  }

  // This CTA's work: its sequence and partition, and its rows.
  struct Work {
    WorkItem item;         // the work item (host schedule: sequence, partition, length and query tokens)
    int seq, split, slot;  // slot: the sequence's first partial slot (device schedule)
    int q_len, q_first;    // the sequence's query tokens; packed row of token 0 (ragged)
    int nrows;             // this CTA's rows: [r0, r0 + nrows) of its KV head
  };

  // Fills `w`; false: this CTA has nothing to do (and may leave before any
  // barrier). Host schedule: grid y is the sequence, z the partition. Device
  // schedule: grid y is a work item, planned here from the lengths
  // (pj_schedule.cuh; `pipe` is its scratch shared memory).
  static __device__ __forceinline__ bool plan(const DecodeParams& p, const Cta& c, char* pipe, Work& w) {
    WorkItem item{int(blockIdx.y), int(blockIdx.z), 0, 0, 0, 0, 0};
    if constexpr (DEVICE_SCHEDULE) {
      item = plan_work_item<NT, TILE, Consts>(p, blockIdx.y, pipe);
      if (item.seq < 0) return false;
    } else {
      if (p.seq_count && item.seq >= active_seqs(p)) return false;
      item.length = p.context_lens[item.seq];
      item.q_len = min(query_rows(p, item.seq).len, p.q_len);
    }
    w.seq = item.seq;
    w.split = item.part;
    w.slot = item.slot;
    w.q_len = item.q_len;
    w.q_first = p.query_start ? query_rows(p, w.seq).first : 0;
    // Every partition of this (sequence, row chunk) leaves alike, before any
    // barrier or count, when its rows are past the sequence's tokens.
    w.nrows = min(p.rows_per_cta, Consts::group(p) * w.q_len - c.r0);
    if (w.nrows <= 0) return false;
    w.item = item;
    return true;
  }

  // The query rows of this CTA (kTileRows, padding rows repeat the last real
  // one or are zero) into q_smem, in the cp.async group of the first tiles.
  static __device__ __forceinline__ void load_query(const DecodeParams& p, const Cta& c, const Work& w, char* q_smem) {
    constexpr DecodeSmem L = smem_layout();
    const S* q_seq = static_cast<const S*>(p.q) + i64(w.seq) * p.q_stride_seq + i64(w.q_first) * p.q_stride_tok;
    auto q_row = [&](int r) {  // padding rows repeat the last real one
      const int row = min(r, w.nrows - 1);
      return q_seq + i64(c.tok(p, row)) * p.q_stride_tok + i64(c.head(p, row)) * p.q_stride_head;
    };
    if constexpr (FP8) {
      // Widened to fp16 (clamped to its range) and stored in Fp8MmaMath's order;
      // the first barrier below publishes it.
      for (int i = c.tid; i < kTileRows * (HEAD_DIM / 4); i += NT) {
        const int r = i / (HEAD_DIM / 4), d = (i % (HEAD_DIM / 4)) * 4;
        const S* src = q_row(r) + d;
        float x[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) x[j] = r < w.nrows ? fminf(fmaxf(to_float(T(), src[j]), -65504.f), 65504.f) : 0.f;
        char* row = q_smem + r * L.q_pitch;
        *reinterpret_cast<u32*>(row + 2 * fp8_query_pos(d)) = pack2(f16(), x[0], x[1]);
        *reinterpret_cast<u32*>(row + 2 * fp8_query_pos(d + 2)) = pack2(f16(), x[2], x[3]);
      }
    } else {
      constexpr int CHUNKS_PER_ROW = HEAD_DIM * T::bytes / 16;
      const u32 q_base = smem_addr(q_smem);
      for (int i = c.tid; i < kTileRows * CHUNKS_PER_ROW; i += NT) {
        const int r = i / CHUNKS_PER_ROW, col = i % CHUNKS_PER_ROW;  // padding rows are zero-filled
        cp_async16(q_base + u32(r * L.q_pitch + col * 16), q_row(r) + col * (16 / T::bytes), r < w.nrows ? 16 : 0);
      }
    }
  }

  // A partial's index: host schedule [seq][row][split], device schedule
  // [slot][row] with the sequence's partitions in consecutive slots.
  static __device__ __forceinline__ i64 partial(const DecodeParams& p, const Cta& c, const Work& w, int row, int sp) {
    if constexpr (DEVICE_SCHEDULE) return i64(w.slot + sp) * p.num_heads * p.q_len + c.grow0 + row;
    return (i64(w.seq) * p.num_heads * p.q_len + c.grow0 + row) * Consts::num_splits(p) + sp;
  }

  // Merge::cluster: cluster rank = split (cluster dims 1 x 1 x num_splits).
  // Each CTA merges a slice of the rows' 4-dim groups from every partition's
  // shared memory (c_o, c_lse: this CTA's result, [row][DV] and [row]) and
  // writes the output.
  static __device__ __forceinline__ void cluster_merge(const DecodeParams& p, const Cta& c, const Work& w, int active,
                                                       const float* c_o, const float* c_lse) {
    cluster_sync();
    const u32 o_local = smem_addr(c_o), lse_local = smem_addr(c_lse);
    for (int idx = w.split * NT + c.tid; idx < w.nrows * (c.dv_len / 4); idx += NT * Consts::num_splits(p)) {
      const int row = idx / (c.dv_len / 4);
      const int dl = (idx % (c.dv_len / 4)) * 4;
      float lse2;
      const float4 acc = merge_partials(
          active, [&](int sp) { return ld_cluster_f32(cluster_addr(lse_local + u32(row * 4), u32(sp))); },
          [&](int sp) { return ld_cluster_f32x4(cluster_addr(o_local + u32((row * DV + dl) * 4), u32(sp))); }, lse2);
      write_output<OUT>(p, w.seq, c.head(p, row), w.q_first + c.tok(p, row), c.dv0 + dl, acc,
                        c.dv_chunk == 0 && dl == 0, lse2);
    }
    cluster_sync();  // no CTA leaves while another reads its shared memory
  }

  // Merge::global with more than one partition: the last partition of this
  // (sequence, head chunk, dim chunk) to finish merges all of them, in split
  // order (deterministic whoever is last), and writes the output.
  static __device__ __forceinline__ void merge_last_partition(const DecodeParams& p, const Cta& c, const Work& w,
                                                              int active) {
    __shared__ bool last;
    __threadfence();  // this CTA's partials visible device-wide before the count
    __syncthreads();
    unsigned* counter = p.counters + i64(w.seq) * gridDim.x + blockIdx.x;
    if (c.tid == 0) {
      last = atomicAdd(counter, 1u) == unsigned(active - 1);
      if (last) *counter = 0u;  // ready for the next call on the stream
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int idx = c.tid; idx < w.nrows * (c.dv_len / 4); idx += NT) {
      const int row = idx / (c.dv_len / 4);
      const int dl = (idx % (c.dv_len / 4)) * 4;
      const int d = c.dv0 + dl;
      float lse2;
      const float4 acc = merge_partials(
          active, [&](int sp) { return __ldcg(p.part_lse + partial(p, c, w, row, sp) * p.dv_chunks + c.dv_chunk); },
          [&](int sp) {
            return __ldcg(reinterpret_cast<const float4*>(p.part_o + partial(p, c, w, row, sp) * HEAD_DIM + d));
          },
          lse2);
      write_output<OUT>(p, w.seq, c.head(p, row), w.q_first + c.tok(p, row), d, acc, c.dv_chunk == 0 && dl == 0, lse2);
    }
  }
};
// One CTA per (KV head, row chunk, output-dim chunk) x sequence x partition.
// Its steps, top to bottom: the CTA's coordinates (DecodeKernel::coordinates)
// -> its work item and rows (plan) -> its partition of the sequence -> the
// prologue (first page-id lookups, load_query, first copies) -> the main loop
// over tiles (stage/issue, scores, online softmax, accumulate) -> the warps'
// merge -> the epilogue (output or partial; cluster_merge or
// merge_last_partition). The partition, prologue, main loop, warps' merge and
// the write of the CTA's result are still inline: as functions each changed
// the generated PTX (register use, address arithmetic), which this refactor
// was not to change.
template <class T, class KV, class OUT, int HEAD_DIM, int DV, int TILE, int WARPS, int STAGES, bool MMA, Merge MERGE,
          Schedule SCHEDULE, int PAGE_SHIFT, int GROUP, int SPLITS>
__global__ void __launch_bounds__(WARPS * 32) paged_decode(const __grid_constant__ DecodeParams p) {
  typedef DecodeKernel<T, KV, OUT, HEAD_DIM, DV, TILE, WARPS, STAGES, MMA, MERGE, SCHEDULE, PAGE_SHIFT, GROUP, SPLITS>
      K;
  typedef typename K::KS KS;
  constexpr bool FP8 = K::FP8;
  constexpr int NT = K::NT;
  constexpr int TOKEN_WARPS = K::TOKEN_WARPS;
  constexpr int WARP_TOKENS = K::WARP_TOKENS;
  constexpr int WARP_DIMS = K::WARP_DIMS;
  constexpr bool CLUSTER = K::CLUSTER;
  constexpr bool DEVICE_SCHEDULE = K::DEVICE_SCHEDULE;
  typedef typename K::Consts Consts;
  typedef typename K::Math Math;
  constexpr DecodeSmem L = K::smem_layout();
  extern __shared__ __align__(16) char smem[];
  char* q_smem = smem;
  float* p_tiles = reinterpret_cast<float*>(smem + L.q_bytes);
  int* ids_ring = reinterpret_cast<int*>(smem + L.q_bytes + L.ptile_bytes);
  char* pipe = smem + L.q_bytes + L.ptile_bytes + L.ids_bytes;

  const auto c = K::coordinates(p);
  const int tid = c.tid, warp = c.warp, lane = c.lane, twarp = c.twarp, dpart = c.dpart;
  const int dv_chunk = c.dv_chunk, kvh = c.kvh, dv0 = c.dv0, dv_len = c.dv_len, dw_len = c.dw_len;
  auto head_of = [&](int row) { return c.head(p, row); };
  auto tok_of = [&](int row) { return c.tok(p, row); };

  // Every input may come from the previous kernel on the stream; this CTA is
  // resident by now, so a programmatic launch has already hidden its start.
  wait_prior_grids();
  allow_dependent_grids();
  typename K::Work w;
  if (!K::plan(p, c, pipe, w)) return;
  const int seq = w.seq, split = w.split, q_len = w.q_len, q_first = w.q_first, nrows = w.nrows;
  const SeqSpan sspan = seq_span<Consts>(p, w.item.length, q_len);
  const int len = sspan.len, start = sspan.start;
  const int last_common = len - q_len + 1;  // positions below it are seen by every token (window aside)
  // Partitions of this sequence: the work item's, a fixed length, or its span
  // cut evenly. Only the first `active` are non-empty; with at most one, it
  // writes the output directly. Otherwise each writes an fp32 partial and the
  // last to finish merges them (no second launch).
  const int span = len - start;
  const int per = DEVICE_SCHEDULE ? w.item.per
                  : p.chunk_tokens > 0
                      ? p.chunk_tokens
                      : ((span + Consts::num_splits(p) - 1) / Consts::num_splits(p) + TILE - 1) / TILE * TILE;
  const int active = span <= 0         ? 0
                     : DEVICE_SCHEDULE ? w.item.parts
                                       : min(Consts::num_splits(p), (span + per - 1) / per);
  // An empty partition has nothing to do, except in a cluster: it stays for
  // the cluster's barriers (with no tiles: begin >= end below). Merge::none
  // kernels run with one partition (num_splits == 1), so active <= 1 there.
  if (split >= max(active, 1) && !CLUSTER) return;
  const int begin = start + split * per;
  const int end = split == active - 1 ? len : min(len, begin + per);
  const int ntiles = begin < end ? (end - begin + TILE - 1) / TILE : 0;
  // fp8: dequantization folds into the logit scale and the output.
  const float qk_scale = p.k_scale ? p.scale * p.k_scale[kvh * p.k_scale_stride] : p.scale;
  const float out_scale = p.v_scale ? p.v_scale[kvh * p.v_scale_stride] : 1.f;

  const KS* k_head = static_cast<const KS*>(p.k) + i64(kvh) * p.k_stride_head;
  const KS* v_head = static_cast<const KS*>(p.v) + i64(kvh) * p.v_stride_head + dv0;
  const int* bt_row = p.block_tables + i64(seq) * p.bt_stride;

  typedef TileLoader<KV, HEAD_DIM, DV, TILE, NT, Consts> Loader;
  // REGISTER_STAGED (pj::register_staged): tiles after the first STAGES - 1
  // go global -> registers -> shared: loaded an iteration ahead, stored once
  // the stage is free. Their page ids are then needed one iteration earlier:
  // one more ring slot. L2 sees one request per sector instead of ~1.5, which
  // buys read bandwidth (docs/performance.md, v0.8). Not for fp8 (the
  // registers cost CTAs an SM: slower than cp.async) nor for a warp
  // accumulating more than 128 dims (they spill there; 256-dim heads stage
  // with a dim split).
  constexpr bool REGISTER_STAGED = register_staged(MMA, FP8, HEAD_DIM, DV, KV::bytes, TILE, WARPS);
  constexpr int kFirst = STAGES + (REGISTER_STAGED ? 1 : 0);  // tiles whose page ids the prologue looks up
  constexpr int ID_SLOTS = STAGES + 1 + (REGISTER_STAGED ? 1 : 0);
  Loader loader;
  typename Loader::Regs regs;
  auto stage_k = [&](int t) { return pipe + (t % STAGES) * L.stage_bytes; };
  auto stage_v = [&](int t) { return pipe + (t % STAGES) * L.stage_bytes + TILE * L.row_pitch; };

  // Page ids of tile t live in slot t % ID_SLOTS: written a pipeline depth
  // before the copies that read them, kept until the tile's compute is done.
  auto ids = [&](int t) { return ids_ring + (t % ID_SLOTS) * TILE; };
  auto issue = [&](int t) {
    Loader::issue(p, k_head, v_head, dv_len, begin + t * TILE, ids(t), smem_addr(stage_k(t)), smem_addr(stage_v(t)),
                  L.row_pitch, L.v_pitch);
  };

  // Prologue, latency first: the block-table lookups of the first tiles and
  // the query rows are all in flight together (the query by cp.async, in the
  // first copy group), so a CTA waits for two dependent memory trips (table,
  // then pages) rather than four. (Issuing the lookups together with the
  // length, guessing where the partition starts, measured slower on the tiny
  // call: docs/performance.md, v0.9.)
  Loader first[kFirst];
#pragma unroll
  for (int t = 0; t < kFirst; ++t)
    if (t < ntiles) first[t].load_ids(p, bt_row, begin + t * TILE, end);
  K::load_query(p, c, w, q_smem);
  // Bit t % ID_SLOTS: this thread stored a masked id for tile t.
  unsigned masked_bits = 0;
#pragma unroll
  for (int t = 0; t < kFirst; ++t)
    if (t < ntiles) masked_bits |= unsigned(first[t].store_ids(ids(t))) << (t % ID_SLOTS);
  __syncthreads();  // page ids visible
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) {
    if (t < ntiles) issue(t);
    cp_async_commit();
  }
  if constexpr (REGISTER_STAGED) {
    if (STAGES - 1 < ntiles) Loader::load_regs(p, k_head, v_head, begin + (STAGES - 1) * TILE, ids(STAGES - 1), regs);
  }

  Math math;
  WarpState<WARP_DIMS> st;
  st.init();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int tok = tok_of(min(lane / 4 + 8 * r, nrows - 1));
    st.hi[r] = len - q_len + tok;
    st.lo[r] = p.window > 0 ? st.hi[r] + 1 - p.window : 0;
  }

  for (int t = 0; t < ntiles; ++t) {
    if constexpr (REGISTER_STAGED) {
      if (t == 0) cp_async_wait<0>();  // the prologue's tiles and the query
    } else {
      cp_async_wait<STAGES - 2>();
    }
    // Tile t visible to all; the stage refilled below is no longer read; and
    // whether any token of tile t is masked (usually only the last tile).
    const int pos0 = begin + t * TILE;
    // A multi-token query's tokens see different spans: tiles at either edge need per-row masks.
    const bool edge = q_len > 1 && (pos0 + TILE > last_common || (p.window > 0 && pos0 < start + q_len - 1));
    const bool masked = __syncthreads_or((masked_bits >> (t % ID_SLOTS)) & 1u) || edge;
    if (t == 0) math.prepare(q_smem, L.q_pitch);  // the query arrived with tile 0
    const int tn = t + STAGES - 1;
    if constexpr (REGISTER_STAGED) {
      // Tile tn arrived in registers during the last iteration; its stage
      // (that of tile t - 1) is free since the barrier above.
      if (tn < ntiles) Loader::store_regs(regs, smem_addr(stage_k(tn)), smem_addr(stage_v(tn)), L.row_pitch);
      if (tn + 1 < ntiles) Loader::load_regs(p, k_head, v_head, begin + (tn + 1) * TILE, ids(tn + 1), regs);
    } else {
      if (tn < ntiles) issue(tn);
      cp_async_commit();
    }
    const int t_ids = t + kFirst;  // the tile whose page ids are looked up now
    const bool more = t_ids < ntiles;
    if (more) loader.load_ids(p, bt_row, begin + t_ids * TILE, end);

#pragma unroll
    for (int ks = 0; ks < WARP_TOKENS / 16; ++ks) {
      const int tok0 = twarp * WARP_TOKENS + ks * 16;
      float sc[2][4];
      math.scores(q_smem, L.q_pitch, stage_k(t), L.row_pitch, tok0, nrows, sc);
      st.online_softmax(sc, p, qk_scale, ids(t), pos0, tok0, masked);
      math.accumulate(st, sc, stage_v(t) + dpart * WARP_DIMS * KV::bytes, L.v_pitch, tok0,
                      p_tiles + warp * kTileRows * 16, dw_len);
    }
    if (more) {
      const unsigned bit = 1u << (t_ids % ID_SLOTS);
      masked_bits = loader.store_ids(ids(t_ids)) ? masked_bits | bit : masked_bits & ~bit;
    }
  }

  // Merge the warps' states through shared memory (aliases the pipeline).
  cp_async_wait<0>();
  __syncthreads();
  float* m_buf = reinterpret_cast<float*>(pipe);
  float* l_buf = m_buf + WARPS * kTileRows;
  float* o_buf = l_buf + WARPS * kTileRows;
  {
    const int g = lane / 4, tig = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = st.l[r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      if (tig == 0) {
        m_buf[warp * kTileRows + g + 8 * r] = st.m[r];
        l_buf[warp * kTileRows + g + 8 * r] = l;
      }
    }
    Math::store_o(st, o_buf + warp * kTileRows * WARP_DIMS);
  }
  __syncthreads();

  const bool split_mode = MERGE == Merge::global && active > 1;
  // This CTA's result for its cluster, after the warps' merge buffers.
  float* c_o = o_buf + WARPS * kTileRows * DV;
  float* c_lse = c_o + kTileRows * DV;
  for (int idx = tid; idx < nrows * (dv_len / 4); idx += NT) {
    const int row = idx / (dv_len / 4);
    const int dl = (idx % (dv_len / 4)) * 4;      // within the chunk
    const int d = dv0 + dl;                       // within the head
    const int w0 = dl / WARP_DIMS * TOKEN_WARPS;  // the warps that hold these dims: w0 .. w0 + TOKEN_WARPS - 1
    float mx = neg_inf();
#pragma unroll
    for (int w = w0; w < w0 + TOKEN_WARPS; ++w) mx = fmaxf(mx, m_buf[w * kTileRows + row]);
    float l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (mx != neg_inf()) {
#pragma unroll
      for (int w = w0; w < w0 + TOKEN_WARPS; ++w) {
        const float f = fast_exp2(m_buf[w * kTileRows + row] - mx);
        l += l_buf[w * kTileRows + row] * f;
        const float4 o = *reinterpret_cast<const float4*>(o_buf + (w * kTileRows + row) * WARP_DIMS + dl % WARP_DIMS);
        acc.x += o.x * f, acc.y += o.y * f, acc.z += o.z * f, acc.w += o.w * f;
      }
    }
    const float inv = l > 0.f ? out_scale / l : 0.f;
    acc.x *= inv, acc.y *= inv, acc.z *= inv, acc.w *= inv;
    const float lse2 = l > 0.f ? mx + log2f(l) : neg_inf();  // log2 domain
    if constexpr (CLUSTER) {
      *reinterpret_cast<float4*>(c_o + row * DV + dl) = acc;
      if (dl == 0) c_lse[row] = lse2;
    } else if (split_mode) {
      const i64 part = K::partial(p, c, w, row, split);
      *reinterpret_cast<float4*>(p.part_o + part * HEAD_DIM + d) = acc;
      if (dl == 0) p.part_lse[part * p.dv_chunks + dv_chunk] = lse2;
    } else {
      write_output<OUT>(p, seq, head_of(row), q_first + tok_of(row), d, acc, dv_chunk == 0 && dl == 0, lse2);
    }
  }
  if constexpr (CLUSTER) {
    K::cluster_merge(p, c, w, active, c_o, c_lse);
  } else if constexpr (MERGE == Merge::global) {
    if (active > 1) K::merge_last_partition(p, c, w, active);
  }
}

}  // namespace pj
