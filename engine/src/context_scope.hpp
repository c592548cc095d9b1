// Makes the engine's context current for a scope, restoring the caller's.
#pragma once
#include <cuda.h>

#include <new>

#include "pagedjit/driver.hpp"

namespace pagedjit {

class ContextScope {
 public:
  ContextScope(const DriverApi& d, CUcontext ctx) : d_(d) {
    CUcontext cur = nullptr;
    check(d_.cuCtxGetCurrent(&cur), "cuCtxGetCurrent");
    if (cur != ctx) {
      check(d_.cuCtxPushCurrent(ctx), "cuCtxPushCurrent");
      pushed_ = true;
    }
  }
  // For teardown, which must not throw: at process exit the driver may be
  // deinitialized already, and then every call just fails.
  ContextScope(const DriverApi& d, CUcontext ctx, std::nothrow_t) noexcept : d_(d) {
    CUcontext cur = nullptr;
    if (d_.cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur != ctx) pushed_ = d_.cuCtxPushCurrent(ctx) == CUDA_SUCCESS;
  }
  ~ContextScope() {
    CUcontext popped = nullptr;
    if (pushed_) d_.cuCtxPopCurrent(&popped);
  }
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  const DriverApi& d_;
  bool pushed_ = false;
};

}  // namespace pagedjit
