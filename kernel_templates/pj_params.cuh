// Launch parameters shared by the host engine and the kernels.
// This header is compiled twice: by NVRTC (device side) and by the host C++
// compiler (engine/src). Keeping one definition means the struct layout the
// host fills can never drift from the one the kernel reads.
#pragma once

namespace pj {

typedef long long i64;  // (pj_types.cuh has it too; the host includes only this header)

// Largest head dim a call may have (a multiple of 16; docs/contract.md).
constexpr int kMaxHeadDim = 512;

// Arguments of the decode kernel. Strides are in elements. The three cache
// layouts a caller may pass (CacheLayout: which axis holds blocks, heads and
// slots) reduce to (page, head, slot) strides, so the kernel never needs to
// know which layout the caller uses.
struct DecodeParams {
  const void* q;  // [seq][query token][head][dim]
  i64 q_stride_seq, q_stride_tok, q_stride_head;

  const void* k;
  const void* v;
  // Page and slot strides fit 31 bits (validated on the host): one 32x32->64
  // multiply per address. Head strides (applied once per CTA) may not.
  i64 k_stride_head, v_stride_head;
  unsigned k_stride_page, k_stride_slot;
  unsigned v_stride_page, v_stride_slot;

  const int* context_lens;
  const int* block_tables;
  i64 bt_stride;   // elements between two sequences' rows of the table
  int max_blocks;  // entries per row that may be used
  int num_blocks;  // physical pages in the cache: entries outside [0, num_blocks) are masked

  // fp8 caches: dequantization scales, indexed by KV head * stride (stride 0:
  // one per tensor); null = 1.
  const float* k_scale;
  const float* v_scale;
  int k_scale_stride, v_scale_stride;

  void* out;  // final output (num_splits == 1), the query's layout
  i64 o_stride_seq, o_stride_tok, o_stride_head;
  float* lse;  // natural-log sum-exp, [seq][query token][head], may be null
  i64 lse_stride_seq, lse_stride_tok;

  // Rows: one per (query head, query token), head-major within a sequence.
  float* part_o;       // [seq][row][split][head_dim] fp32 partial outputs (num_splits > 1)
  float* part_lse;     // [seq][row][split][dv_chunk] log2-domain sum-exp of each partial
  unsigned* counters;  // [seq][gridDim.x] finished partitions; zero between calls

  // Ragged calls (query_start non-null): sequence s owns the packed query
  // rows query_start[s] .. query_start[s + 1] (q_stride_seq, o_stride_seq and
  // lse_stride_seq are 0; q_len is the host's bound on them), and only the
  // first *seq_count sequences (null: num_seqs) are computed.
  const int* query_start;
  const int* seq_count;
  // [num_heads] logits joining each softmax denominator only; null: none.
  const float* sinks;
  int total_tokens;  // ragged calls: packed query rows (query_start values are clamped to it)

