// Loads libcuda.so.1 with dlopen and resolves every entry point through
// cuGetProcAddress. Never linked against libcuda: see DESIGN.md.
#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <exception>

#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"

namespace pagedjit {
namespace {

typedef CUresult (*GetProcAddressFn)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);

struct Loaded {
  DriverApi api{};
  std::exception_ptr error;
};

std::string version_text(int v) {
  return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
}

DriverError stub_error(const char* path, const char* call) {
  return DriverError(ErrorCode::stub_library, int(CUDA_ERROR_STUB_LIBRARY), call,
                     fmt::format("the CUDA stub library was loaded ({}) instead of the driver; remove the toolkit's "
                                 "lib64/stubs directory from LD_LIBRARY_PATH",
                                 path));
}

// `version` is the CUDA version whose ABI matches cuda.h's declaration: the
// newest for nearly all entry points. A few changed signature without the
// header following (CUDA 13.0's cuCtxSynchronize takes a context; cuda.h
// still declares the 2.0 form), so those pin the version they are declared at.
void resolve(GetProcAddressFn get, const char* path, const char* name, void** slot, int version = CUDA_VERSION) {
  CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SUCCESS;
  const CUresult r = get(name, slot, version, CU_GET_PROC_ADDRESS_DEFAULT, &status);
  if (r == CUDA_ERROR_STUB_LIBRARY) throw stub_error(path, name);
  if (r != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || *slot == nullptr) {
    const ErrorCode code =
        status == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT ? ErrorCode::driver_too_old : ErrorCode::driver_error;
    throw DriverError(code, int(r), name,
                      fmt::format("the CUDA driver does not provide {} for CUDA {} (result {}, status {})", name,
                                  version_text(CUDA_VERSION), int(r), int(status)));
  }
}

Loaded load() {
  Loaded out;
  try {
    const char* override_path = std::getenv("PAGEDJIT_LIBCUDA");
    const char* path = override_path && *override_path ? override_path : "libcuda.so.1";
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* why = dlerror();
      throw DriverError(ErrorCode::driver_not_found, 0, "dlopen",
                        fmt::format("the CUDA driver ({}) could not be loaded: {}. Install the NVIDIA driver, or run "
                                    "on a machine with a GPU; compiling kernels works without it.",
                                    path, why ? why : "unknown error"));
    }
    auto get = reinterpret_cast<GetProcAddressFn>(dlsym(handle, "cuGetProcAddress_v2"));
    if (!get)
      throw DriverError(ErrorCode::driver_too_old, 0, "cuGetProcAddress_v2",
                        fmt::format("{} has no cuGetProcAddress_v2: the driver predates CUDA 12; pagedjit needs a "
                                    "driver for CUDA {} or newer",
                                    path, version_text(CUDA_VERSION)));
    DriverApi& a = out.api;
#define PJ_RESOLVE(fn) resolve(get, path, #fn, reinterpret_cast<void**>(&a.fn))
    PJ_RESOLVE(cuInit);
    PJ_RESOLVE(cuDriverGetVersion);
    PJ_RESOLVE(cuGetErrorName);
    PJ_RESOLVE(cuGetErrorString);
    const CUresult init = a.cuInit(0);
    if (init == CUDA_ERROR_STUB_LIBRARY) throw stub_error(path, "cuInit");
    int version = 0;
    check(a.cuDriverGetVersion(&version), "cuDriverGetVersion");
    a.version = version;
    if (version < CUDA_VERSION)
      throw DriverError(ErrorCode::driver_too_old, 0, "cuDriverGetVersion",
                        fmt::format("the CUDA driver supports CUDA {}, but pagedjit compiles with NVRTC {} and needs a "
                                    "driver for CUDA {} or newer",
                                    version_text(version), version_text(CUDA_VERSION), version_text(CUDA_VERSION)));
    if (init == CUDA_ERROR_NO_DEVICE)
      throw DriverError(ErrorCode::no_device, int(init), "cuInit", "the CUDA driver found no GPU on this machine");
    if (init != CUDA_SUCCESS) {
      const char* name = nullptr;
      a.cuGetErrorName(init, &name);
      throw DriverError(ErrorCode::driver_error, int(init), "cuInit",
                        fmt::format("cuInit failed: {} ({})", name ? name : "?", int(init)));
    }
    PJ_RESOLVE(cuDeviceGet);
    PJ_RESOLVE(cuDeviceGetCount);
    PJ_RESOLVE(cuDeviceGetName);
    PJ_RESOLVE(cuDeviceGetAttribute);
    PJ_RESOLVE(cuDeviceTotalMem);
    PJ_RESOLVE(cuDevicePrimaryCtxRetain);
    PJ_RESOLVE(cuDevicePrimaryCtxRelease);
    PJ_RESOLVE(cuCtxGetCurrent);
    PJ_RESOLVE(cuCtxSetCurrent);
    PJ_RESOLVE(cuCtxPushCurrent);
    PJ_RESOLVE(cuCtxPopCurrent);
    resolve(get, path, "cuCtxSynchronize", reinterpret_cast<void**>(&a.cuCtxSynchronize), 2000);
    PJ_RESOLVE(cuLibraryLoadData);
    PJ_RESOLVE(cuLibraryUnload);
    PJ_RESOLVE(cuLibraryGetKernel);
    PJ_RESOLVE(cuKernelGetFunction);
    PJ_RESOLVE(cuKernelSetAttribute);
    PJ_RESOLVE(cuFuncGetAttribute);
    PJ_RESOLVE(cuOccupancyMaxActiveBlocksPerMultiprocessor);
    PJ_RESOLVE(cuLaunchKernel);
    PJ_RESOLVE(cuLaunchKernelEx);
    PJ_RESOLVE(cuMemAlloc);
    PJ_RESOLVE(cuMemFree);
    PJ_RESOLVE(cuMemAllocAsync);
    PJ_RESOLVE(cuMemFreeAsync);
    PJ_RESOLVE(cuMemGetInfo);
    PJ_RESOLVE(cuMemcpyHtoD);
    PJ_RESOLVE(cuMemcpyDtoH);
    PJ_RESOLVE(cuMemcpyDtoD);
    PJ_RESOLVE(cuMemsetD8);
    PJ_RESOLVE(cuMemsetD32);
    PJ_RESOLVE(cuMemsetD8Async);
    PJ_RESOLVE(cuStreamCreate);
    PJ_RESOLVE(cuStreamDestroy);
    PJ_RESOLVE(cuStreamSynchronize);
    PJ_RESOLVE(cuStreamIsCapturing);
    PJ_RESOLVE(cuStreamGetId);
    PJ_RESOLVE(cuStreamWaitEvent);
    PJ_RESOLVE(cuStreamBeginCapture);
    PJ_RESOLVE(cuStreamEndCapture);
    // cuda.h maps cuGraphInstantiate to cuGraphInstantiateWithFlags; the plain
    // name may resolve to the 11.0 form with five arguments.
    resolve(get, path, "cuGraphInstantiateWithFlags", reinterpret_cast<void**>(&a.cuGraphInstantiate));
    PJ_RESOLVE(cuGraphLaunch);
    PJ_RESOLVE(cuGraphExecDestroy);
    PJ_RESOLVE(cuGraphDestroy);
    PJ_RESOLVE(cuEventCreate);
    PJ_RESOLVE(cuEventDestroy);
    PJ_RESOLVE(cuEventRecord);
    PJ_RESOLVE(cuEventSynchronize);
    PJ_RESOLVE(cuEventElapsedTime);
#undef PJ_RESOLVE
  } catch (...) {
    out.error = std::current_exception();
  }
  return out;
}

