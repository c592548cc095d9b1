#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <fmt/format.h>

#include "gpu.hpp"
#include "pagedjit/driver.hpp"

namespace pjtest {

bool has_gpu() {
  static const bool yes = pagedjit::device_count() > 0;
  return yes;
}

pagedjit::Engine& engine() {
  static pagedjit::Engine e(0);
  return e;
}

}  // namespace pjtest

int main(int argc, char** argv) {
  if (pjtest::has_gpu())
    fmt::print("[pagedjit-tests] GPU tests run on device 0: {}\n", pjtest::engine().device().name);
  else
    fmt::print("[pagedjit-tests] no GPU: GPU tests are SKIPPED ({})\n", pagedjit::device_unavailable_reason());
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
