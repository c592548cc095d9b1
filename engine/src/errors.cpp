#include "pagedjit/errors.hpp"

#include <fmt/format.h>

namespace pagedjit {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::not_supported:
      return "not_supported";
    case ErrorCode::driver_not_found:
      return "driver_not_found";
    case ErrorCode::stub_library:
      return "stub_library";
    case ErrorCode::no_device:
      return "no_device";
    case ErrorCode::driver_too_old:
      return "driver_too_old";
    case ErrorCode::driver_error:
      return "driver_error";
    case ErrorCode::compile_error:
      return "compile_error";
    case ErrorCode::cache_error:
      return "cache_error";
    case ErrorCode::jit_disabled:
      return "jit_disabled";
    case ErrorCode::device_data:
      return "device_data";
  }
  return "unknown";
}

InvalidArgument::InvalidArgument(std::string argument, const std::string& expected, const std::string& got)
    : Error(ErrorCode::invalid_argument,
            fmt::format("{}'{}': expected {}, got {}", kArgumentErrorPrefix, argument, expected, got)),
      argument_(std::move(argument)) {}

NotSupported::NotSupported(std::string argument, const std::string& message)
    : Error(ErrorCode::not_supported,
            fmt::format("{}'{}': not supported: {}", kArgumentErrorPrefix, argument, message)),
      argument_(std::move(argument)) {}

DriverError::DriverError(ErrorCode code, int result, std::string call, const std::string& message)
    : Error(code, message), result_(result), call_(std::move(call)) {}

CompileError::CompileError(std::string kernel, std::string log, std::vector<std::string> options, std::string excerpt)
    : Error(ErrorCode::compile_error,
            fmt::format("NVRTC failed to compile {}\n--- log ---\n{}\n--- options ---\n{}\n--- source ---\n{}", kernel,
                        log, fmt::join(options, " "), excerpt)),
      kernel_(std::move(kernel)),
      log_(std::move(log)),
      options_(std::move(options)),
      excerpt_(std::move(excerpt)) {}

}  // namespace pagedjit
