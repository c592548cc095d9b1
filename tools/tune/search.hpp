// pagedjit-tune's search space (CPU only: the dry run and the tests use it
// without a GPU). A tuning problem is a bench case (tools/common/cases.hpp);
// its bucket is the exact fields of its shape plus ladder ranges of batch and
// context around it; its candidates are tile shapes (phase 1), then for the
// fastest few the device schedule's work items per CTA slot (batches it
// plans) or partition lengths (the rest) (phase 2), then the finalists
// re-timed and checked (phase 3).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../common/cases.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"
#include "tuning/profile.hpp"

namespace pjtune {

// The ladder range holding x >= 1: [1, 1], [2, 3], [4, 6], [7, 12], [13, 24],
// ...: the range around the power of two 2^k is [3 * 2^(k-2) + 1, 3 * 2^(k-1)]
// (values nearest 2^k in log terms), capped at 2^31 - 1.
pagedjit::tuning::Range ladder_range(std::int64_t x);

// The shape validate_call gives for the case's tensors (without building them).
pagedjit::ProblemShape shape_of(const pjbench::BenchCase& c);
// The case's bucket: exact fields of the shape, group [g, g], q_len
// [q, q], ladder ranges of num_seqs and max_context_len.
pagedjit::tuning::Bucket bucket_of(const pagedjit::ProblemShape& s);

// Why the case cannot be a tuning problem ("" when it can): forced tile,
// warps, stages, chunk, dv, waves or splits belong to the tuner.
std::string tuning_problem_error(const pjbench::BenchCase& c);

struct Candidate {
  pagedjit::KernelConfig config;
  int smem_bytes = 0;
  std::string pruned;  // why it cannot run on the device ("" when it can)
};

// Phase 1: warps 1, 2, 4, 8 x 16, 32 or 64 tokens per warp (tile <= 256) x
// stages 2, 3, 4, 6, with the heuristic's partitions (chunk_tokens 0) and
// output dims (v_dims 0; above head_dim 128 also half of the default).
// Configurations that cannot run on `device` come back with `pruned` set.
std::vector<Candidate> tile_candidates(const pagedjit::ProblemShape& s, const pagedjit::DeviceInfo& device);
// Phase 2: fixed partition lengths to try with a tile: 512, 1024, 1536, 2048,
// 4096, 8192, 16384 tokens, those shorter than max_context_len and giving at
// most 512 partitions.
std::vector<int> chunk_candidates(const pagedjit::ProblemShape& s);
// Phase 2 where the device schedule plans the batch: work items per CTA slot
// (KernelConfig::work_waves) to try with a tile: 1, 2, 3, 4, 6, 8.
std::vector<int> waves_candidates();
// Whether `config` (none: the heuristic's own) plans `s` on `device` with the
// device schedule (LaunchInfo::work_items > 0). False when it cannot be planned.
bool device_scheduled(const pagedjit::ProblemShape& s, const std::optional<pagedjit::KernelConfig>& config,
                      const pagedjit::DeviceInfo& device);
// Phase 2 of one of the fastest tiles (chunk_tokens and work_waves 0): where
// its plan takes the device schedule, the tile with each of
// waves_candidates() but the one its own plan uses (phase 1 timed that plan);
// else with each of chunk_candidates(s): a fixed partition length makes a
// host schedule, and the device schedule ignores partition lengths.
std::vector<pagedjit::KernelConfig> phase2_configs(const pagedjit::ProblemShape& s, const pagedjit::KernelConfig& tile,
                                                   const pagedjit::DeviceInfo& device);
// What a profile entry records for a configuration timed on `s`: where its
// plan takes the device schedule, the work_waves that plan used (stated, so
// that a change of the engine's default leaves the entry as timed); else
// work_waves 0 (the knob does not apply).
pagedjit::KernelConfig entry_config(const pagedjit::ProblemShape& s, pagedjit::KernelConfig config,
                                    const pagedjit::DeviceInfo& device);
constexpr int kFinalists = 3;  // tile configs kept for phase 2, and configs re-timed in phase 3

// The partitions a configuration (none: the heuristic's own) gets for `s` on
// `device`: "splits=N chunk=C cluster=K", "device-schedule waves=W", or
// "unplannable". Part of a stored
// timing's key: chunk 0 means "the heuristic's split", which changes with the
// heuristic, and a timing of another plan must not be reused.
std::string plan_text(const pagedjit::ProblemShape& s, const std::optional<pagedjit::KernelConfig>& config,
                      const pagedjit::DeviceInfo& device);

// Lowercase letters and digits of a device name, the rest as '-':
// "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3".
std::string slug(const std::string& device_name);

// The built-in GPU presets: "h100" or "h200". Throws std::invalid_argument.
pagedjit::DeviceInfo gpu_preset(const std::string& name);

}  // namespace pjtune
