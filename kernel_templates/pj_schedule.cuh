// The device schedule (pj::Schedule::device): each CTA of the decode kernel
// plans the whole batch from the context lengths on the device and picks its
// own work item, so the plan follows the lengths of every call, including
// replays of a captured graph, with no host read and no extra launch.
//
// The plan, the same in every CTA (so no CTA waits for another):
//  1. total = the tokens every sequence must read (window and q_len applied);
//  2. cap = max(kMinPartitionTokens, total / work_items) rounded up to whole
//     tiles: a batch makes about work_items items a KV-head column, whatever
//     its lengths;
//  3. a sequence of `span` tokens is cut into ceil(span / (9/8 cap)) even
//     partitions (one for an empty sequence, which writes zeros);
//  4. items are numbered by size class, largest first (a cheap
//     longest-processing-time order: the CTAs that start last are short, so
//     the SMs finish together), then by sequence, then by partition.
// Partials of a sequence live in `parts` consecutive slots starting at the
// sum of the parts of the sequences before it: at most num_seqs + work_items.
#pragma once
#include "pj_params.cuh"

namespace pj {

typedef unsigned long long u64;

// Sequences the call computes: the first *seq_count (clamped), else all.
__device__ __forceinline__ int active_seqs(const DecodeParams& p) {
  return p.seq_count ? max(0, min(*p.seq_count, p.num_seqs)) : p.num_seqs;
}

// A sequence's query tokens: `len` of them, the first at packed row `first`
// (ragged calls), or q_len tokens addressed through the sequence stride.
struct QueryRows {
  int first, len;
};

// Ragged offsets come from the device and may be anything: each is clamped
// into [0, total_tokens] and a decreasing pair is empty, so no value makes a
// row outside the tensors. (The decode kernel's grid covers q_len tokens, the
// host's bound: it computes no more of a longer sequence, which the
// validation mode reports.)
__device__ __forceinline__ QueryRows query_rows(const DecodeParams& p, int seq) {
  if (!p.query_start) return QueryRows{0, p.q_len};
  const int first = max(0, min(p.query_start[seq], p.total_tokens));
  const int end = max(first, min(p.query_start[seq + 1], p.total_tokens));
  return QueryRows{first, end - first};
}

// The positions a sequence's query tokens see: [start, len).
struct SeqSpan {
  int len, start;
};

// Tokens past the table's capacity are ignored (the validation mode reports
// them). Query token i of q_len sees positions [lo_i, hi_i], hi_i = len -
// q_len + i, lo_i = hi_i + 1 - window with a window; a CTA reads their union.
// Consts: the kernel's DecodeConsts.
template <class Consts = RuntimeConsts>
__device__ __forceinline__ SeqSpan seq_span(const DecodeParams& p, int context_len, int q_len) {
  SeqSpan s;
  s.len = max(0, min(context_len, p.max_blocks << Consts::page_shift(p)));
  const int last_common = s.len - q_len + 1;
  s.start = p.window > 0 ? max(0, last_common - p.window) : 0;
  return s;
}

struct WorkItem {
  int seq;     // -1: this CTA has no item
  int part;    // partition of the sequence
  int parts;   // the sequence's partitions
  int per;     // tokens per partition (a multiple of the tile)
  int slot;    // the sequence's first partial slot
  int length;  // the sequence's context length as read (the CTA need not read it again)
  int q_len;   // its query tokens
};

// Exclusive prefix sum over the block's threads in thread order; `total`
// receives the sum. `warp_sums`: shared memory for NT / 32 values. Ends with
// a barrier, so the caller may reuse `warp_sums` after the next one.
template <int NT>
__device__ __forceinline__ u64 block_exclusive_scan(u64 v, u64* warp_sums, u64& total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  u64 inc = v;
#pragma unroll
  for (int d = 1; d < 32; d *= 2) {
    const u64 o = __shfl_up_sync(0xffffffffu, inc, d);
    if (lane >= d) inc += o;
  }
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  u64 before = 0;
  total = 0;
#pragma unroll
  for (int w = 0; w < NT / 32; ++w) {
    if (w < warp) before += warp_sums[w];
    total += warp_sums[w];
  }
  __syncthreads();
  return before + inc - v;
}

// This CTA's work item `item` (blockIdx.y). `scratch`: at least 256 bytes of
// shared memory that nothing else uses until this returns. Consts: the kernel's
// DecodeConsts.
template <int NT, int TILE, class Consts = RuntimeConsts>
__device__ WorkItem plan_work_item(const DecodeParams& p, int item, char* scratch) {
  constexpr int K = kMaxScheduleSeqsPerThread;
  constexpr int C = kScheduleSizeClasses;
  u64* warp_sums = reinterpret_cast<u64*>(scratch);
  int* class_items = reinterpret_cast<int*>(scratch + 8 * (NT / 32));  // C + 1 counters
  WorkItem* found = reinterpret_cast<WorkItem*>(scratch + 8 * (NT / 32) + 4 * (C + 1) + 12);
  const int tid = threadIdx.x;
  // Each thread plans a contiguous run of sequences, so thread order is
  // sequence order in the scans.
  const int per_thread = (p.num_seqs + NT - 1) / NT;
  if (per_thread > K) __trap();  // the host plans no such batch: never drop sequences silently
  const int s0 = tid * per_thread;
  const int seqs = active_seqs(p);
  int span[K], length[K], q_len[K];
  u64 mine = 0;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int s = s0 + j;
    span[j] = -1;  // not a sequence (or one the call skips)
    length[j] = 0, q_len[j] = 0;
    if (j < per_thread && s < seqs) {
      length[j] = p.context_lens[s];
      q_len[j] = min(query_rows(p, s).len, p.q_len);
      const SeqSpan sp = seq_span<Consts>(p, length[j], q_len[j]);
      span[j] = q_len[j] > 0 ? sp.len - sp.start : 0;  // no query token: one item, which leaves at once
      mine += u64(span[j]);
    }
  }
  if (tid <= C) class_items[tid] = 0;
  u64 total;
  block_exclusive_scan<NT>(mine, warp_sums, total);  // its barriers also publish the zeroed counters

