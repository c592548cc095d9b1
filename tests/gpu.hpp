// GPU availability for the tests: GPU test cases carry `skip_without_gpu()`
// so that on a machine without one they are reported as skipped, never passed.
#pragma once
#include <doctest/doctest.h>

#include "pagedjit/engine.hpp"
#include "pagedjit/testing.hpp"

namespace pjtest {

bool has_gpu();
pagedjit::Engine& engine();  // one engine on device 0, shared by the GPU tests
// True under compute-sanitizer: PAGEDJIT_UNDER_SANITIZER=1 (scripts/sanitize_gpu.sh
// and the ctest sanitizer entries set it; 0 forces false), else detected from
// what the tool exports to the process it starts (NV_SANITIZER_INJECTION_PORT_BASE,
// or CUDA_INJECTION64_PATH naming its library). The giant GPU cases then shrink
// to sizes the tools get through, keeping what each one tests.
bool under_sanitizer();
inline doctest::skip skip_without_gpu() {
  return doctest::skip(!has_gpu());
}
// Copies `src`'s inputs (query, caches, lengths, table) into the buffers `dst`
// views, which must be at least as large: a captured graph then replays on
// new data. Waits for the copies.
void copy_inputs(const pagedjit::PagedAttentionArgs& dst, const pagedjit::testing::DeviceProblem& src);

}  // namespace pjtest
