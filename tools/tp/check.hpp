// Error checks for the CUDA runtime and NCCL calls of pagedjit-tp: a failed
// call throws, naming the call, the error and where it was made.
#pragma once
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <cstring>
#include <stdexcept>
#include <string>

#ifdef PAGEDJIT_TP_NCCL
#include <nccl.h>
#endif

namespace pjtp {

struct ToolError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

inline void check_cuda(cudaError_t r, const char* call, const char* file, int line) {
  if (r == cudaSuccess) return;
  throw ToolError(fmt::format("CUDA runtime call {} failed at {}:{}: {} ({}): {}", call, base_name(file), line,
                              cudaGetErrorName(r), int(r), cudaGetErrorString(r)));
}

#ifdef PAGEDJIT_TP_NCCL
inline void check_nccl(ncclResult_t r, const char* call, const char* file, int line) {
  if (r == ncclSuccess) return;
  const char* last = ncclGetLastError(nullptr);
  throw ToolError(fmt::format("NCCL call {} failed at {}:{}: {} ({}){}{}", call, base_name(file), line,
                              ncclGetErrorString(r), int(r), last && *last ? ": " : "", last ? last : ""));
}
#endif

}  // namespace pjtp

#define TP_CUDA(call) ::pjtp::check_cuda((call), #call, __FILE__, __LINE__)
#define TP_NCCL(call) ::pjtp::check_nccl((call), #call, __FILE__, __LINE__)
