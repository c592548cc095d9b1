// Gathers one tile of keys and values from the paged cache into shared memory.
//
// Page ids of each tile are looked up once per token (not once per 16-byte
// chunk) into a shared-memory ring, a whole pipeline depth ahead of the
// copies that use them, so block-table loads never sit between two tiles.
// Masked tokens (past the partition end, or whose block-table entry lies
// outside [0, num_blocks)) get id -1 and are zero-filled without touching
// global memory: garbage in unused slots (NaN, Inf) never reaches the output.
#pragma once
#include "pj_params.cuh"
#include "pj_ptx.cuh"

namespace pj {

template <class T, int HEAD_DIM, int TILE, int NT>
struct TileLoader {
  typedef typename T::storage S;
  static constexpr int kElemsPerChunk = 16 / T::bytes;
  static constexpr int kChunksPerRow = HEAD_DIM / kElemsPerChunk;
  static constexpr int kChunks = TILE * kChunksPerRow;
  static constexpr int kPerThread = (kChunks + NT - 1) / NT;
  static constexpr int kIdsPerThread = (TILE + NT - 1) / NT;

  // Physical page of token `tok`, or -1 when it is masked.
  static __device__ __forceinline__ int page_of(const DecodeParams& p, const int* bt_row, int tok, int end) {
    if (tok >= end) return -1;
    const int e = __ldg(bt_row + (tok >> p.page_shift));
    return (e >= 0 && e < p.num_blocks) ? e : -1;
  }

  // Block-table lookups for the tile at `tile_begin`, held in registers until
  // store_ids (so their latency overlaps the compute of the current tile).
  int pending[kIdsPerThread];
  __device__ __forceinline__ void load_ids(const DecodeParams& p, const int* bt_row, int tile_begin, int end) {
#pragma unroll
    for (int j = 0; j < kIdsPerThread; ++j) {
      const int r = int(threadIdx.x) + j * NT;
      pending[j] = r < TILE ? page_of(p, bt_row, tile_begin + r, end) : -1;
    }
  }
  __device__ __forceinline__ void store_ids(int* ids) const {
#pragma unroll
    for (int j = 0; j < kIdsPerThread; ++j) {
      const int r = int(threadIdx.x) + j * NT;
      if (r < TILE) ids[r] = pending[j];
    }
  }

  // Issue the asynchronous copies of one tile whose page ids are in `ids`.
  // k_head / v_head already point at this CTA's KV head.
  static __device__ __forceinline__ void issue(const DecodeParams& p, const S* k_head, const S* v_head, int tile_begin,
                                               const int* ids, char* k_smem, char* v_smem, int row_pitch) {
    const int slot_mask = (1 << p.page_shift) - 1;
#pragma unroll 4
    for (int j = 0; j < kPerThread; ++j) {
      const int c = int(threadIdx.x) + j * NT;
      if (c >= kChunks) break;
      const int row = c / kChunksPerRow;
      const int col = c % kChunksPerRow;
      const int pg = ids[row];
      const i64 slot = (tile_begin + row) & slot_mask;
      const i64 elem = i64(col) * kElemsPerChunk;
      const S* ksrc = pg >= 0 ? k_head + i64(pg) * p.k_stride_page + slot * p.k_stride_slot + elem : k_head;
      const S* vsrc = pg >= 0 ? v_head + i64(pg) * p.v_stride_page + slot * p.v_stride_slot + elem : v_head;
      const int bytes = pg >= 0 ? 16 : 0;
      const int off = row * row_pitch + col * 16;
      cp_async16(smem_addr(k_smem + off), ksrc, bytes);
      cp_async16(smem_addr(v_smem + off), vsrc, bytes);
    }
  }
};

}  // namespace pj
