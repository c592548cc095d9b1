// One specialization of a kernel template. The single source of both the
// NVRTC name expression (what gets compiled) and the cache key (what names the
// result), so the two cannot disagree.
#pragma once
#include <string>
#include <tuple>
#include <vector>

#include "pagedjit/tensor.hpp"
#include "pj_params.cuh"

namespace pagedjit::jit {

enum class Compute { mma, simt };

const char* compute_name(Compute c);

// How a decode kernel's partitions combine (pj_params.cuh), named in the
// template arguments.
using Merge = pj::Merge;

const char* merge_name(Merge m);

// Who cuts sequences into partitions (pj_params.cuh). device: the kernel
// plans balanced work items from the device-side lengths.
using Schedule = pj::Schedule;

const char* schedule_name(Schedule s);

// Whether an NVRTC target ("sm_90a", "sm_100", ...) has thread-block clusters.
bool arch_has_clusters(const std::string& arch);

// The tile-shape rules of pj_params.cuh (pj::tile_shape_ok, pj::dim_split_ok)
// in words, as what a valid value looks like, for every error enforcing them.
std::string tile_shape_rule(int warps);
std::string dim_split_rule(int tile_tokens, int warps);

// Output dims per CTA when KernelConfig::v_dims is 0: the whole head up to
// 256, else even chunks of at most 256, rounded up to 16 (each CTA reads
// whole keys; its accumulator holds only its chunk).
int default_v_dims(int head_dim);

// Which kernel template: the decode kernel, the merge of two partial
// results (only the dtypes and arch matter for it), append_kv (likewise),
// or the prefill kernel (paged_prefill.cuh: query blocks of 16 * warps rows
// against key tiles of tile_tokens keys, `stages` deep; v_dims is head_dim,
// compute mma, merge none, schedule host).
enum class KernelKind { decode, merge, append, prefill };

struct KernelSpec {
  KernelKind kind = KernelKind::decode;
  DType q_dtype = DType::bf16;   // query (merge: the partial results' dtype; append: the new keys')
  DType kv_dtype = DType::bf16;  // KV cache: q_dtype, or e4m3 / e5m2 with an fp16/bf16 query (append: any)
  DType out_dtype = DType::bf16;
  int head_dim = 0;
  int v_dims = 0;       // output dims per CTA (head_dim, or a chunk of it above 256)
  int tile_tokens = 0;  // tokens per pipeline stage (prefill: keys per tile)
  int warps = 0;        // (prefill: each owns 16 query rows of a block)
  int stages = 0;
  Compute compute = Compute::mma;
  Merge merge = Merge::none;           // none: one partition; cluster needs sm_90+
  Schedule schedule = Schedule::host;  // device needs merge global
  std::string arch;                    // exact NVRTC target, e.g. "sm_90a"
  // Decode launch values compiled in as constants (pj::DecodeConsts;
  // EngineOptions::specialize), or unset: the kernel reads DecodeParams.
  int page_shift = pj::kUnsetPageShift;  // log2(page size), 0..30
  int group = pj::kUnsetGroup;           // query heads per KV head
  int splits = pj::kUnsetSplits;         // partitions per sequence: host schedule only, 1 exactly with merge none

  // "pj::paged_decode<pj::bf16, pj::bf16, pj::bf16, 128, 128, 64, 4, 3, true, pj::Merge::none, pj::Schedule::host,
  // -1, 0, 0>"
  std::string name_expression() const;
  // NVRTC options: a function of the spec alone.
  std::vector<std::string> compile_options() const;
  // Full cache key text: format version, pagedjit version, name expression,
  // arch, options, source hash and NVRTC version. Any change to any of them is a miss.
  std::string key(const std::string& source_hash, const std::string& nvrtc_version) const;
  // Short readable name for logs and cache listings.
  std::string readable() const;
  // Throws InvalidArgument when the template cannot be instantiated with these values.
  void check() const;

  auto tie() const {
    return std::tie(kind, q_dtype, kv_dtype, out_dtype, head_dim, v_dims, tile_tokens, warps, stages, compute, merge,
                    schedule, arch, page_shift, group, splits);
  }
  bool operator<(const KernelSpec& o) const { return tie() < o.tie(); }
  bool operator==(const KernelSpec& o) const { return tie() == o.tie(); }
};

constexpr int kCacheFormatVersion = 6;  // 6: page shift, group and split count joined the template

}  // namespace pagedjit::jit
