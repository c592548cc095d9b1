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
// Consts: the page shift's source (pj::DecodeConsts; the decode kernel's own).
template <class T, int HEAD_DIM, int DV, int TILE, int NT, class Consts = RuntimeConsts>
struct TileLoader {
  typedef typename T::storage S;
  static constexpr int kElemsPerChunk = 16 / T::bytes;
  static constexpr int kChunksK = HEAD_DIM / kElemsPerChunk;  // per row
  static constexpr int kChunksV = DV / kElemsPerChunk;
  static constexpr int kIdsPerThread = (TILE + NT - 1) / NT;

  // Physical page of token `tok`, or -1 when it is masked.
  static __device__ __forceinline__ int page_of(const DecodeParams& p, const int* bt_row, int tok, int end) {
    if (tok >= end) return -1;
    const int e = __ldg(bt_row + (tok >> Consts::page_shift(p)));
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
  // Stores the ids; returns whether any of this thread's tokens is masked.
  __device__ __forceinline__ bool store_ids(int* ids) const {
    bool masked = false;
#pragma unroll
    for (int j = 0; j < kIdsPerThread; ++j) {
      const int r = int(threadIdx.x) + j * NT;
      if (r < TILE) ids[r] = pending[j], masked |= pending[j] < 0;
    }
    return masked;
  }

  // Copies `kChunks` 16-byte chunks of each of the tile's rows: row r of the
  // tile from `head` (page ids[r], slot (tile_begin + r) mod page_size) into
  // shared memory at `dst` + r * pitch. With `head2` set, the same rows of a
  // second tensor go to `dst2` (keys and values share every page lookup).
  template <int kChunks, bool kTwo>
  static __device__ __forceinline__ void copy_rows(const S* head, unsigned stride_page, unsigned stride_slot,
                                                   const S* head2, unsigned stride_page2, unsigned stride_slot2,
                                                   int page_shift, int tile_begin, const int* ids, u32 dst, u32 dst2,
                                                   int pitch, int chunks) {
    const int slot_mask = (1 << page_shift) - 1;
    constexpr bool kRegular = NT % kChunks == 0 && (TILE * kChunks) % NT == 0;
    constexpr int kPerThread = (TILE * kChunks + NT - 1) / NT;
    if (kRegular && chunks == kChunks) {
      // Each thread keeps one column and walks rows NT / kChunks apart.
      const int col = int(threadIdx.x) % kChunks;
      const int row0 = int(threadIdx.x) / kChunks;
      const S* src = head + col * kElemsPerChunk;
      const S* src2 = head2 + col * kElemsPerChunk;
      const u32 d0 = dst + u32(row0 * pitch + col * 16), d1 = dst2 + u32(row0 * pitch + col * 16);
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) {
        const int row = row0 + j * (NT / kChunks);
        const int pg = ids[row];
        const unsigned slot = unsigned(tile_begin + row) & unsigned(slot_mask);
        const int bytes = pg >= 0 ? 16 : 0;
        const unsigned page = pg >= 0 ? unsigned(pg) : 0u;
        cp_async16(d0 + u32(j * (NT / kChunks) * pitch), src + wide(page, stride_page) + wide(slot, stride_slot),
                   bytes);
        if (kTwo)
          cp_async16(d1 + u32(j * (NT / kChunks) * pitch), src2 + wide(page, stride_page2) + wide(slot, stride_slot2),
                     bytes);
      }
      return;
    }
    for (int c = int(threadIdx.x); c < TILE * chunks; c += NT) {
      const int row = c / chunks, col = c % chunks;
      const int pg = ids[row];
      const i64 slot = (tile_begin + row) & slot_mask;
      const i64 page = pg >= 0 ? pg : 0;
      const u32 off = u32(row * pitch + col * 16);
      const int bytes = pg >= 0 ? 16 : 0;
      cp_async16(dst + off, head + page * stride_page + slot * stride_slot + col * kElemsPerChunk, bytes);
      if (kTwo) cp_async16(dst2 + off, head2 + page * stride_page2 + slot * stride_slot2 + col * kElemsPerChunk, bytes);
    }
  }

  // Register staging: plain 16-byte loads (one L2 request per sector; the
  // cp.async path above makes about 1.5 per sector) held in registers across
  // one tile's compute, then stored to shared memory. Only where every
  // thread has the same whole rows' columns of K and V (pj::register_stage_fits).
  static constexpr bool kRegStage = register_stage_fits(HEAD_DIM, DV, T::bytes, TILE, NT);
  static constexpr int kRegRows = kRegStage ? TILE * kChunksK / NT : 1;
  struct Regs {
    uint4 k[kRegRows], v[kRegRows];
  };
  static __device__ __forceinline__ void load_regs(const DecodeParams& p, const S* k_head, const S* v_head,
                                                   int tile_begin, const int* ids, Regs& r) {
    const int col = int(threadIdx.x) % kChunksK, row0 = int(threadIdx.x) / kChunksK;
    const unsigned slot_mask = (1u << Consts::page_shift(p)) - 1u;
#pragma unroll
    for (int j = 0; j < kRegRows; ++j) {
      const int row = row0 + j * (NT / kChunksK);
      const int pg = ids[row];
      const unsigned slot = unsigned(tile_begin + row) & slot_mask;
      if (pg >= 0) {
        r.k[j] = ld_stream16(k_head + wide(unsigned(pg), p.k_stride_page) + wide(slot, p.k_stride_slot) +
                             col * kElemsPerChunk);
        r.v[j] = ld_stream16(v_head + wide(unsigned(pg), p.v_stride_page) + wide(slot, p.v_stride_slot) +
                             col * kElemsPerChunk);
      } else {
        r.k[j] = r.v[j] = make_uint4(0u, 0u, 0u, 0u);
      }
    }
  }
  static __device__ __forceinline__ void store_regs(const Regs& r, u32 k_smem, u32 v_smem, int pitch) {
    const int col = int(threadIdx.x) % kChunksK, row0 = int(threadIdx.x) / kChunksK;
#pragma unroll
    for (int j = 0; j < kRegRows; ++j) {
      const u32 off = u32((row0 + j * (NT / kChunksK)) * pitch + col * 16);
      st_shared16(k_smem + off, r.k[j]);
      st_shared16(v_smem + off, r.v[j]);
    }
  }

  // Issue the asynchronous copies of one tile whose page ids are in `ids`.
  // v_head points at this CTA's first output dim; dv_len <= DV dims are loaded.
  static __device__ __forceinline__ void issue(const DecodeParams& p, const S* k_head, const S* v_head, int dv_len,
                                               int tile_begin, const int* ids, u32 k_smem, u32 v_smem, int k_pitch,
                                               int v_pitch) {
    if constexpr (DV == HEAD_DIM) {  // same row pitch: one walk over the rows for both
      copy_rows<kChunksK, true>(k_head, p.k_stride_page, p.k_stride_slot, v_head, p.v_stride_page, p.v_stride_slot,
                                Consts::page_shift(p), tile_begin, ids, k_smem, v_smem, k_pitch, kChunksK);
      return;
    }
    copy_rows<kChunksK, false>(k_head, p.k_stride_page, p.k_stride_slot, nullptr, 0, 0, Consts::page_shift(p),
                               tile_begin, ids, k_smem, 0, k_pitch, kChunksK);
    copy_rows<kChunksV, false>(v_head, p.v_stride_page, p.v_stride_slot, nullptr, 0, 0, Consts::page_shift(p),
                               tile_begin, ids, v_smem, 0, v_pitch, dv_len / kElemsPerChunk);
  }
};

}  // namespace pj
