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

// Keys are loaded whole (HEAD_DIM); values only the DV dims this CTA outputs.
template <class T, int HEAD_DIM, int DV, int TILE, int NT>
struct TileLoader {
  typedef typename T::storage S;
  static constexpr int kElemsPerChunk = 16 / T::bytes;
  static constexpr int kChunksK = HEAD_DIM / kElemsPerChunk;  // per row
  static constexpr int kChunksV = DV / kElemsPerChunk;
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

  // Copies `chunks_per_row` 16-byte chunks of each of the tile's rows from
  // `head` (this CTA's KV head, first dim) into `smem` rows of `pitch` bytes.
  template <int kPerRowMax>
  static __device__ __forceinline__ void copy_rows(const S* head, i64 stride_page, i64 stride_slot, int page_shift,
                                                   int tile_begin, const int* ids, char* smem, int pitch,
                                                   int chunks_per_row) {
    const int slot_mask = (1 << page_shift) - 1;
    constexpr int kPerThread = (TILE * kPerRowMax + NT - 1) / NT;
    const int chunks = TILE * chunks_per_row;
#pragma unroll 4
    for (int j = 0; j < kPerThread; ++j) {
      const int c = int(threadIdx.x) + j * NT;
      if (c >= chunks) break;
      const int row = c / chunks_per_row;
      const int col = c % chunks_per_row;
      const int pg = ids[row];
      const i64 slot = (tile_begin + row) & slot_mask;
      const S* src = pg >= 0 ? head + i64(pg) * stride_page + slot * stride_slot + i64(col) * kElemsPerChunk : head;
      cp_async16(smem_addr(smem + row * pitch + col * 16), src, pg >= 0 ? 16 : 0);
    }
  }

  // Issue the asynchronous copies of one tile whose page ids are in `ids`.
  // v_head points at this CTA's first output dim; dv_len <= DV dims are loaded.
  static __device__ __forceinline__ void issue(const DecodeParams& p, const S* k_head, const S* v_head, int dv_len,
                                               int tile_begin, const int* ids, char* k_smem, char* v_smem, int k_pitch,
                                               int v_pitch) {
    copy_rows<kChunksK>(k_head, p.k_stride_page, p.k_stride_slot, p.page_shift, tile_begin, ids, k_smem, k_pitch,
                        kChunksK);
    copy_rows<kChunksV>(v_head, p.v_stride_page, p.v_stride_slot, p.page_shift, tile_begin, ids, v_smem, v_pitch,
                        DV == HEAD_DIM ? kChunksV : dv_len / kElemsPerChunk);
  }
};

}  // namespace pj
