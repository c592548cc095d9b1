#include "attention/planner.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "pagedjit/errors.hpp"
#include "pj_params.cuh"

namespace pagedjit::attention {
namespace {

struct TileConfig {
  int tile, warps, stages;
};

// Preferred first: big tiles and deep pipelines keep the most bytes in flight.
constexpr TileConfig kTileConfigs[] = {{64, 4, 3}, {64, 4, 2}, {32, 2, 3}, {32, 2, 2}, {16, 1, 3}, {16, 1, 2}};
// Shapes whose tiles go through registers (pj::register_staged): 32-token
// tiles of two warps read fastest (docs/performance.md, v0.8).
constexpr TileConfig kRegisterTileConfigs[] = {{32, 2, 2}, {64, 4, 2}, {32, 2, 3}, {16, 1, 2}};
// Above 128 dims a warp's tile rows and accumulator fit registers only with a
// dim split (pj::dim_split): 32-token tiles of 4 warps beat the best cp.async
// tile and the other split tiles (docs/performance.md, v0.11).
constexpr TileConfig kWideRegisterTileConfigs[] = {{32, 4, 2}, {64, 8, 2}, {16, 2, 2}};
// fp8 caches: small tiles (more CTAs an SM; fp8 runs about twice the
// instructions per byte and is latency-bound at 8 warps an SM), with one
// stage more than the fp16/bf16 tiles. The tuner chose 32-token tiles of 1-2
// warps for most fp8 problems, well ahead of the former first choice, 64
// tokens / 4 warps / 5 stages (docs/performance.md, v0.7 and v0.9).
constexpr TileConfig kFp8TileConfigs[] = {{32, 2, 3}, {32, 2, 2}, {64, 4, 3}, {64, 4, 2}, {16, 1, 3}, {16, 1, 2}};

// The cache's dtype: a non-fp8 one always equals the query's (validated), so
// shapes built by hand need not set kv_dtype unless it is fp8.
DType kv_dtype_of(const ProblemShape& s) {
  return is_fp8(s.kv_dtype) ? s.kv_dtype : s.dtype;
}

int smem_of(const ProblemShape& s, int dv, const TileConfig& c, bool simt) {
  const bool fp8 = is_fp8(s.kv_dtype);
  const int q_elem = fp8 ? 2 : int(dtype_size(s.dtype));  // fp8: the query tile is fp16
  return pj::decode_smem(s.head_dim, dv, q_elem, int(dtype_size(kv_dtype_of(s))), c.tile, c.warps, c.stages, simt)
      .total;
}

// Whether the kernel of this tile stages it through registers (the kernel's
// own rule).
bool register_staged(const ProblemShape& s, int dv, const TileConfig& c, bool simt) {
  return pj::register_staged(!simt, is_fp8(s.kv_dtype), s.head_dim, dv, int(dtype_size(kv_dtype_of(s))), c.tile,
                             c.warps);
}

// Rough per-thread register use, for the occupancy estimate only.
int regs_estimate(const ProblemShape& s, bool simt, bool staged) {
  return simt || staged || s.head_dim > 128 ? 256 : 200;
}

int ctas_per_sm(const DeviceInfo& d, int smem, int threads, int regs) {
  const int by_smem = std::max(1, d.max_smem_per_sm / (smem + 1024));
  const int by_regs = std::max(1, d.regs_per_sm / (threads * regs));
  return std::min({by_smem, by_regs, 32});
}

// At most this many CTAs of `threads` threads and `smem` bytes share an SM:
// registers can only lower it.
int ctas_per_sm_bound(const DeviceInfo& d, int smem, int threads) {
  const int by_smem = std::max(1, d.max_smem_per_sm / (smem + 1024));
  return std::min({by_smem, std::max(1, 2048 / threads), 32});
}

// The workspace of a global merge: the counters of finished partitions, then
// `part_rows` fp32 partial outputs and their log-sum-exps.
void lay_out_workspace(const ProblemShape& s, std::int64_t part_rows, Plan& plan) {
  LaunchInfo& info = plan.info;
  plan.counters_bytes = (std::int64_t(s.num_seqs) * info.grid[0] * 4 + 255) / 256 * 256;
  plan.part_o_offset = plan.counters_bytes;
  plan.part_lse_offset = plan.part_o_offset + part_rows * s.head_dim * 4;
  info.workspace_bytes = (plan.part_lse_offset + part_rows * info.dv_chunks * 4 + 255) / 256 * 256;
}

// The device schedule, where the batch allows it: grid y = sequences + work
// items (an upper bound; the launch lowers it), one global merge.
bool plan_device_schedule(const ProblemShape& s, const DeviceInfo& d, int waves, Plan& plan) {
  LaunchInfo& info = plan.info;
  if (s.num_seqs < 2 || s.num_seqs > pj::kMaxScheduleSeqsPerThread * info.threads) return false;
  const int items =
      work_items_for(waves, d.sm_count, ctas_per_sm_bound(d, info.smem_bytes, info.threads), info.grid[0]);
  if (std::int64_t(s.num_seqs) + items > 65535) return false;
  info.num_splits = 0;
  info.chunk_tokens = 0;
  info.work_items = items;
  info.work_waves = waves;
  info.grid[1] = s.num_seqs + items;
  info.grid[2] = 1;
  info.cluster = 1;
  plan.decode.merge = jit::Merge::global;
  plan.decode.schedule = jit::Schedule::device;
  info.decode_kernel = plan.decode.name_expression();
  // Partials: one slot per work item, each sequence's consecutive.
  lay_out_workspace(s, std::int64_t(s.num_seqs + items) * s.num_heads * s.q_len, plan);
  return true;
}

// What a plan starts from: the compute path and the configuration forced by
// a tuned profile or the options (zero fields: the planner chooses).
struct Request {
  bool simt = false;         // fp32: no tensor cores
  bool use_tuned = false;    // the profile's configuration is the forced one
  bool tuned_chunk = false;  // and its partition length applies
  KernelConfig forced;
  int dv = 0;  // output dims per CTA
};

Request request_of(const ProblemShape& s, const PagedAttentionOptions& o, const tuning::Choice* tuned, bool use_tuned) {
  Request r;
  r.simt = s.dtype == DType::f32;
  r.use_tuned = use_tuned;
  r.forced = use_tuned ? tuned->config : o.kernel_config.value_or(KernelConfig{});
  r.tuned_chunk = use_tuned && tuned->in_bucket && r.forced.chunk_tokens > 0 && o.num_splits == 0 && !o.batch_invariant;
  r.dv = r.forced.v_dims ? r.forced.v_dims : jit::default_v_dims(s.head_dim);
  return r;
}

// Whether a tuned profile's tile fits this device (a stale one does not).
bool tuned_tile_fits(const ProblemShape& s, const DeviceInfo& d, const KernelConfig& t, bool simt) {
  const TileConfig tc{t.tile_tokens, t.warps, t.stages};
  return t.tile_tokens > 0 &&
         smem_of(s, t.v_dims ? t.v_dims : jit::default_v_dims(s.head_dim), tc, simt) <= d.max_smem_per_block;
}

// Tile shape: a forced one (pages_per_compute_block), else the first that
// lets two CTAs share an SM, else the first that fits at all ({0, 0, 0}: none).
TileConfig choose_tile(const ProblemShape& s, const PagedAttentionOptions& o, const DeviceInfo& d, const Request& r) {
  const int dv = r.dv;
  const bool simt = r.simt;
  if (r.forced.tile_tokens) return {r.forced.tile_tokens, r.forced.warps, r.forced.stages};
  if (o.pages_per_compute_block) {
    const int tokens = std::clamp(*o.pages_per_compute_block * s.page_size, 16, 64) / 16 * 16;
    TileConfig cfg{tokens, tokens / 16, 3};
    if (smem_of(s, dv, cfg, simt) > d.max_smem_per_block) cfg.stages = 2;
    return cfg;
  }
  const auto pick = [&](const auto& list) {
    for (const auto& c : list)
      if (smem_of(s, dv, c, simt) + 1024 <= d.max_smem_per_sm / 2) return c;
    for (const auto& c : list)
      if (smem_of(s, dv, c, simt) <= d.max_smem_per_block) return c;
    return TileConfig{0, 0, 0};
  };
  const bool staged = register_staged(s, dv, kRegisterTileConfigs[0], simt);
  const bool wide_staged = register_staged(s, dv, kWideRegisterTileConfigs[0], simt);
  return is_fp8(s.kv_dtype) ? pick(kFp8TileConfigs)
         : staged           ? pick(kRegisterTileConfigs)
         : wide_staged      ? pick(kWideRegisterTileConfigs)
                            : pick(kTileConfigs);
}

// The tile's shared memory. Refuses a forced tile the kernel cannot take and
// a problem no tile fits.
int checked_smem(const ProblemShape& s, const DeviceInfo& d, const Request& r, const TileConfig& cfg) {
  const bool forced = r.forced.tile_tokens != 0;
  const int dv = r.dv;
  if (forced && !pj::tile_shape_ok(cfg.tile, cfg.warps))
    throw InvalidArgument("options.kernel_config", jit::tile_shape_rule(cfg.warps), std::to_string(cfg.tile));
  if (forced && !pj::dim_split_ok(cfg.tile, cfg.warps, dv, !r.simt))
    throw InvalidArgument("options.kernel_config", jit::dim_split_rule(cfg.tile, cfg.warps),
                          fmt::format("{} warps, {} output dims{}", cfg.warps, dv, r.simt ? ", fp32 (simt)" : ""));
  const int smem = cfg.tile ? smem_of(s, dv, cfg, r.simt) : 0;
  if (forced && smem > d.max_smem_per_block)
    throw InvalidArgument("options.kernel_config",
                          fmt::format("a tile that fits {} bytes of shared memory", d.max_smem_per_block),
                          fmt::format("{} bytes", smem));
  if (cfg.tile == 0 || smem > d.max_smem_per_block)
    throw NotSupported("query", fmt::format("head_dim {} with {} needs more shared memory than {} offers", s.head_dim,
                                            dtype_name(kv_dtype_of(s)), d.name));
  return smem;
}

// Query rows (query heads x query tokens of a KV head) per CTA and output-dim
// chunks per row chunk. Refuses grids larger than a launch holds.
void plan_rows(const ProblemShape& s, int dv, LaunchInfo& info) {
  const std::int64_t rows = std::int64_t(s.group()) * s.q_len;  // query rows per KV head
  // Grid limits, in 64-bit: absurd shapes must be refused, not overflow.
  const std::int64_t row_chunks = (std::int64_t(rows) + pj::kTileRows - 1) / pj::kTileRows;
  const std::int64_t dv_chunks = (s.head_dim + dv - 1) / dv;
  if (std::int64_t(s.num_kv_heads) * row_chunks * dv_chunks > 0x7fffffff || s.num_seqs > 65535)
    throw NotSupported("query", fmt::format("{} sequences x {} KV heads x {} head chunks x {} dim chunks: more CTAs "
                                            "than a grid holds",
                                            s.num_seqs, s.num_kv_heads, row_chunks, dv_chunks));
  // (LaunchInfo's heads_per_cta and head_chunks count query rows.)
  info.head_chunks = int(row_chunks);
  info.heads_per_cta = int((rows + row_chunks - 1) / row_chunks);
  info.v_dims = dv;
  info.dv_chunks = int(dv_chunks);
}

// Partitions per sequence: as forced (a partition length, batch invariance,
// num_splits), else enough CTAs to fill every SM, none smaller than
// kMinChunkTokens.
void plan_partitions(const ProblemShape& s, const PagedAttentionOptions& o, const DeviceInfo& d, const Request& r,
                     const TileConfig& cfg, LaunchInfo& info) {
  if (long_queries(s)) {
    // Many row chunks already fill the GPU, and partials of every row of
    // every partition would be a large workspace: one partition.
    info.num_splits = 1;
    info.chunk_tokens = 0;
    info.source = r.use_tuned ? "profile" : "heuristic";
    return;
  }
  const std::int64_t units = std::int64_t(s.num_seqs) * s.num_kv_heads * info.head_chunks * info.dv_chunks;
  const std::int64_t slots =
      std::int64_t(d.sm_count) *
      ctas_per_sm(d, info.smem_bytes, info.threads, regs_estimate(s, r.simt, register_staged(s, r.dv, cfg, r.simt)));
  const std::int64_t max_useful =
      std::max<std::int64_t>(1, (s.max_context_len + kMinChunkTokens - 1) / kMinChunkTokens);
  // Fixed-length partitions: ceil(max_context_len / chunk) of them per sequence.
  const auto use_chunk = [&](std::int64_t chunk) {
    chunk = std::min<std::int64_t>(chunk, std::int64_t(1) << 30);  // longer than any context
    info.chunk_tokens = int((chunk + cfg.tile - 1) / cfg.tile * cfg.tile);
    info.num_splits =
        int(std::clamp<std::int64_t>((s.max_context_len + info.chunk_tokens - 1) / info.chunk_tokens, 1, 65535));
  };
  info.chunk_tokens = 0;
  if (r.tuned_chunk) {
    use_chunk(r.forced.chunk_tokens);
    info.source = "profile";
  } else if (!r.use_tuned && r.forced.chunk_tokens > 0) {
    use_chunk(r.forced.chunk_tokens);
    info.source = "user";
  } else if (o.batch_invariant) {
    use_chunk(kFixedChunkTokens);
    info.source = "batch-invariant";
  } else if (o.num_splits >= 1) {
    info.num_splits = o.num_splits;
    info.source = "user";
  } else {
    info.source = r.use_tuned ? "profile" : "heuristic";
    info.num_splits = 1;
    if (units > 0 && units * 10 < slots * 8 && slots / units >= 2) {
      // Too few CTAs to fill the GPU: cut every sequence evenly.
      const std::int64_t splits = slots / units;
      info.num_splits = int(std::clamp<std::int64_t>(splits, 1, std::min<std::int64_t>(max_useful, 65535)));
    } else if (units < 2 * slots && s.max_context_len >= 2 * kFixedChunkTokens) {
      // (Also where an even cut would be one partition, between half and 0.8
      // of a wave: a ragged batch there ran far slower unsplit;
      // docs/performance.md, v0.9.)
      use_chunk(kFixedChunkTokens);  // one to two waves: balance possibly ragged lengths
    }
  }
}

jit::KernelSpec decode_spec(const ProblemShape& s, const Request& r, const TileConfig& cfg, const std::string& arch) {
  jit::KernelSpec k;
  k.q_dtype = s.dtype;
  k.kv_dtype = kv_dtype_of(s);
  k.out_dtype = s.out_dtype;
  k.head_dim = s.head_dim;
  k.v_dims = r.dv;
  k.tile_tokens = cfg.tile;
  k.warps = cfg.warps;
  k.stages = cfg.stages;
  k.compute = r.simt ? jit::Compute::simt : jit::Compute::mma;
  k.arch = arch;
  return k;
}

// The host schedule's grid and how its partitions merge.
void plan_grid_and_merge(const ProblemShape& s, const DeviceInfo& d, bool clusters, Plan& plan) {
  LaunchInfo& info = plan.info;
  info.grid[0] = s.num_kv_heads * info.head_chunks * info.dv_chunks;
  info.grid[1] = s.num_seqs;
  info.grid[2] = info.num_splits;
  // Small split calls: a sequence's partitions as one cluster, merged through
  // each other's shared memory instead of fp32 partials, a fence and a
  // counter in global memory (the last to finish reading them back); no
  // workspace, and faster small calls. Only for grids of at most half the
  // SMs: a cluster launches when all its CTAs fit in one GPC at once and
  // holds its slots until the slowest one is done, which made large and
  // ragged batches in clusters of 8 much slower (docs/performance.md, v0.9).
  const std::int64_t ctas = std::int64_t(info.grid[0]) * info.grid[1] * info.grid[2];
  if (clusters && d.cc_major >= 9 && info.num_splits >= 2 && info.num_splits <= kMaxClusterSplits &&
      ctas <= d.sm_count / 2)
    info.cluster = info.num_splits;
  // The kernel carries only the merge tail it runs (compile time; see pj::Merge).
  plan.decode.merge = info.num_splits == 1 ? jit::Merge::none
                      : info.cluster > 1   ? jit::Merge::cluster
                                           : jit::Merge::global;
  info.decode_kernel = plan.decode.name_expression();
}

// The workspace of the host schedule's global merge.
void plan_global_merge(const ProblemShape& s, Plan& plan) {
  const LaunchInfo& info = plan.info;
  if (double(s.num_seqs) * s.num_heads * s.q_len * info.num_splits * (s.head_dim + info.dv_chunks) * 4.0 > 0x1p60)
    throw NotSupported("options.num_splits", fmt::format("{} partitions of this problem need more than 2^60 bytes of "
                                                         "workspace",
                                                         info.num_splits));
  lay_out_workspace(s, std::int64_t(s.num_seqs) * s.num_heads * s.q_len * info.num_splits, plan);
}

// The launch values the decode kernel compiles in (pj::DecodeConsts), each
// the value decode_params passes: the page shift and group from the shape;
// the split count only where the host schedule fixes it, whatever the merge
// (a cluster is the plan's num_splits CTAs), never with the device schedule
// (the kernel plans its own partitions; the plan holds none).
void specialize_decode(const ProblemShape& s, const KernelSpecialization& sp, Plan& plan) {
  jit::KernelSpec& k = plan.decode;
  if (sp.page) k.page_shift = page_shift_of(s.page_size);
  if (sp.group) k.group = s.group();
  if (sp.splits && k.schedule == jit::Schedule::host) k.splits = plan.info.num_splits;
  plan.info.decode_kernel = k.name_expression();
}

}  // namespace

int page_shift_of(int page_size) {
  int shift = 0;
  while (shift < 30 && (1 << shift) < page_size) ++shift;
  return shift;
}

bool long_queries(const ProblemShape& s) {
  return s.ragged && std::int64_t(s.group()) * s.q_len > pj::kTileRows;
}

int work_items_for(int waves, int sm_count, int ctas_per_sm, int columns) {
  const std::int64_t slots = std::int64_t(waves) * sm_count * ctas_per_sm;
  return int(std::clamp<std::int64_t>((slots + columns - 1) / std::max(columns, 1), 1, 65535));
}

Plan make_plan(const ProblemShape& s, const PagedAttentionOptions& o, const DeviceInfo& d, const std::string& arch,
               const tuning::Choice* tuned, bool clusters, bool device_schedule, KernelSpecialization specialize) {
  if (is_fp8(s.kv_dtype) && d.cc_major * 10 + d.cc_minor < 89)
    throw NotSupported("key_cache", fmt::format("{} caches need an sm_89+ GPU (fp8 conversions); {} is sm_{}{}",
                                                dtype_name(s.kv_dtype), d.name, d.cc_major, d.cc_minor));
  // A tuned profile's choice counts as forced where the options leave the
  // choice open (tuning::profile_applies); its split policy only where they
  // do not set one either. The registry checked it against this device; a
  // stale one falls back to the heuristic.
  const bool use_tuned = tuned && tuning::profile_applies(o);
  if (use_tuned && !tuned_tile_fits(s, d, tuned->config, s.dtype == DType::f32))
    return make_plan(s, o, d, arch, nullptr, clusters, device_schedule, specialize);
  const Request r = request_of(s, o, tuned, use_tuned);

  Plan plan;
  LaunchInfo& info = plan.info;
  const TileConfig cfg = choose_tile(s, o, d, r);
  info.smem_bytes = checked_smem(s, d, r, cfg);
  info.compute = r.simt ? "simt" : "mma";
  info.tile_tokens = cfg.tile;
  info.warps = cfg.warps;
  info.stages = cfg.stages;
  info.threads = cfg.warps * 32;
  plan_rows(s, r.dv, info);
  plan_partitions(s, o, d, r, cfg, info);
  if (use_tuned) info.profile = tuned->describe();
  plan.decode = decode_spec(s, r, cfg, arch);
  plan_grid_and_merge(s, d, clusters, plan);

  // Partitions the engine chooses for a batch: the kernel cuts them from the
  // lengths on the device, balanced whatever they are (a profile's partition
  // length was chosen for uniform lengths).
  const bool automatic = o.num_splits == 0 && !o.batch_invariant && !(!use_tuned && r.forced.chunk_tokens > 0);
  const int user_waves = o.kernel_config ? o.kernel_config->work_waves : 0;
  const int waves = user_waves ? user_waves : r.forced.work_waves ? r.forced.work_waves : kDefaultWorkWaves;
  const bool scheduled = device_schedule && automatic && !long_queries(s) && plan_device_schedule(s, d, waves, plan);
  if (!scheduled && info.num_splits > 1 && info.cluster == 1) plan_global_merge(s, plan);
  if (specialize.any()) specialize_decode(s, specialize, plan);
  return plan;
}

}  // namespace pagedjit::attention

namespace pagedjit {

LaunchInfo plan_problem(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                        bool cluster_merge, bool device_schedule, KernelSpecialization specialize) {
  return attention::make_plan(shape, options, device, nullptr, cluster_merge, device_schedule, specialize).info;
}

std::string LaunchInfo::describe() const {
  const std::string splits = work_items > 0 ? fmt::format("device-schedule items={} waves={}", work_items, work_waves)
                                            : fmt::format("splits={}", num_splits);
  return fmt::format("{} tile={} warps={} stages={} {} heads/cta={}x{} grid=[{},{},{}]{} smem={}B ws={}B src={}",
                     splits, tile_tokens, warps, stages, compute, heads_per_cta, head_chunks, grid[0], grid[1], grid[2],
                     cluster > 1 ? fmt::format(" cluster={}", cluster) : "", smem_bytes, workspace_bytes, source);
}

}  // namespace pagedjit
