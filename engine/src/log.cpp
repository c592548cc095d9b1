#include "log.hpp"

#include <cstdio>

namespace pagedjit {

void log_warning(const std::string& message) {
  const std::string line = "pagedjit: " + message + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace pagedjit
