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

// What ptxas reports for a kernel (machine code only; PTX targets have no report).
struct ResourceUsage {
  int registers = 0;                                                 // per thread
  int stack_bytes = 0, spill_store_bytes = 0, spill_load_bytes = 0;  // local memory (stack: with callees')
  bool uses_local_memory() const { return stack_bytes > 0 || spill_store_bytes > 0 || spill_load_bytes > 0; }
};

// Compiles `spec` once more with ptxas's verbose report (diagnostics: the
// machine code is the same, and nothing is cached) and reads it.
ResourceUsage resource_usage(const KernelSpec& spec, const SourceSet& sources);
// Reads the ptxas verbose report of `function` (a lowered name) from an
// NVRTC log: "Used 251 registers", "0 bytes stack frame, 0 bytes spill
// stores, 0 bytes spill loads" and any cumulative stack size (callees').
// Throws CompileError when the log has no complete report for it.
ResourceUsage parse_resource_usage(const std::string& log, const std::string& function);

// The source lines an NVRTC log points at ("file(123): error ..."), with context.
std::string log_excerpt(const std::string& log, const SourceSet& sources, int context = 2);

}  // namespace pagedjit::jit