  int num_seqs;          // sequences in the batch (the device schedule's work items cover them all)
  int work_items;        // device schedule: target partitions per KV-head column (its items are balanced)
  int num_heads, group;  // query heads; query heads per KV head
  int q_len;             // query tokens per sequence; token i sees positions <= len - q_len + i
  int rows_per_cta;      // rows one CTA handles (<= 16)
  int row_chunks;        // CTAs per KV head = ceil(group * q_len / rows_per_cta)
  int dv_chunks;         // CTAs per row chunk, each writing up to DV output dims
  int page_shift;        // log2(page_size)
  int num_splits;        // partitions per sequence (grid.z)
  int chunk_tokens;      // > 0: fixed partition length; 0: len split evenly
  int window;            // > 0: attend only the last `window` tokens
  float scale;           // logits = scale * q.k
  float soft_cap;        // > 0: logits = cap * tanh(logits / cap)
};

// Launch values a decode kernel may have compiled in (its template arguments
// PAGE_SHIFT, GROUP and SPLITS: KernelSpec::page_shift, group and splits,
// EngineOptions::specialize). Unset (these values): the kernel reads them
// from DecodeParams. Set: the constant, which the host also passes in
// DecodeParams (so a kernel sees one value either way).
constexpr int kUnsetPageShift = -1;
constexpr int kUnsetGroup = 0;
constexpr int kUnsetSplits = 0;

// The one rule for the value a decode kernel (and every helper it calls) uses.
template <int PAGE_SHIFT, int GROUP, int SPLITS>
struct DecodeConsts {
  static_assert(PAGE_SHIFT >= kUnsetPageShift && PAGE_SHIFT <= 30, "a page shift in 0..30, or unset");
  static_assert(GROUP >= kUnsetGroup && SPLITS >= kUnsetSplits, "a positive group and split count, or unset");
  static constexpr int page_shift(const DecodeParams& p) {
    return PAGE_SHIFT != kUnsetPageShift ? PAGE_SHIFT : p.page_shift;
  }
  static constexpr int group(const DecodeParams& p) { return GROUP != kUnsetGroup ? GROUP : p.group; }
  static constexpr int num_splits(const DecodeParams& p) { return SPLITS != kUnsetSplits ? SPLITS : p.num_splits; }
};
// Every value from DecodeParams: the default, and what other kernels use.
typedef DecodeConsts<kUnsetPageShift, kUnsetGroup, kUnsetSplits> RuntimeConsts;

// How a decode kernel's partitions of one sequence combine, fixed at compile
// time so a kernel carries only the tail it runs (ptxas time falls by about a
// third for `none`, the common case): none (one partition writes the output),
// global (fp32 partials; the last partition to finish merges them) or cluster
// (the partitions are one thread-block cluster and merge through distributed
// shared memory: no partials, counters or workspace).
enum class Merge : int { none = 0, global = 1, cluster = 2 };

// Who cuts sequences into partitions. host: the plan, from shapes alone
// (grid y = sequence, grid z = partition). device: the decode kernel itself,
// from the lengths on the device, into work items of balanced size (grid y =
// work item; pj_schedule.cuh), so a ragged batch finishes evenly and a
// captured graph replayed with other lengths is balanced for those.
enum class Schedule : int { host = 0, device = 1 };

// Smallest partition worth its fp32 partial traffic and merge work (both
// schedules).
constexpr int kMinPartitionTokens = 128;

// Device schedule: each thread of a CTA plans for this many sequences at
// most, so a batch of up to this many x threads sequences can take it.
constexpr int kMaxScheduleSeqsPerThread = 16;
// Work items are dispatched longest first, sorted into this many size
// classes (a cheap longest-processing-time order: the tail is small items).
constexpr int kScheduleSizeClasses = 8;
// Work items per CTA slot of the GPU that a device schedule may aim at
// (KernelConfig::work_waves).
constexpr int kMaxWorkWaves = 16;

// Threads per CTA of merge_states (merge_states.cuh), each merging four dims
// of a row.
constexpr int kMergeThreads = 128;

// Arguments of merge_states (merge_states.cuh).
struct MergeParams {
  const void* out_a;
  const void* out_b;
  const float* lse_a;
  const float* lse_b;
  void* out;
  float* lse;                                      // may be null
  i64 a_row_stride, b_row_stride, out_row_stride;  // elements between rows
  i64 lse_a_stride, lse_b_stride, lse_stride;
  i64 rows;
  int head_dim;  // a multiple of 4
};

// Most threads per CTA of append_kv (append_kv.cuh): blockDim.x threads move
// one row's 16-byte columns of one KV head, blockDim.y rows share the CTA.
constexpr int kAppendThreads = 256;

// Arguments of append_kv (append_kv.cuh). Strides are in elements; the cache
// strides are reduced from the layout as in DecodeParams.
struct AppendParams {
  const void* k_src;  // [token][kv head][dim], packed rows of every sequence
  const void* v_src;
  i64 k_src_stride_tok, k_src_stride_head, v_src_stride_tok, v_src_stride_head;

  void* k;
  void* v;
  i64 k_stride_head, v_stride_head;
  unsigned k_stride_page, k_stride_slot;  // < 2^31 (validated)
  unsigned v_stride_page, v_stride_slot;

  // Sequence s owns rows query_start[s] .. query_start[s + 1] (clamped to
  // [0, total_tokens]) and writes them to positions context_lens[s] - q_len
  // onwards; only the first *seq_count sequences (null: num_seqs) do.
  const int* query_start;
  const int* context_lens;
  const int* block_tables;
  const int* seq_count;
  i64 bt_stride;
  int max_blocks;  // table entries per row that may be used
  int num_blocks;  // pages outside [0, num_blocks) are never written

  // fp8 caches: the cache receives value / scale[head * stride]; null = 1.
  const float* k_scale;
  const float* v_scale;
  int k_scale_stride, v_scale_stride;

