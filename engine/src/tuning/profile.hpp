// Tuned profiles: the data model of a profile file (configs/*.json,
// files in $PAGEDJIT_PROFILE_PATH), its strict parser and writer, bucket
// matching and the device-limit check of a launch configuration.
// configs/README.md documents the schema and the rules implemented here.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "json_depth.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/tensor.hpp"

namespace pagedjit::tuning {

constexpr int kProfileSchemaVersion = 1;
// Larger files, and JSON nested deeper, are refused before parsing.
constexpr std::size_t kMaxProfileBytes = std::size_t(16) << 20;
using pagedjit::kMaxJsonDepth;
constexpr std::int64_t kMaxBucketValue = 0x7fffffff;  // batch and context ranges end at 2^31 - 1
constexpr int kMaxChunkTokens = 1 << 30;

// An inclusive range of positive integers.
struct Range {
  std::int64_t lo = 1, hi = 1;
  bool contains(std::int64_t x) const { return x >= lo && x <= hi; }
  // 0 inside the range, else |log2(x) - log2(nearest end)|; x < 1 counts as 1.
  double log_distance(std::int64_t x) const;
  bool operator==(const Range& o) const { return lo == o.lo && hi == o.hi; }
};

// The problems an entry is for. dtype, kv_dtype, head_dim, page_size and
// layout must equal the call's; group, q_len, batch (num_seqs) and context
// (max_context_len) pick the nearest entry.
struct Bucket {
  DType dtype = DType::bf16;
  DType kv_dtype = DType::bf16;
  int head_dim = 0;
  int page_size = 0;
  CacheLayout layout = CacheLayout::blocks_heads;
  Range group, q_len, batch, context;

  bool exact_match(const ProblemShape& s) const;
  // The call's batch and context lie inside the ranges (not just nearest):
  // then it has about as many CTAs and tokens per CTA as the tuned problem.
  bool sizes_contain(const ProblemShape& s) const;
  // A call in the bucket at its low or high corner (one KV head, a cache
  // exactly as large as the longest context needs): what a profile's entry
  // must be able to run.
  ProblemShape corner(bool high) const;
  std::string describe() const;  // "bf16/bf16 d128 p16 blocks_heads g4 q1 b49-96 ctx3073-6144"
  bool operator==(const Bucket& o) const;
};

struct Entry {
  Bucket bucket;
  KernelConfig config;      // complete: tile_tokens, warps, stages > 0; chunk_tokens, v_dims, work_waves 0 = engine
                            // chooses
  double time_ms = 0;       // the chosen configuration's median on the bucket's problem
  double frac_read = 0;     // that time as a fraction of the tuning run's read bandwidth
  double heuristic_ms = 0;  // optional (0: not recorded): the built-in heuristic's median
  std::string chosen;       // optional: "tuned" or "heuristic" (the heuristic was not beaten)
  std::string problem;      // optional: the problem that was timed, for people
};

struct ProfileDevice {
  std::string name;  // as the driver reports it (DeviceInfo::name)
  std::string arch;  // DeviceInfo::arch(), e.g. "sm_90a"
  int sm_count = 0;
  std::int64_t memory_bytes = 0;
};

struct Profile {
  int schema_version = kProfileSchemaVersion;
  ProfileDevice device;
  std::string toolkit;         // NVRTC version of the tuning run, "13.0"
  std::string driver;          // CUDA driver version, "13.0", or "unknown"
  std::string engine_version;  // pagedjit::kVersion of the tuning run
  std::string created_utc;     // optional
  double read_GBps = 0;        // the run's read bandwidth (frac_read's denominator)
  std::string about;           // optional free text
  std::vector<Entry> entries;

  // Not in the file: where it came from, and whether it is a user profile
  // ($PAGEDJIT_PROFILE_PATH) or a shipped one (configs/, embedded).
  std::string origin;
  bool user = false;
};

// Parses and validates a profile. `origin` (a file name) starts every error
// message, followed by the JSON pointer of the offending value. Throws
// InvalidArgument (argument "<origin>#<pointer>") and nothing else, whatever
// the input.
Profile parse_profile(const std::string& text, const std::string& origin);
// Reads and parses a file; unreadable files throw InvalidArgument too.
Profile load_profile_file(const std::string& path);
// The message of a parse_profile / load_profile_file error without
// InvalidArgument's prefix (kArgumentErrorPrefix):
// "'file.json#/entries/2/config/warps': expected an integer in [1, 8], got 9".
std::string profile_error_text(const std::exception& e);
// The file text: one entry per line, keys in schema order. parse_profile of
// it gives back an equal profile.
std::string serialize_profile(const Profile& p);

// The entry of `p` nearest to `shape`, or -1 when no entry's exact fields
// match. Rule (configs/README.md): among entries whose dtype, kv_dtype,
// head_dim, page_size and layout equal the call's, the smallest
//   (q_len distance, group distance, batch distance + context distance)
// compared in that order, each a Range::log_distance; ties go to the entry
// that comes first in the file.
int nearest_entry(const Profile& p, const ProblemShape& shape);

// Why `c` cannot run `shape` on `device`, or "" when it can: tile_tokens a
// multiple of 16 * warps up to 256 (or of 16 with warps a multiple of
// tile_tokens / 16, a dim split: tensor cores, 16-dim multiples a warp),
// warps 1..8 (threads <= 1024), stages
// 2..8, chunk_tokens 0 or a multiple of tile_tokens up to 2^30, v_dims 0 or a
// multiple of 16 up to min(256, head_dim), work_waves 0..16, and the kernel's shared memory
// (pj::decode_smem with the KV dtype's element size) within the device's
// max_smem_per_block. Registers need no check: the kernel's
// __launch_bounds__(32 * warps) makes one CTA always fit.
std::string config_error(const KernelConfig& c, const ProblemShape& shape, const DeviceInfo& device);
// Shared memory of `c` on `shape` (bytes), as the planner computes it.
int config_smem_bytes(const KernelConfig& c, const ProblemShape& shape);
// "tile=64 warps=4 stages=3 chunk=0 dv=0", and " waves=3" when work_waves is set
std::string describe_config(const KernelConfig& c);
bool same_config(const KernelConfig& a, const KernelConfig& b);

}  // namespace pagedjit::tuning
