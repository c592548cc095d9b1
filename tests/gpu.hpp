// GPU availability for the tests: GPU test cases carry `skip_without_gpu()`
// so that on a machine without one they are reported as skipped, never passed.
#pragma once
#include <doctest/doctest.h>

#include "pagedjit/engine.hpp"

namespace pjtest {

bool has_gpu();
pagedjit::Engine& engine();  // one engine on device 0, shared by the GPU tests
inline doctest::skip skip_without_gpu() {
  return doctest::skip(!has_gpu());
}

}  // namespace pjtest
