// pagedjit-demo: the seed example on GPU 0, checked against the CPU reference.
// Without a GPU it says so and compiles the example's kernels for sm_90a.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "attention/validate.hpp"
#include "common/cli.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/pagedjit.hpp"
#include "pagedjit/testing.hpp"
#include "precompile.hpp"

using namespace pagedjit;

namespace {

constexpr const char* kUsage = R"(pagedjit-demo: the seed example on GPU 0, checked against the CPU reference

usage: pagedjit-demo [--help | --version]

Without a GPU it compiles the example's kernels for sm_90a instead and exits 0.
)";

// 4 sequences, 8 heads, head_dim 64, 100 pages of 16 tokens, lengths 32, 64,
// 48, 80, block table of 8 entries per sequence padded with -1.
testing::ProblemConfig seed_example(DType dtype) {
  testing::ProblemConfig c;
  c.num_heads = 8;
  c.num_kv_heads = 8;
  c.head_dim = 64;
  c.page_size = 16;
  c.dtype = c.out_dtype = dtype;
  c.context_lens = {32, 64, 48, 80};
  c.max_blocks = 8;
  c.spare_blocks = 100 - (2 + 4 + 3 + 5);
  c.seed = 2026;
  return c;
}

int offline(const std::string& reason) {
  fmt::print("No GPU available: {}\n", reason);
  fmt::print("Compiling the demo's kernels for sm_90a (NVIDIA H100) instead.\n");
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    const testing::HostProblem host(seed_example(dt));
    const ProblemShape shape = validate_call(host.args(), {});
    const auto t0 = std::chrono::steady_clock::now();
    const LaunchInfo info = precompile(shape, {}, DeviceInfo::h100_sxm());
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("  {:5} {}: ready in {:.0f} ms ({})\n", dtype_name(dt), info.decode_kernel, ms, info.describe());
  }
  fmt::print("OK: kernels compiled; run on a machine with an NVIDIA GPU to execute them.\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  pjtools::Cli cli("pagedjit-demo", kUsage, argc, argv);
  while (cli.next()) cli.unknown();  // only --help and --version
  fmt::print("pagedjit {} demo: paged-attention decode, seed example\n", kVersion);
  if (device_count() == 0) return offline(device_unavailable_reason());
  try {
    Engine engine(0);
    const DeviceInfo& dev = engine.device();
    fmt::print("GPU 0: {} (sm_{}{}, {} SMs), target {}\n", dev.name, dev.cc_major, dev.cc_minor, dev.sm_count,
               dev.arch());
    const DriverApi& d = driver();
    bool ok = true;
    for (int splits : {0, 2}) {
      testing::ProblemConfig cfg = seed_example(DType::bf16);
      testing::DeviceProblem prob(cfg);
      PagedAttentionOptions opts;
      opts.num_splits = splits;
      prob.poison_outputs();
      const auto t0 = std::chrono::steady_clock::now();
      LaunchInfo info = engine.paged_attention(prob.args(), opts, nullptr);
      check(d.cuCtxSynchronize(), "cuCtxSynchronize");
      const double first_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const testing::ErrorStats err = prob.check(opts);

      CUevent a, b;
      check(d.cuEventCreate(&a, CU_EVENT_DEFAULT), "cuEventCreate");
      check(d.cuEventCreate(&b, CU_EVENT_DEFAULT), "cuEventCreate");
      std::vector<float> times;
      for (int i = 0; i < 100; ++i) {
        check(d.cuEventRecord(a, nullptr), "cuEventRecord");
        engine.paged_attention(prob.args(), opts, nullptr);
        check(d.cuEventRecord(b, nullptr), "cuEventRecord");
        check(d.cuEventSynchronize(b), "cuEventSynchronize");
        float ms = 0;
        check(d.cuEventElapsedTime(&ms, a, b), "cuEventElapsedTime");
        times.push_back(ms);
      }
      d.cuEventDestroy(a);
      d.cuEventDestroy(b);
      std::sort(times.begin(), times.end());
      const bool pass = err.nonfinite == 0 && err.rel_l2 < 1e-2;
      ok = ok && pass;
      fmt::print(
          "\nquery bf16[4, 8, 64], cache bf16[100, 8, 16, 64] (blocks_heads), lengths 32 64 48 80, num_splits={}\n",
          splits);
      fmt::print("  plan:   {}\n", info.describe());
      fmt::print("  error:  rel L2 {:.2e}, max abs {:.2e}, non-finite {} vs float64 CPU reference -> {}\n", err.rel_l2,
                 err.max_abs, err.nonfinite, pass ? "PASS" : "FAIL");
      fmt::print("  time:   first call {:.1f} ms (compile + load + run), then median {:.1f} us per call\n", first_ms,
                 times[times.size() / 2] * 1000.0);
    }
    fmt::print("\n{}\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
  } catch (const Error& e) {
    fmt::print(stderr, "error ({}): {}\n", error_code_name(e.code()), e.what());
    return 1;
  }
}