  const u64 want = (total + u64(p.work_items) - 1) / u64(max(p.work_items, 1));
  const u64 floor_cap = u64(max(kMinPartitionTokens, TILE));
  const u64 capped = want < floor_cap ? floor_cap : (want > (1ull << 30) ? (1ull << 30) : want);
  // A sequence up to an eighth over the cap stays whole: cutting a uniform
  // batch whose sequences just miss it would double its CTAs and merges for
  // no balance gained.
  const int cap = int((capped + TILE - 1) / TILE * TILE);
  const int stretch = cap + cap / 8;
  int parts[K], per[K], cls[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    parts[j] = 0, per[j] = TILE, cls[j] = -1;
    if (span[j] < 0) continue;
    parts[j] = span[j] > 0 ? (span[j] + stretch - 1) / stretch : 1;
    per[j] = ((span[j] + parts[j] - 1) / parts[j] + TILE - 1) / TILE * TILE;
    cls[j] = min(C, int(i64(per[j]) * C / stretch));
    atomicAdd(&class_items[cls[j]], parts[j]);
  }
  __syncthreads();
  // Which class holds this item, and its rank there (every thread alike).
  int cls_item = -1, rank = item;
  for (int c = C; c >= 0; --c) {
    if (rank < class_items[c]) {
      cls_item = c;
      break;
    }
    rank -= class_items[c];
  }
  WorkItem none{-1, 0, 0, 0, 0, 0, 0};
  if (cls_item < 0) return none;  // uniform across the block: past the batch's items

  // One scan gives both the item's rank within its class (high word) and the
  // sequence's first partial slot (low word, at most num_seqs + work_items).
  u64 packed = 0;
#pragma unroll
  for (int j = 0; j < K; ++j) packed += (u64(cls[j] == cls_item ? parts[j] : 0) << 32) | u64(parts[j]);
  u64 sum;
  u64 before = block_exclusive_scan<NT>(packed, warp_sums, sum);
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int in_class = int(before >> 32), slot = int(before & 0xffffffffu);
    if (cls[j] == cls_item && rank >= in_class && rank < in_class + parts[j])
      *found = WorkItem{s0 + j, rank - in_class, parts[j], per[j], slot, length[j], q_len[j]};
    before += (u64(cls[j] == cls_item ? parts[j] : 0) << 32) | u64(parts[j]);
  }
  __syncthreads();
  const WorkItem w = *found;
  __syncthreads();  // the caller may overwrite the scratch now
  return w;
}

// Ragged prefill: the query block a CTA computes. Rows of a sequence are
// (token, query head of the group) pairs of one KV head, token-major: row r
// is token r / group, head kv_head * group + r % group.
struct QueryBlock {
  int seq;          // -1: this CTA has no block
  int q_start;      // the sequence's first packed query row (0 without query_start)
  int q_len;        // the sequence's query tokens
  int row0, rows;   // this block's rows: [row0, row0 + rows) of the sequence's q_len * group
  int context_len;  // the sequence's context_lens entry as read (clamped later)
};

// Query block `block` (blockIdx.y) of the launch: blocks are numbered by
// sequence, ceil(q_len * group / rows_per_block) of them each, found by one
// block-wide scan over the per-sequence counts (each thread sums a
// contiguous run of sequences, so thread order is sequence order). Within a
// sequence the blocks run last rows first: under the causal mask they see
// the most keys, so the longest CTAs start earliest. `scratch`: at least
// 8 * NT / 32 + 32 bytes of shared memory nobody else uses until this returns.
template <int NT>
__device__ QueryBlock ragged_block(const DecodeParams& p, int rows_per_block, int block, char* scratch) {
  u64* warp_sums = reinterpret_cast<u64*>(scratch);
  QueryBlock* found = reinterpret_cast<QueryBlock*>(scratch + 8 * (NT / 32));
  const int count = active_seqs(p);
  const int per_thread = (count + NT - 1) / NT;
  const int s0 = int(threadIdx.x) * per_thread;
  const int s1 = min(count, s0 + per_thread);
  auto blocks_of = [&](int len) { return u64((i64(len) * p.group + rows_per_block - 1) / rows_per_block); };
  u64 mine = 0;
  for (int s = s0; s < s1; ++s) mine += blocks_of(query_rows(p, s).len);
  if (threadIdx.x == 0) found->seq = -1;
  u64 total;
  u64 before = block_exclusive_scan<NT>(mine, warp_sums, total);  // its barriers publish found->seq
  if (u64(block) >= before && u64(block) < before + mine) {
    for (int s = s0; s < s1; ++s) {
      const QueryRows q = query_rows(p, s);
      const u64 n = blocks_of(q.len);
      if (u64(block) < before + n) {
        const int local = int(n - 1 - (u64(block) - before));  // last rows first
        const i64 all_rows = i64(q.len) * p.group;
        const int row0 = local * rows_per_block;
        const int rows = int(min(i64(rows_per_block), all_rows - row0));
        *found = QueryBlock{s, q.first, q.len, row0, rows, p.context_lens[s]};
        break;
      }
      before += n;
    }
  }
  __syncthreads();
  const QueryBlock b = *found;
  __syncthreads();  // the caller may overwrite the scratch now
  return b;
}

}  // namespace pj
