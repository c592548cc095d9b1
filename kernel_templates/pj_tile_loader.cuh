// Gathers one tile of keys and values from the paged cache into shared memory.
//
// Each thread owns a fixed set of 16-byte chunks of the tile. Page numbers for
// the next tile are fetched one iteration ahead (into registers), so the
// block-table load is never on the path between two tiles' copies.
// Masked tokens (past the partition end, or whose block-table entry lies
// outside [0, num_blocks)) are zero-filled without touching global memory:
// garbage in unused slots (NaN, Inf) can never reach the output.
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

  int page[kPerThread];  // physical page of each owned chunk's token; -1 = masked

  // Block-table lookups for the tile starting at token `tile_begin`.
  __device__ __forceinline__ void fetch_pages(const DecodeParams& p, const int* bt_row, int tile_begin, int end) {
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int c = int(threadIdx.x) + j * NT;
      const int tok = tile_begin + c / kChunksPerRow;
      int pg = -1;
      if (c < kChunks && tok < end) {
        const int e = __ldg(bt_row + (tok >> p.page_shift));
        pg = (e >= 0 && e < p.num_blocks) ? e : -1;
      }
      page[j] = pg;
    }
  }

  // Issue the asynchronous copies of the tile whose pages were fetched last.
  // k_head / v_head already point at this CTA's KV head.
  __device__ __forceinline__ void issue(const DecodeParams& p, const S* k_head, const S* v_head, int tile_begin,
                                        char* k_smem, char* v_smem, unsigned char* flags, int row_pitch) const {
    const int slot_mask = (1 << p.page_shift) - 1;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int c = int(threadIdx.x) + j * NT;
      if (c >= kChunks) break;
      const int row = c / kChunksPerRow;
      const int col = c % kChunksPerRow;
      const int pg = page[j];
      const i64 slot = (tile_begin + row) & slot_mask;
      const i64 elem = i64(col) * kElemsPerChunk;
      const S* ksrc = pg >= 0 ? k_head + i64(pg) * p.k_stride_page + slot * p.k_stride_slot + elem : k_head;
      const S* vsrc = pg >= 0 ? v_head + i64(pg) * p.v_stride_page + slot * p.v_stride_slot + elem : v_head;
      const int bytes = pg >= 0 ? 16 : 0;
      const int off = row * row_pitch + col * 16;
      cp_async16(smem_addr(k_smem + off), ksrc, bytes);
      cp_async16(smem_addr(v_smem + off), vsrc, bytes);
      if (col == 0) flags[row] = pg >= 0 ? 1 : 0;
    }
  }
};

}  // namespace pj
