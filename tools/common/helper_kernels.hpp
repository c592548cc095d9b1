// The benchmark's own tiny kernels, compiled with NVRTC for the device and
// loaded through the engine's driver table: an empty kernel (the bare launch
// the engine's host cost is compared with) and a read-only reduction (the
// read bandwidth ceiling).
#pragma once
#include <cuda.h>

#include <string>

#include "pagedjit/device.hpp"

namespace pjbench {

class HelperKernels {
 public:
  // Compiles and loads into the current context. Throws pagedjit::Error.
  explicit HelperKernels(const pagedjit::DeviceInfo& device);
  ~HelperKernels();
  HelperKernels(const HelperKernels&) = delete;
  HelperKernels& operator=(const HelperKernels&) = delete;

  // extern "C" __global__ void pj_bench_empty()
  CUfunction empty() const { return empty_; }
  // extern "C" __global__ void pj_bench_read(const uint4* src, unsigned long long n16, unsigned* sink):
  // reads n16 16-byte vectors with a grid-stride loop, 8 loads in flight per thread.
  CUfunction read() const { return read_; }
  const std::string& target() const { return target_; }
  double compile_ms() const { return compile_ms_; }

 private:
  CUlibrary library_ = nullptr;
  CUfunction empty_ = nullptr, read_ = nullptr;
  std::string target_;
  double compile_ms_ = 0;
};

// NVRTC's version, "13.0".
std::string nvrtc_version_string();

}  // namespace pjbench
