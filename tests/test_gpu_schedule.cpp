// The device schedule (pj_schedule.cuh): partitions cut by the kernel from
// the lengths on the device. Against the float64 reference on ragged batches,
// bitwise repeatable, and balanced anew when a captured graph replays with
// other lengths. Outputs are poisoned (NaN) before every run.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gpu.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/testing.hpp"

using namespace pagedjit;

namespace {

// Lengths spread over orders of magnitude, as a server's batch has them.
std::vector<int> ragged_lengths(int n, int longest, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, std::log(double(longest)));
  std::vector<int> lens;
  for (int i = 0; i < n; ++i) lens.push_back(int(std::exp(u(rng))) - (rng() % 9 == 0 ? 1 : 0));  // some empty
  return lens;
}

double tolerance(DType dt) {
  return dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1e-2;
}

void check_against_reference(testing::DeviceProblem& prob, const PagedAttentionOptions& o, const std::string& what) {
  const testing::ErrorStats e = prob.check(o);
  INFO(what);
  INFO(fmt::format("rel_l2={:.3e} max_abs={:.3e} nonfinite={} lse_ok={}", e.rel_l2, e.max_abs, e.nonfinite, e.lse_ok));
  CHECK(e.nonfinite == 0);
  CHECK(e.rel_l2 < tolerance(prob.host().config().dtype));
  CHECK(e.lse_ok);
}

