// Prints "ok <devices>" or the error code of loading the driver.
#include <cstdio>

#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"

int main() {
  try {
    const pagedjit::DriverApi& d = pagedjit::driver();
    int n = 0;
    d.cuDeviceGetCount(&n);
    std::printf("ok %d\n", n);
  } catch (const pagedjit::Error& e) {
    std::printf("%s\n%s\n", pagedjit::error_code_name(e.code()), e.what());
  }
  return 0;
}
