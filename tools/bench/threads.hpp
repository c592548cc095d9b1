// Host cost with threads (pagedjit-bench --threads N): the small-call
// section's tiny call from N host threads at once, each on its own stream
// with its own inputs, outputs and caller-provided workspace (no call
// allocates), once with one engine shared by all N threads and once with an
// engine per thread; a bare cuLaunchKernel of an empty kernel from the same
// threads for the driver's own share, and each of them from one thread.
#pragma once
#include <string>

#include "../common/helper_kernels.hpp"
#include "../common/json.hpp"
#include "pagedjit/engine.hpp"

namespace pjbench {

// `shared`: the engine all threads share; the per-thread engines are made
// with `options` on its device. The primary context of that device must be
// current on the calling thread (each worker thread makes it current too).
// Errors of the driver or the engine come back as "error" in the JSON.
Json run_thread_scaling(pagedjit::Engine& shared, const pagedjit::EngineOptions& options, const HelperKernels& kernels,
                        int threads);

// The printed report of run_thread_scaling's JSON.
std::string thread_scaling_text(const Json& j);

}  // namespace pjbench
