// Makes a device's primary context current for the calling thread (the
// engine then needs no push/pop, and helper kernels and buffers live in it).
// Shared by pagedjit-bench and pagedjit-tune.
#pragma once
#include <cuda.h>

#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"

namespace pjbench {

class PrimaryContext {
 public:
  explicit PrimaryContext(int ordinal) {
    const pagedjit::DriverApi& d = pagedjit::driver();
    pagedjit::check(d.cuDeviceGet(&dev_, ordinal), "cuDeviceGet");
    pagedjit::check(d.cuDevicePrimaryCtxRetain(&ctx_, dev_), "cuDevicePrimaryCtxRetain");
    pagedjit::check(d.cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
  }
  ~PrimaryContext() { pagedjit::driver().cuDevicePrimaryCtxRelease(dev_); }
  PrimaryContext(const PrimaryContext&) = delete;
  PrimaryContext& operator=(const PrimaryContext&) = delete;

 private:
  CUdevice dev_ = 0;
  CUcontext ctx_ = nullptr;
};

}  // namespace pjbench