LaunchInfo run(Engine& engine, testing::DeviceProblem& prob, const PagedAttentionOptions& o, CUstream s = nullptr) {
  prob.poison_outputs();
  const LaunchInfo info = engine.paged_attention(prob.args(), o, s);
  check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
  return info;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu: device schedule: ragged batches match the reference" * pjtest::skip_without_gpu()) {
    struct Shape {
      const char* name;
      int seqs, heads, kv_heads, head_dim, page, q_len, longest;
      DType dtype;
      std::optional<DType> kv;
      std::int64_t window;
    };
    const Shape shapes[] = {
        {"mqa, 300 sequences", 300, 8, 1, 128, 16, 1, 6000, DType::bf16, {}, 0},
        {"group 7", 40, 28, 4, 128, 16, 1, 5000, DType::bf16, {}, 0},
        {"group 5, page 1, d96, fp16", 24, 10, 2, 96, 1, 1, 3000, DType::f16, {}, 0},
        {"q_len 3 with a window", 32, 16, 4, 64, 32, 3, 4000, DType::bf16, {}, 700},
        {"e4m3 cache", 48, 32, 8, 128, 16, 1, 4000, DType::bf16, DType::e4m3, 0},
        {"fp32, d256", 12, 4, 2, 256, 16, 1, 2000, DType::f32, {}, 0},
        {"many sequences", 1000, 4, 1, 64, 16, 1, 300, DType::bf16, {}, 0},
    };
    for (const Shape& sh : shapes) {
      testing::ProblemConfig c;
      c.num_heads = sh.heads, c.num_kv_heads = sh.kv_heads, c.head_dim = sh.head_dim, c.page_size = sh.page;
      c.dtype = c.out_dtype = sh.dtype;
      c.kv_dtype = sh.kv;
      c.q_len = sh.q_len;
      c.context_lens = ragged_lengths(sh.seqs, sh.longest, std::uint64_t(sh.seqs) * 7 + 1);
      c.context_lens[1] = sh.longest;  // at least one long sequence
      c.with_lse = true;
      c.seed = std::uint64_t(sh.seqs);
      testing::DeviceProblem prob(c);
      PagedAttentionOptions o;
      o.return_lse = true;
      if (sh.window) o.sliding_window = sh.window;
      const LaunchInfo info = run(pjtest::engine(), prob, o);
      INFO(info.describe());
      CHECK(info.work_items > 0);  // the device schedule ran
      check_against_reference(prob, o, sh.name);
      // More work items a slot: other cuts, still right.
      o.kernel_config = KernelConfig{};
      o.kernel_config->work_waves = 8;
      const LaunchInfo eight = run(pjtest::engine(), prob, o);
      CHECK(eight.work_items > info.work_items);
      check_against_reference(prob, o, std::string(sh.name) + ", 8 waves");
    }
  }

  TEST_CASE("gpu: device schedule: the same bits twice, and the host schedule's answer" * pjtest::skip_without_gpu()) {
    testing::ProblemConfig c;
    c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 128;
    c.context_lens = ragged_lengths(64, 9000, 3);
    testing::DeviceProblem prob(c);
    run(pjtest::engine(), prob, {});
    const std::vector<float> first = prob.output();
    for (int i = 0; i < 3; ++i) {
      run(pjtest::engine(), prob, {});
      const std::vector<float> again = prob.output();
      CHECK(std::memcmp(first.data(), again.data(), first.size() * 4) == 0);
    }
    EngineOptions host_only;
    host_only.device_schedule = false;
    Engine host(0, host_only);
    const LaunchInfo info = run(host, prob, {});
    CHECK(info.work_items == 0);
    const testing::ErrorStats e = testing::compare(prob.output(), std::vector<double>(first.begin(), first.end()));
    CHECK(e.nonfinite == 0);
    CHECK(e.rel_l2 < 1e-2);
  }

  TEST_CASE("gpu: device schedule: a captured graph replays balanced for new lengths" * pjtest::skip_without_gpu()) {
    const DriverApi& d = driver();
    auto config = [](std::vector<int> lens, std::uint64_t seed) {
      testing::ProblemConfig c;
      c.num_heads = 16, c.num_kv_heads = 2, c.head_dim = 128;
      c.context_lens = std::move(lens);
      c.max_blocks = 1024;  // 16k tokens
      int used = 0;
      for (int l : c.context_lens) used += (l + 15) / 16;
      c.spare_blocks = 4096 - used;  // the same cache size for every replay
      c.seed = seed;
      return c;
    };
    std::vector<int> even(48, 2000), one_long(48, 3), mixed = ragged_lengths(48, 16384, 9);
    one_long[47] = 16384;
    testing::DeviceProblem live(config(even, 1));
    PagedAttentionArgs args = live.args();
    const PagedAttentionOptions o;
    const std::int64_t ws_bytes = pjtest::engine().workspace_bytes(args, o);
    REQUIRE(ws_bytes > 0);
    DeviceBuffer ws(static_cast<std::size_t>(ws_bytes));
    check(d.cuMemsetD8(ws.ptr(), 0, ws.size()), "cuMemsetD8");
    args.workspace = ws.data();
    args.workspace_bytes = ws_bytes;
    CUstream s;
    check(d.cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    CUgraph graph;
    CUgraphExec exec;
    check(d.cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
    const LaunchInfo captured = pjtest::engine().paged_attention(args, o, s);
    check(d.cuStreamEndCapture(s, &graph), "cuStreamEndCapture");
    check(d.cuGraphInstantiate(&exec, graph, 0), "cuGraphInstantiate");
    CHECK(captured.work_items > 0);
    int replay = 0;
    for (const auto& lens : {even, one_long, mixed}) {
      CAPTURE(replay);
      testing::DeviceProblem fresh(config(lens, 100 + std::uint64_t(replay++)));
      pjtest::copy_inputs(args, fresh);
      live.poison_outputs();
      check(d.cuGraphLaunch(exec, s), "cuGraphLaunch");
      check(d.cuStreamSynchronize(s), "cuStreamSynchronize");
      const ReferenceOutputs want = reference_paged_attention(fresh.host().args(), o);
      const testing::ErrorStats e = testing::compare(live.output(), want.output);
      CHECK(e.nonfinite == 0);
      CHECK(e.rel_l2 < 1e-2);
    }
    d.cuGraphExecDestroy(exec);
    d.cuGraphDestroy(graph);
    d.cuStreamDestroy(s);
  }
}
