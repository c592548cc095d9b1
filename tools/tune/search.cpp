#include "search.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "attention/planner.hpp"
#include "jit/kernel_spec.hpp"
#include "pagedjit/errors.hpp"

namespace pjtune {

using pagedjit::KernelConfig;
using pagedjit::ProblemShape;
using pagedjit::tuning::Range;

namespace {

// The problem's KV dtype and query length where ProblemConfig has them (as
// DType / std::optional<DType> / int members), else the query's dtype and 1.
template <class C>
auto kv_dtype_of(const C& c, int) -> decltype(pagedjit::DType{c.kv_dtype}) {
  return c.kv_dtype;
}
template <class C>
auto kv_dtype_of(const C& c, long) -> decltype(pagedjit::DType{c.kv_dtype.value_or(c.dtype)}) {
  return c.kv_dtype.value_or(c.dtype);
}
template <class C>
pagedjit::DType kv_dtype_of(const C& c, ...) {
  return c.dtype;
}
template <class C>
auto q_len_of(const C& c, int) -> decltype(int{c.q_len}) {
  return std::max(1, c.q_len);
}
template <class C>
int q_len_of(const C&, ...) {
  return 1;
}

// The plan of `config` (none: the heuristic's) for `s`, or nullopt when it cannot be planned.
std::optional<pagedjit::LaunchInfo> plan_of(const ProblemShape& s, const std::optional<KernelConfig>& config,
                                            const pagedjit::DeviceInfo& device) {
  try {
    pagedjit::PagedAttentionOptions o;
    if (config) o.kernel_config = *config;
    return pagedjit::plan_problem(s, o, device);
  } catch (const pagedjit::Error&) {
    return std::nullopt;
  }
}

}  // namespace

Range ladder_range(std::int64_t x) {
  const std::int64_t cap = pagedjit::tuning::kMaxBucketValue;
  if (x <= 1) return {1, 1};
  std::int64_t lo = 2, hi = 3;  // k = 1
  while (x > hi) {
    lo = hi + 1;
    hi = std::min(cap, hi * 2);
    if (hi == cap) break;
  }
  return {lo, hi};
}

ProblemShape shape_of(const pjbench::BenchCase& c) {
  ProblemShape s;
  s.num_seqs = c.batch;
  s.num_heads = c.q_heads;
  s.num_kv_heads = c.kv_heads;
  s.head_dim = c.head_dim;
  s.page_size = c.page_size;
  int longest = 0;
  for (int l : c.context_lens()) longest = std::max(longest, l);
  s.max_blocks = std::max(1, (longest + c.page_size - 1) / c.page_size);
  s.num_blocks = int(std::min<std::int64_t>(0x7fffffff, (c.tokens() + c.page_size - 1) / c.page_size + 3));
  s.dtype = s.out_dtype = c.dtype;
  const pagedjit::testing::ProblemConfig cfg = c.problem(0);
  s.kv_dtype = kv_dtype_of(cfg, 0);
  s.layout = c.layout;
  const std::int64_t capacity = std::int64_t(s.max_blocks) * s.page_size;
  s.max_context_len = c.max_ctx ? std::min(*c.max_ctx, capacity) : capacity;
  s.q_len = q_len_of(cfg, 0);
  return s;
}

pagedjit::tuning::Bucket bucket_of(const ProblemShape& s) {
  pagedjit::tuning::Bucket b;
  b.dtype = s.dtype;
  b.kv_dtype = s.kv_dtype;
  b.head_dim = s.head_dim;
  b.page_size = s.page_size;
  b.layout = s.layout;
  b.group = {s.group(), s.group()};
  b.q_len = {s.q_len, s.q_len};
  b.batch = ladder_range(s.num_seqs);
  b.context = ladder_range(s.max_context_len);
  return b;
}

std::string tuning_problem_error(const pjbench::BenchCase& c) {
  const KernelConfig& k = c.config;
  if (k.tile_tokens || k.warps || k.stages || k.chunk_tokens || k.v_dims || k.work_waves)
    return "tile, warps, stages, chunk, dv and waves are what the tuner chooses: leave them out";
  if (c.splits) return "splits is what the tuner chooses: leave it out";
  return "";
}

std::vector<Candidate> tile_candidates(const ProblemShape& s, const pagedjit::DeviceInfo& device) {
  std::vector<int> dvs = {0};
  if (s.head_dim > 128) {
    const int def = pagedjit::jit::default_v_dims(s.head_dim);
    if (def / 2 >= 16 && (def / 2) % 16 == 0) dvs.push_back(def / 2);
  }
  // Above 128 dims, also tiles of 8 tokens a warp: warp pairs split the output
  // dims (pj::dim_split), which halves the accumulator and lets the tiles go
  // through registers. Smaller heads keep their accumulator in registers anyway.
  std::vector<int> per_warps = {16, 32, 64};
  if (s.head_dim > 128 && s.dtype != pagedjit::DType::f32) per_warps.insert(per_warps.begin(), 8);
  std::vector<Candidate> out;
  for (int dv : dvs)
    for (int warps : {1, 2, 4, 8})
      for (int per_warp : per_warps) {
        const int tile = warps * per_warp;
        if (tile > 256 || tile < 16) continue;
        for (int stages : {2, 3, 4, 6}) {
          Candidate c;
          c.config = KernelConfig{tile, warps, stages, 0, dv};
          c.smem_bytes = pagedjit::tuning::config_smem_bytes(c.config, s);
          c.pruned = pagedjit::tuning::config_error(c.config, s, device);
          if (c.pruned.empty()) {  // the planner must accept it too
            pagedjit::PagedAttentionOptions o;
            o.kernel_config = c.config;
            try {
              pagedjit::plan_problem(s, o, device);
            } catch (const pagedjit::Error& e) {
              c.pruned = fmt::format("the planner refuses it: {}", e.what());
            }
          }
          out.push_back(c);
        }
      }
  return out;
}

std::string plan_text(const ProblemShape& s, const std::optional<pagedjit::KernelConfig>& config,
                      const pagedjit::DeviceInfo& device) {
  const std::optional<pagedjit::LaunchInfo> info = plan_of(s, config, device);
  if (!info) return "unplannable";
  if (info->work_items > 0) return fmt::format("device-schedule waves={}", info->work_waves);
  return fmt::format("splits={} chunk={} cluster={}", info->num_splits, info->chunk_tokens, info->cluster);
}

std::vector<int> chunk_candidates(const ProblemShape& s) {
  std::vector<int> out;
  for (int chunk : {512, 1024, 1536, 2048, 4096, 8192, 16384})
    if (chunk < s.max_context_len && (s.max_context_len + chunk - 1) / chunk <= 512) out.push_back(chunk);
  // One partition per sequence (a chunk as long as the longest context,
  // rounded to any tile): the heuristic may split where none is best.
  const std::int64_t whole = (std::int64_t(s.max_context_len) + 255) / 256 * 256;
  if (whole <= (std::int64_t(1) << 30)) out.push_back(int(whole));
  return out;
}

std::vector<int> waves_candidates() {
  return {1, 2, 3, 4, 6, 8};
}

bool device_scheduled(const ProblemShape& s, const std::optional<KernelConfig>& config,
                      const pagedjit::DeviceInfo& device) {
  const std::optional<pagedjit::LaunchInfo> info = plan_of(s, config, device);
  return info && info->work_items > 0;
}

std::vector<KernelConfig> phase2_configs(const ProblemShape& s, const KernelConfig& tile,
                                         const pagedjit::DeviceInfo& device) {
  std::vector<KernelConfig> out;
  const std::optional<pagedjit::LaunchInfo> own = plan_of(s, tile, device);
  if (own && own->work_items > 0) {
    for (int waves : waves_candidates())
      if (waves != own->work_waves) {
        KernelConfig c = tile;
        c.chunk_tokens = 0;
        c.work_waves = waves;
        out.push_back(c);
      }
    return out;
  }
  for (int chunk : chunk_candidates(s)) {
    KernelConfig c = tile;
    c.chunk_tokens = chunk;
    c.work_waves = 0;
    out.push_back(c);
  }
  return out;
}

KernelConfig entry_config(const ProblemShape& s, KernelConfig config, const pagedjit::DeviceInfo& device) {
  const std::optional<pagedjit::LaunchInfo> info = plan_of(s, config, device);
  config.work_waves = info && info->work_items > 0 ? info->work_waves : 0;
  return config;
}

std::string slug(const std::string& name) {
  std::string s;
  for (char c : name) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (c >= 'A' && c <= 'Z')
      s += char(c - 'A' + 'a');
    else if (alnum)
      s += c;
    else if (!s.empty() && s.back() != '-')
      s += '-';
  }
  while (!s.empty() && s.back() == '-') s.pop_back();
  return s.empty() ? "gpu" : s;
}

pagedjit::DeviceInfo gpu_preset(const std::string& name) {
  if (name == "h100") return pagedjit::DeviceInfo::h100_sxm();
  if (name == "h200") return pagedjit::DeviceInfo::h200();
  throw std::invalid_argument(fmt::format("unknown GPU preset \"{}\" (h100 or h200)", name));
}

}  // namespace pjtune