  int total_tokens;  // rows of k_src / v_src: none past them is read
  int num_seqs;
  int page_shift;  // log2(page_size)
};

// Rows of the MMA tile: the query heads of one CTA are padded to 16.
constexpr int kTileRows = 16;

// Tile shapes: each warp takes whole 16-token slices of a tile. A CTA with
// more warps than slices splits the output dims instead: with 32-token tiles
// and 4 warps, warps 0-1 take tokens 0-15 / 16-31 for the first half of the
// dims and warps 2-3 the same tokens for the second half (each pair computes
// the same scores). Half the accumulator a warp is what lets 256-dim heads
// stage their tiles through registers without spilling.
constexpr int dim_split(int tile_tokens, int warps) {
  return warps * 16 > tile_tokens ? warps * 16 / tile_tokens : 1;
}
constexpr bool tile_shape_ok(int tile_tokens, int warps) {
  return tile_tokens >= 16 && warps >= 1 && tile_tokens % 16 == 0 &&
         (tile_tokens % (16 * warps) == 0 || warps % (tile_tokens / 16) == 0);
}
// A dim split needs the tensor-core path and whole 16-dim steps per warp.
constexpr bool dim_split_ok(int tile_tokens, int warps, int v_dims, bool mma) {
  return dim_split(tile_tokens, warps) == 1 || (mma && v_dims % (16 * dim_split(tile_tokens, warps)) == 0);
}

// Register staging (paged_decode): plain 16-byte loads of a tile's K and V
// rows, held in registers across one tile's compute, then stored to shared
// memory. Possible only where every thread has the same whole rows' 16-byte
// columns of K and V: equal key and value dims (elem_bytes: the cache's
// element size) whose chunks divide the CTA's threads evenly over the tile.
constexpr bool register_stage_fits(int head_dim, int dv, int elem_bytes, int tile_tokens, int threads) {
  return dv == head_dim && threads % (head_dim / (16 / elem_bytes)) == 0 &&
         (tile_tokens * (head_dim / (16 / elem_bytes))) % threads == 0;
}
// Whether paged_decode stages its tiles through registers (the planner sizes
// its tiles and occupancy by the same rule): tensor cores, fp16/bf16 caches,
// the staging fits, and no warp accumulates more than 128 dims (its
// accumulator plus the staged rows spill there, so 256-dim heads stage only
// with a dim split).
constexpr bool register_staged(bool mma, bool fp8, int head_dim, int dv, int elem_bytes, int tile_tokens, int warps) {
  return mma && !fp8 && dv / dim_split(tile_tokens, warps) <= 128 &&
         register_stage_fits(head_dim, dv, elem_bytes, tile_tokens, warps * 32);
}

// Dynamic shared memory of the decode kernel, in bytes. Used by the kernel to
// carve its buffers and by the host to size the launch.
struct DecodeSmem {
  int q_pitch;      // bytes per query row in shared memory (padded against bank conflicts)
  int row_pitch;    // bytes per K row
  int v_pitch;      // bytes per V row (DV dims)
  int q_bytes;      // the query tile
  int stage_bytes;  // one pipeline stage: K and V tiles
  int ids_bytes;    // ring of up to STAGES + 2 page-id slots, one int per token (-1: masked)
  int ptile_bytes;  // per-warp fp32 probability tile (SIMT path only)
  int merge_bytes;  // cross-warp merge buffers, then this CTA's result for its cluster (aliases the stages)
  int total;
};

constexpr int round_up16(int x) {
  return (x + 15) / 16 * 16;
}

// q_elem / kv_elem: element sizes of the query tile (fp16 for fp8 caches)
// and of the cache.
constexpr DecodeSmem decode_smem(int head_dim, int dv, int q_elem, int kv_elem, int tile_tokens, int warps, int stages,
                                 bool simt) {
  DecodeSmem s{};
  s.q_pitch = head_dim * q_elem + 16;
  s.row_pitch = head_dim * kv_elem + 16;
  s.v_pitch = dv * kv_elem + 16;
  s.q_bytes = kTileRows * s.q_pitch;
  s.stage_bytes = tile_tokens * (s.row_pitch + s.v_pitch);
  s.ids_bytes = (stages + 2) * tile_tokens * 4;
  s.ptile_bytes = simt ? warps * kTileRows * 16 * 4 : 0;
  s.merge_bytes = warps * kTileRows * (dv + 2) * 4 + kTileRows * (dv + 1) * 4;
  const int pipeline = stages * s.stage_bytes;
  s.total = s.q_bytes + s.ptile_bytes + s.ids_bytes + (pipeline > s.merge_bytes ? pipeline : s.merge_bytes);
  return s;
}

// Shared memory of the prefill kernel (paged_prefill.cuh), in bytes: the
// query block stays resident, K and V tiles stream through `stages` buffers.
// Rows are padded by 16 bytes so that the 8 rows one ldmatrix reads fall in
// distinct banks. q_elem: 2 (fp16/bf16, or fp16 for fp8 caches); kv_elem:
// the cache's element size.
struct PrefillSmem {
  int q_pitch;      // bytes per query row
  int kv_pitch;     // bytes per K or V row
  int q_bytes;      // the query block
  int stage_bytes;  // one pipeline stage: a K tile, then a V tile
  int ids_bytes;    // ring of stages + 1 page-id slots, one int per key (-1: masked)
  int total;
};

constexpr PrefillSmem prefill_smem(int head_dim, int q_elem, int kv_elem, int block_rows, int block_keys, int stages) {
  PrefillSmem s{};
  s.q_pitch = head_dim * q_elem + 16;
  s.kv_pitch = head_dim * kv_elem + 16;
  s.q_bytes = block_rows * s.q_pitch;
  s.stage_bytes = 2 * block_keys * s.kv_pitch;
  s.ids_bytes = (stages + 1) * block_keys * 4;
  s.total = s.q_bytes + s.ids_bytes + stages * s.stage_bytes;
  return s;
}

// Prefill: every warp owns 16 query rows of a block.
constexpr int kPrefillWarpRows = 16;
// Largest head dim of the prefill kernel (its accumulator lives in registers).
constexpr int kPrefillMaxHeadDim = 256;

// Query blocks a ragged prefill launch needs at most (grid y): each sequence
// of q tokens takes ceil(q * group / block_rows) blocks, and the sum over
// sequences of that is below total_tokens * group / block_rows + num_seqs.
constexpr long long prefill_block_bound(long long total_tokens, int group, int block_rows, int num_seqs) {
  return (total_tokens * group + block_rows - 1) / block_rows + num_seqs;
}

}  // namespace pj
