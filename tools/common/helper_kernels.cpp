#include "helper_kernels.hpp"

#include <fmt/format.h>
#include <nvrtc.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"

namespace pjbench {
namespace {

constexpr const char* kSource = R"(
extern "C" __global__ void pj_bench_empty() {}

// Every 16-byte vector of src once; the xor of all words decides a store that
// never happens in practice, so the loads cannot be optimized away.
extern "C" __global__ void __launch_bounds__(1024)
pj_bench_read(const uint4* __restrict__ src, unsigned long long n, unsigned int* __restrict__ sink) {
  constexpr int U = 8;
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned int acc = 0;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = __ldg(src + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldg(src + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x8badf00du) sink[blockIdx.x] = acc;
}
)";

void nvrtc_ok(nvrtcResult r, const char* call, const std::string& log = "") {
  if (r != NVRTC_SUCCESS)
    throw pagedjit::CompileError("pagedjit-bench helper kernels",
                                 fmt::format("{} failed: {}\n{}", call, nvrtcGetErrorString(r), log), {}, "");
}

// The device's exact target when NVRTC knows it, else PTX for the newest
// target it knows (the driver JIT-compiles it).
std::string pick_target(const std::string& arch) {
  int n = 0;
  nvrtcGetNumSupportedArchs(&n);
  std::vector<int> archs(std::size_t(std::max(n, 0)));
  if (n > 0) nvrtcGetSupportedArchs(archs.data());
  const auto us = arch.find('_');
  const int want = us == std::string::npos ? 0 : std::atoi(arch.c_str() + us + 1);
  if (archs.empty() || std::find(archs.begin(), archs.end(), want) != archs.end()) return arch;
  return fmt::format("compute_{}", *std::max_element(archs.begin(), archs.end()));
}

}  // namespace

std::string nvrtc_version_string() {
  int major = 0, minor = 0;
  nvrtcVersion(&major, &minor);
  return fmt::format("{}.{}", major, minor);
}

HelperKernels::HelperKernels(const pagedjit::DeviceInfo& device) {
  const auto t0 = std::chrono::steady_clock::now();
  target_ = pick_target(device.arch());
  const bool ptx = target_.rfind("compute_", 0) == 0;
  nvrtcProgram prog = nullptr;
  nvrtc_ok(nvrtcCreateProgram(&prog, kSource, "pj_bench_helpers.cu", 0, nullptr, nullptr), "nvrtcCreateProgram");
  const std::string arch_opt = "--gpu-architecture=" + target_;
  const char* opts[] = {arch_opt.c_str(), "-std=c++17"};
  const nvrtcResult r = nvrtcCompileProgram(prog, 2, opts);
  std::size_t log_size = 0;
  nvrtcGetProgramLogSize(prog, &log_size);
  std::string log(log_size, '\0');
  if (log_size) nvrtcGetProgramLog(prog, log.data());
  std::vector<char> image;
  try {
    nvrtc_ok(r, "nvrtcCompileProgram", log);
    std::size_t size = 0;
    if (ptx) {
      nvrtc_ok(nvrtcGetPTXSize(prog, &size), "nvrtcGetPTXSize");
      image.resize(size);
      nvrtc_ok(nvrtcGetPTX(prog, image.data()), "nvrtcGetPTX");
    } else {
      nvrtc_ok(nvrtcGetCUBINSize(prog, &size), "nvrtcGetCUBINSize");
      image.resize(size);
      nvrtc_ok(nvrtcGetCUBIN(prog, image.data()), "nvrtcGetCUBIN");
    }
  } catch (...) {
    nvrtcDestroyProgram(&prog);
    throw;
  }
  nvrtcDestroyProgram(&prog);

  const pagedjit::DriverApi& d = pagedjit::driver();
  pagedjit::check(d.cuLibraryLoadData(&library_, image.data(), nullptr, nullptr, 0, nullptr, nullptr, 0),
                  "cuLibraryLoadData(helper kernels)");
  CUkernel k = nullptr;
  pagedjit::check(d.cuLibraryGetKernel(&k, library_, "pj_bench_empty"), "cuLibraryGetKernel(pj_bench_empty)");
  pagedjit::check(d.cuKernelGetFunction(&empty_, k), "cuKernelGetFunction");
  pagedjit::check(d.cuLibraryGetKernel(&k, library_, "pj_bench_read"), "cuLibraryGetKernel(pj_bench_read)");
  pagedjit::check(d.cuKernelGetFunction(&read_, k), "cuKernelGetFunction");
  compile_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

HelperKernels::~HelperKernels() {
  if (library_) pagedjit::driver().cuLibraryUnload(library_);
}

}  // namespace pjbench
