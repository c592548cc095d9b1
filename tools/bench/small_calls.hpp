// The small-call section: host cost of a warm call against a bare
// cuLaunchKernel, GPU time of a tiny call (one by one and as CUDA graph
// replays), and run-time compilation: a cold compile and a warm disk-cache
// load, each in a child process of this binary.
#pragma once
#include <cuda.h>

#include <string>
#include <vector>

#include "../common/helper_kernels.hpp"
#include "../common/json.hpp"
#include "case_runner.hpp"
#include "pagedjit/engine.hpp"

namespace pjbench {

// The tiny call: one sequence of 1024 tokens, 32/8 heads, d128, bf16.
BenchCase tiny_case();

// Also runs the two compile-timing children (below) on a new temporary
// cache directory, with the engine's device ordinal.
Json run_small_calls(pagedjit::Engine& engine, const HelperKernels& kernels, const RunSettings& s, CUstream stream);

// The hidden flag that makes pagedjit-bench a compile-timing child:
//   pagedjit-bench --child-compile-timing cold|warm DIR [--device N]
// sets PAGEDJIT_CACHE_DIR=DIR (warm: also PAGEDJIT_JIT=off) before the engine
// reads it, times pagedjit::precompile() of the tiny call's kernels (cold:
// DIR must be empty; warm: they must be on disk) and, with a GPU, the first
// call's module load; prints one JSON line on stdout. Needs no GPU.
constexpr const char* kChildCompileTimingFlag = "--child-compile-timing";
// `args`: what follows the flag. Returns the exit status (0 ok, 1 failed, 2 usage).
int run_compile_timing_child(const std::vector<std::string>& args);

}  // namespace pjbench
