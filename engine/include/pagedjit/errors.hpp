// Typed errors. Every failure of the engine is one of these, so callers can
// tell a bad argument from a missing driver from a compile failure.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace pagedjit {

enum class ErrorCode {
  invalid_argument,  // the call's arguments are wrong; nothing was launched
  not_supported,     // well-formed but not implemented (or a TPU-only option)
  driver_not_found,  // libcuda.so.1 could not be loaded
  stub_library,      // the toolkit's stub libcuda was loaded instead of the driver
  no_device,         // the driver works but the requested device does not exist
  driver_too_old,    // the driver cannot run code built by this toolkit
  driver_error,      // any other CUDA driver failure
  compile_error,     // NVRTC rejected a kernel
  cache_error,       // the kernel cache failed in a way that cannot degrade
  jit_disabled,      // PAGEDJIT_JIT=off and the kernel was not in the cache
  device_data,       // the validation mode found bad device data
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// How every InvalidArgument and NotSupported message starts, before the
// argument's name in quotes.
inline constexpr char kArgumentErrorPrefix[] = "pagedjit: argument ";

// A bad argument: `argument()` names it (e.g. "query", "options.num_splits").
class InvalidArgument : public Error {
 public:
  InvalidArgument(std::string argument, const std::string& expected, const std::string& got);
  const std::string& argument() const noexcept { return argument_; }

 private:
  std::string argument_;
};

class NotSupported : public Error {
 public:
  NotSupported(std::string argument, const std::string& message);
  const std::string& argument() const noexcept { return argument_; }

 private:
  std::string argument_;
};

// A CUDA driver failure. `result()` is the CUresult (0 when none applies),
// `call()` the driver function that failed.
class DriverError : public Error {
 public:
  DriverError(ErrorCode code, int result, std::string call, const std::string& message);
  int result() const noexcept { return result_; }
  const std::string& call() const noexcept { return call_; }

 private:
  int result_;
  std::string call_;
};

class CompileError : public Error {
 public:
  CompileError(std::string kernel, std::string log, std::vector<std::string> options, std::string excerpt);
  const std::string& kernel() const noexcept { return kernel_; }
  const std::string& log() const noexcept { return log_; }
  const std::vector<std::string>& options() const noexcept { return options_; }
  // The source lines the log points at, with a little context.
  const std::string& excerpt() const noexcept { return excerpt_; }

 private:
  std::string kernel_, log_;
  std::vector<std::string> options_;
  std::string excerpt_;
};

class CacheError : public Error {
 public:
  CacheError(ErrorCode code, const std::string& message) : Error(code, message) {}
};

// Reported by the validation mode: the first sequence whose device data is bad.
class DeviceDataError : public Error {
 public:
  DeviceDataError(int sequence, const std::string& message)
      : Error(ErrorCode::device_data, message), sequence_(sequence) {}
  int sequence() const noexcept { return sequence_; }

 private:
  int sequence_;
};

}  // namespace pagedjit
