#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>

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

bool under_sanitizer() {
  static const bool yes = [] {
    if (const char* v = std::getenv("PAGEDJIT_UNDER_SANITIZER"); v && *v) {
      const std::string s = v;
      return !(s == "0" || s == "off" || s == "false" || s == "no");
    }
    if (std::getenv("NV_SANITIZER_INJECTION_PORT_BASE")) return true;
    const char* injection = std::getenv("CUDA_INJECTION64_PATH");
    return injection && std::string(injection).find("sanitizer") != std::string::npos;
  }();
  return yes;
}

void copy_inputs(const pagedjit::PagedAttentionArgs& dst, const pagedjit::testing::DeviceProblem& src) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  const pagedjit::PagedAttentionArgs f = src.args();
  auto copy = [&](void* to, const void* from, std::size_t bytes) {
    pagedjit::check(d.cuMemcpyDtoD(reinterpret_cast<CUdeviceptr>(to), reinterpret_cast<CUdeviceptr>(from), bytes),
                    "cuMemcpyDtoD");
  };
  copy(dst.query.data, f.query.data, src.host().q.size());
  copy(dst.key_cache.data, f.key_cache.data, src.host().k.size());
  copy(dst.value_cache.data, f.value_cache.data, src.host().v.size());
  copy(dst.context_lens.data, f.context_lens.data, src.host().lens.size() * 4);
  copy(dst.block_tables.data, f.block_tables.data, src.host().table.size() * 4);
  // The copies run on the legacy stream, unordered with non-blocking streams.
  pagedjit::check(d.cuCtxSynchronize(), "cuCtxSynchronize");
}

}  // namespace pjtest

int main(int argc, char** argv) {
  // The tests never touch the user's kernel cache: the process-wide cache
  // (and everything else) uses a fresh directory, removed at the end.
  std::string cache_dir = (std::filesystem::temp_directory_path() / "pagedjit-tests-XXXXXX").string();
  if (!::mkdtemp(cache_dir.data())) return 2;
  ::setenv("PAGEDJIT_CACHE_DIR", cache_dir.c_str(), 1);
  for (const char* v : {"PAGEDJIT_CACHE", "PAGEDJIT_JIT", "PAGEDJIT_CACHE_MAX_BYTES", "PAGEDJIT_CACHE_LOCKS",
                        "PAGEDJIT_PROFILE_PATH", "PAGEDJIT_PROFILE_LOG"})
    ::unsetenv(v);
  if (pjtest::has_gpu())
    fmt::print("[pagedjit-tests] GPU tests run on device 0: {}{}\n", pjtest::engine().device().name,
               pjtest::under_sanitizer() ? " (under compute-sanitizer: the giant cases are shrunk)" : "");
  else
    fmt::print("[pagedjit-tests] no GPU: GPU tests are SKIPPED ({})\n", pagedjit::device_unavailable_reason());
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  std::error_code ec;
  std::filesystem::remove_all(cache_dir, ec);
  return rc;
}
