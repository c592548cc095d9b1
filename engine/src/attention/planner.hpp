// Turns a validated problem into a launch plan: which kernel specializations,
// how many partitions, what grid. Pure host code: no driver, testable anywhere.
#pragma once
#include <cstdint>
#include <string>

#include "jit/kernel_spec.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pj_params.cuh"
#include "tuning/registry.hpp"

namespace pagedjit::attention {

struct Plan {
  LaunchInfo info;
  jit::KernelSpec decode;
  // Workspace layout (bytes) when the context is split: per-(sequence, CTA
  // column) counters of finished partitions first (zero between calls: the
  // merging CTA resets its counter), then fp32 partial outputs and their
  // log-sum-exps.
  std::int64_t counters_bytes = 0, part_o_offset = 0, part_lse_offset = 0;
};

// Smallest partition worth its fp32 partial traffic and merge work.
constexpr int kMinChunkTokens = pj::kMinPartitionTokens;
// Partition length for batches of one to two waves of CTAs, whose lengths may
// be ragged (the host never reads them): sequences up to this length are
// untouched, longer ones are cut so the scheduler can balance. A sweep found
// ragged batches gain clearly and uniform ones lose little (docs/performance.md,
// v0.4). Also the batch-invariant partition length.
constexpr int kFixedChunkTokens = 1536;

// Most partitions merged in a cluster: the portable cluster size.
constexpr int kMaxClusterSplits = 8;

// Device schedule: work items per CTA slot when neither the options nor a
// profile say (KernelConfig::work_waves).
constexpr int kDefaultWorkWaves = 1;

// Device schedule: the work items a KV-head column aims at for `waves` items
// per CTA slot of `sm_count` SMs holding `ctas_per_sm` CTAs each.
// A ragged call whose queries may be longer than one CTA's rows: the decode
// kernel then runs unsplit, and the prefill kernel takes it where it can.
bool long_queries(const ProblemShape& s);

int work_items_for(int waves, int sm_count, int ctas_per_sm, int columns);

// log2 of a page size (a power of two, validated): DecodeParams::page_shift.
int page_shift_of(int page_size);

// `tuned`: a tuned profile's choice for this shape (tuning::DeviceProfiles),
// used where the options leave the choice to the engine. `clusters`: on
// sm_90+, merge 2..kMaxClusterSplits partitions through distributed shared
// memory (EngineOptions::cluster_merge). `device_schedule`: batches whose
// partitions the engine chooses are cut by the kernel from the device-side
// lengths (EngineOptions::device_schedule); the plan then holds an upper
// bound of the work items (from the shared-memory occupancy), which the
// launch lowers to the compiled kernel's real occupancy. `specialize`: the
// launch values the decode kernel compiles in (EngineOptions::specialize;
// the split count only where the host schedule fixes it).
Plan make_plan(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
               const std::string& arch, const tuning::Choice* tuned = nullptr, bool clusters = true,
               bool device_schedule = true, KernelSpecialization specialize = {});
// The same for the device's own target, jit::clamp_arch(device.arch())
// (planner_arch.cpp: the planner itself never asks NVRTC).
Plan make_plan(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
               const tuning::Choice* tuned = nullptr, bool clusters = true, bool device_schedule = true,
               KernelSpecialization specialize = {});

}  // namespace pagedjit::attention

namespace pagedjit {

// Plans a problem for a device without one being present. `cluster_merge`:
// as EngineOptions::cluster_merge of the engine that would run it (the merge
// mode is part of the kernel). `device_schedule`: as EngineOptions::device_schedule.
// `specialize`: as EngineOptions::specialize.
LaunchInfo plan_problem(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                        bool cluster_merge = true, bool device_schedule = true, KernelSpecialization specialize = {});

}  // namespace pagedjit