const Loaded& loaded() {
  static const Loaded l = load();  // thread-safe, once per process
  return l;
}

}  // namespace

const DriverApi& driver() {
  const Loaded& l = loaded();
  if (l.error) std::rethrow_exception(l.error);
  return l.api;
}

void check(CUresult r, const char* call) {
  if (r == CUDA_SUCCESS) return;
  const char* name = nullptr;
  const char* text = nullptr;
  const Loaded& l = loaded();
  if (l.api.cuGetErrorName) l.api.cuGetErrorName(r, &name);
  if (l.api.cuGetErrorString) l.api.cuGetErrorString(r, &text);
  throw DriverError(ErrorCode::driver_error, int(r), call,
                    fmt::format("CUDA driver call {} failed: {} ({}): {}", call, name ? name : "?", int(r),
                                text ? text : "no description"));
}

int device_count() noexcept {
  try {
    int n = 0;
    if (driver().cuDeviceGetCount(&n) != CUDA_SUCCESS) return 0;
    return n;
  } catch (...) {
    return 0;
  }
}

std::string device_unavailable_reason() {
  try {
    int n = 0;
    check(driver().cuDeviceGetCount(&n), "cuDeviceGetCount");
    return n > 0 ? "" : "the CUDA driver reports no device";
  } catch (const std::exception& e) {
    return e.what();
  }
}

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes) check(driver().cuMemAlloc(&ptr_, bytes), "cuMemAlloc");
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) driver().cuMemFree(ptr_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = 0, o.bytes_ = 0;
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) driver().cuMemFree(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = 0, o.bytes_ = 0;
  }
  return *this;
}
void DeviceBuffer::upload(const void* src, std::size_t bytes, std::size_t offset) {
  if (offset + bytes > bytes_)
    throw InvalidArgument("DeviceBuffer::upload", fmt::format("<= {} bytes", bytes_), std::to_string(offset + bytes));
  check(driver().cuMemcpyHtoD(ptr_ + offset, src, bytes), "cuMemcpyHtoD");
}
void DeviceBuffer::download(void* dst, std::size_t bytes, std::size_t offset) const {
  if (offset + bytes > bytes_)
    throw InvalidArgument("DeviceBuffer::download", fmt::format("<= {} bytes", bytes_), std::to_string(offset + bytes));
  check(driver().cuMemcpyDtoH(dst, ptr_ + offset, bytes), "cuMemcpyDtoH");
}

}  // namespace pagedjit
