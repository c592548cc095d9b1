// Compiles one KernelSpec with NVRTC. Needs no GPU.
#pragma once
#include <string>
#include <vector>

#include "jit/kernel_spec.hpp"
#include "jit/source_set.hpp"

namespace pagedjit::jit {

struct CompiledKernel {
  std::string key;           // KernelSpec::key of what was compiled
  std::string readable;      // KernelSpec::readable
  std::string lowered_name;  // mangled name of the instantiation
  std::string binary;        // CUBIN, or PTX when `is_ptx`
  bool is_ptx = false;
  std::string log;  // NVRTC's log (warnings, resource usage)
  double compile_ms = 0;
};

std::string nvrtc_version();               // e.g. "13.0"
std::vector<int> nvrtc_supported_archs();  // e.g. {75, 80, ..., 120}
// The target to compile for: `arch` itself when NVRTC can emit its machine
// code, else "compute_NN" (PTX, finished by the driver) for the newest NVRTC knows.
std::string clamp_arch(const std::string& arch);

CompiledKernel compile_kernel(const KernelSpec& spec, const SourceSet& sources);

// The source lines an NVRTC log points at ("file(123): error ..."), with context.
std::string log_excerpt(const std::string& log, const SourceSet& sources, int context = 2);

}  // namespace pagedjit::jit
