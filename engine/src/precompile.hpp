// Compiling a problem's kernels ahead of its first call, without a GPU: for
// tools that warm the kernel cache (defined in engine.cpp).
#pragma once
#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"

namespace pagedjit {

// Compiles (or finds in the cache) every kernel an Engine with default
// options launches for this problem on `device`: planned from the tuned
// profiles for that GPU, then the heuristic (plan_problem uses the heuristic
// only). Works without a GPU. Returns the plan. An engine made with
// EngineOptions::cluster_merge = false (device_schedule = false) needs
// `cluster_merge` (`device_schedule`) false here; EngineOptions::specialize
// the same `specialize`.
LaunchInfo precompile(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                      bool cluster_merge = true, bool device_schedule = true, KernelSpecialization specialize = {});

}  // namespace pagedjit
