// Compiling a problem's kernels ahead of its first call, without a GPU: for
// tools that warm the kernel cache (defined in engine.cpp).
#pragma once
#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"

namespace pagedjit {

// Compiles (or finds in the cache) every kernel `plan_problem` picks for this
// problem on `device`; works without a GPU. Returns the plan. An engine made
// with EngineOptions::cluster_merge = false needs `cluster_merge` false here.
LaunchInfo precompile(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
                      bool cluster_merge = true);

}  // namespace pagedjit
