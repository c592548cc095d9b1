// The driver layer: each failure to load is a distinct, typed error.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <memory>
#include <string>

#include "gpu.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"

using namespace pagedjit;

namespace {
// Runs the probe with PAGEDJIT_LIBCUDA=`lib` and returns its first line.
std::string probe(const std::string& lib) {
  const std::string cmd = "PAGEDJIT_LIBCUDA='" + lib + "' '" PAGEDJIT_DRIVER_PROBE "' 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  REQUIRE(p);
  std::array<char, 512> buf{};
  std::string out;
  if (fgets(buf.data(), int(buf.size()), p.get())) out = buf.data();
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}
}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("driver: a missing libcuda is driver_not_found") {
    CHECK(probe("/nonexistent/libcuda.so.1") == "driver_not_found");
  }

  TEST_CASE("driver: the toolkit's stub library is recognized") {
    CHECK(probe(PAGEDJIT_CUDA_STUB) == "stub_library");
  }

  TEST_CASE("driver: without a GPU the engine refuses with a typed error") {
    if (pjtest::has_gpu()) {
      CHECK(probe("libcuda.so.1").rfind("ok ", 0) == 0);
      return;
    }
    try {
      Engine e(0);
      FAIL("an engine was created without a GPU");
    } catch (const DriverError& e) {
      const ErrorCode c = e.code();
      CHECK((c == ErrorCode::driver_not_found || c == ErrorCode::no_device || c == ErrorCode::stub_library));
    }
    CHECK(device_count() == 0);
    CHECK_FALSE(device_unavailable_reason().empty());
  }
}
