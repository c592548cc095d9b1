// The small-call section: host cost of a warm call against a bare
// cuLaunchKernel, GPU time of a tiny call (one by one and as CUDA graph
// replays), and run-time compilation cost.
#pragma once
#include <cuda.h>

#include <set>
#include <utility>

#include "case_runner.hpp"
#include "helper_kernels.hpp"
#include "json.hpp"
#include "pagedjit/engine.hpp"

namespace pjbench {

// The tiny call: one sequence of 1024 tokens, 32/8 heads, d128, bf16.
BenchCase tiny_case();

// `used` lists the (dtype, head_dim) pairs this process has already compiled,
// so the cold-compile measurement picks a pair it has not.
Json run_small_calls(pagedjit::Engine& engine, const HelperKernels& kernels,
                     const std::set<std::pair<pagedjit::DType, int>>& used, const RunSettings& s, CUstream stream);

}  // namespace pjbench
