// Several engines in one process: engines on every visible device
// (and at least two on device 0), driven concurrently by host threads with
// different shapes, sharing the process-wide kernel cache and one disk cache
// directory (PAGEDJIT_CACHE_DIR, set by main.cpp to a fresh directory): a
// kernel is compiled once per architecture and loaded into each device's context.
// And, without a GPU, the head sharding of pagedjit-tp (tools/tp/shard.hpp).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../tools/tp/shard.hpp"
#include "gpu.hpp"
#include "jit/disk_store.hpp"
#include "jit/kernel_cache.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/reference.hpp"
#include "pagedjit/testing.hpp"

using namespace pagedjit;

namespace {

// Makes device `ordinal`'s primary context (the one its engines bind) current
// on the calling thread for a scope, so the thread's allocations land there.
class DeviceContext {
 public:
  explicit DeviceContext(int ordinal) {
    const DriverApi& d = driver();
    check(d.cuDeviceGet(&dev_, ordinal), "cuDeviceGet");
    check(d.cuCtxGetCurrent(&previous_), "cuCtxGetCurrent");
    check(d.cuDevicePrimaryCtxRetain(&ctx_, dev_), "cuDevicePrimaryCtxRetain");
    const CUresult r = d.cuCtxSetCurrent(ctx_);
    if (r != CUDA_SUCCESS) d.cuDevicePrimaryCtxRelease(dev_);
    check(r, "cuCtxSetCurrent");
  }
  ~DeviceContext() {
    driver().cuCtxSetCurrent(previous_);
    driver().cuDevicePrimaryCtxRelease(dev_);
  }
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

 private:
  CUdevice dev_ = 0;
  CUcontext ctx_ = nullptr, previous_ = nullptr;
};

// A non-blocking stream of the current context.
class Stream {
 public:
  Stream() { check(driver().cuStreamCreate(&s_, CU_STREAM_NON_BLOCKING), "cuStreamCreate"); }
  ~Stream() { driver().cuStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  CUstream get() const { return s_; }

 private:
  CUstream s_ = nullptr;
};

double tolerance(DType dt) {
  return dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1e-2;
}

struct Shape {
  testing::ProblemConfig cfg;
  PagedAttentionOptions opts;
};

Shape shape(int heads, int kv_heads, int head_dim, DType dt, int page, std::vector<int> lens,
            CacheLayout layout = CacheLayout::blocks_heads) {
  Shape s;
  s.cfg.num_heads = heads;
  s.cfg.num_kv_heads = kv_heads;
  s.cfg.head_dim = head_dim;
  s.cfg.dtype = s.cfg.out_dtype = dt;
  s.cfg.page_size = page;
  s.cfg.context_lens = std::move(lens);
  s.cfg.layout = layout;
  return s;
}

// Different kernels, layouts, GQA groups, split modes: each thread runs them
// all, starting at a different one, so the threads run different shapes at once.
std::vector<Shape> mixed_shapes() {
  std::vector<Shape> v;
  v.push_back(shape(8, 8, 64, DType::bf16, 16, {32, 64, 48, 80}));
  v.push_back(shape(16, 2, 128, DType::f16, 32, {1, 300, 613, 64}));
  v.push_back(shape(12, 4, 256, DType::bf16, 8, {100, 257, 2}, CacheLayout::heads_blocks));
  v.push_back(shape(4, 1, 96, DType::f32, 16, {0, 17, 500}, CacheLayout::blocks_tokens));
  v.back().cfg.with_lse = true;
  v.back().opts.return_lse = true;
  v.push_back(shape(32, 4, 128, DType::bf16, 64, {2000, 1500, 33}));
  v.push_back(shape(8, 2, 80, DType::f16, 1, {40, 9}));
  v.back().opts.num_splits = 3;
  v.push_back(shape(64, 8, 128, DType::bf16, 16, {1024, 1700}));
  v.back().opts.batch_invariant = true;
  return v;
}

struct Outcome {
  std::string what;
  testing::ErrorStats e;
  double tol = 0;
  std::string error;
};

// Runs one shape with `engine` on `stream` (the engine's device context
// current on this thread) and compares it with the float64 reference.
Outcome run_one(Engine& engine, const Shape& s, CUstream stream) {
  Outcome o;
  o.what = fmt::format("device {}: {} splits={} batch_invariant={}", engine.device().ordinal, s.cfg.describe(),
                       s.opts.num_splits, s.opts.batch_invariant);
  o.tol = tolerance(s.cfg.dtype);
  try {
    testing::DeviceProblem prob(s.cfg);
    prob.poison_outputs();
    engine.paged_attention(prob.args(), s.opts, stream);
    check(driver().cuStreamSynchronize(stream), "cuStreamSynchronize");
    o.e = prob.check(s.opts);
  } catch (const std::exception& e) {
    o.error = e.what();
  }
  return o;
}

void check_outcome(const Outcome& o) {
  INFO(o.what);
  INFO(fmt::format("rel_l2={:.3e} max_abs={:.3e} nonfinite={} lse_ok={}", o.e.rel_l2, o.e.max_abs, o.e.nonfinite,
                   o.e.lse_ok));
  CHECK(o.error == "");
  CHECK(o.e.nonfinite == 0);
  CHECK(o.e.rel_l2 < o.tol);
  CHECK(o.e.lse_ok);
}

// Kernels produced (compiled, or loaded from the disk cache) since `before`.
std::uint64_t produced_since(const jit::KernelCacheStats& before) {
  const jit::KernelCacheStats now = jit::KernelCache::global().stats();
  return (now.compiles - before.compiles) + (now.store_hits - before.store_hits);
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu: engines on every device, driven concurrently by host threads" * pjtest::skip_without_gpu()) {
    const int n = device_count();
    // One engine per device and a second one on device 0, all made on this thread.
    std::vector<std::unique_ptr<Engine>> engines;
    for (int d = 0; d < n; ++d) engines.push_back(std::make_unique<Engine>(d));
    engines.push_back(std::make_unique<Engine>(0));
    // A thread per engine, and one more sharing engine 0 (an engine takes calls from any thread).
    std::vector<Engine*> drivers;
    for (auto& e : engines) drivers.push_back(e.get());
    drivers.push_back(engines[0].get());

    const std::vector<Shape> shapes = mixed_shapes();
    // The kernels these calls need: one per (name expression, architecture).
    std::set<std::pair<std::string, std::string>> kernels;
    for (const auto& e : engines)
      for (const Shape& s : shapes) {
        const testing::HostProblem host(s.cfg);
        kernels.emplace(e->plan(host.args(), s.opts).decode_kernel, e->device().arch());
      }

    const jit::KernelCacheStats before = jit::KernelCache::global().stats();
    std::vector<std::vector<Outcome>> outcomes(drivers.size());
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < drivers.size(); ++t)
      threads.emplace_back([&, t] {
        Engine& engine = *drivers[t];
        try {
          DeviceContext ctx(engine.device().ordinal);
          Stream stream;
          for (std::size_t i = 0; i < shapes.size(); ++i) {
            Shape s = shapes[(t + i) % shapes.size()];
            s.cfg.seed = 1000 * (t + 1) + i;
            outcomes[t].push_back(run_one(engine, s, stream.get()));
          }
        } catch (const std::exception& e) {
          Outcome o;
          o.what = fmt::format("thread {} on device {}", t, engine.device().ordinal);
          o.error = e.what();
          outcomes[t].push_back(o);
        }
      });
    for (auto& t : threads) t.join();
    const std::uint64_t produced = produced_since(before);
    const jit::KernelCacheStats after = jit::KernelCache::global().stats();

    std::size_t calls = 0;
    for (const auto& list : outcomes)
      for (const Outcome& o : list) check_outcome(o), ++calls;
    CHECK(calls == drivers.size() * shapes.size());
    // However many engines and threads asked at once, each kernel was produced at most once.
    INFO(fmt::format("{} distinct kernels; compiled {}, loaded from disk {}", kernels.size(),
                     after.compiles - before.compiles, after.store_hits - before.store_hits));
    CHECK(produced <= kernels.size());
    MESSAGE(
        fmt::format("{} engines on {} device(s), {} host threads, {} calls checked against the CPU reference; "
                    "{} distinct kernels: {} compiled, {} loaded from the disk cache, {} in-memory hits",
                    engines.size(), n, drivers.size(), calls, kernels.size(), after.compiles - before.compiles,
                    after.store_hits - before.store_hits, after.memory_hits - before.memory_hits));
  }

  TEST_CASE("gpu: a kernel compiled once is loaded, not recompiled, by other devices' engines" *
            pjtest::skip_without_gpu()) {
    const int n = device_count();
    // A shape the other tests do not use, so its kernel is new to this process.
    Shape s = shape(6, 2, 176, DType::f16, 32, {100, 333, 7});
    s.cfg.seed = 11;

    std::string arch0;
    {
      Engine first(0);
      arch0 = first.device().arch();
      DeviceContext ctx(0);
      Stream stream;
      const jit::KernelCacheStats before = jit::KernelCache::global().stats();
      check_outcome(run_one(first, s, stream.get()));
      CHECK(produced_since(before) <= 1);
    }

    // Fresh engines on the other devices (a second one on device 0 with a
    // single GPU): each loads the kernel into its own context from the
    // process-wide cache; none compiles it again for the same architecture.
    std::vector<int> others;
    for (int d = 1; d < n; ++d) others.push_back(d);
    if (others.empty()) others.push_back(0);
    for (int d : others) {
      Engine e(d);
      DeviceContext ctx(d);
      Stream stream;
      const jit::KernelCacheStats before = jit::KernelCache::global().stats();
      check_outcome(run_one(e, s, stream.get()));
      const jit::KernelCacheStats after = jit::KernelCache::global().stats();
      INFO(fmt::format("device {} ({}) after device 0 ({})", d, e.device().arch(), arch0));
      if (e.device().arch() == arch0) {
        CHECK(after.compiles == before.compiles);
        CHECK(after.store_hits == before.store_hits);
        CHECK(after.memory_hits > before.memory_hits);
      } else {
        MESSAGE(
            fmt::format("device {} is {}, device 0 {}: compiled for each architecture", d, e.device().arch(), arch0));
      }
    }

    // What another process sees: nothing in memory, the shared disk cache
    // directory serves the kernel to a new engine without compiling.
    const jit::CacheLocation where = jit::cache_location_from_env();
    if (!where.enabled) {
      MESSAGE(fmt::format("disk cache disabled ({}): the disk part is not checked", where.reason));
      return;
    }
    std::size_t entries = 0;
    for (const auto& f : std::filesystem::directory_iterator(where.dir))
      if (f.path().extension() == jit::kEntrySuffix) ++entries;
    CHECK(entries >= 1);
    jit::KernelCache::global().clear_memory();
    const int d = n - 1;
    Engine e(d);
    DeviceContext ctx(d);
    Stream stream;
    const jit::KernelCacheStats before = jit::KernelCache::global().stats();
    check_outcome(run_one(e, s, stream.get()));
    const jit::KernelCacheStats after = jit::KernelCache::global().stats();
    INFO(fmt::format("disk cache {}; device {} ({})", where.dir, d, e.device().arch()));
    CHECK(after.compiles == before.compiles);
    CHECK(after.store_hits > before.store_hits);
    MESSAGE(
        fmt::format("{} device(s) share the disk cache {} ({} entries): device {} loaded the kernel from it "
                    "without compiling",
                    n, where.dir, entries, d));
  }
}

TEST_SUITE("cpu") {
  TEST_CASE("cpu: pagedjit-tp's head shards give the unsharded reference, and their slices the whole output") {
    Shape s = shape(16, 4, 64, DType::bf16, 16, {100, 37, 300, 1});
    s.cfg.seed = 5;
    const testing::HostProblem host(s.cfg);
    const testing::ProblemConfig& cfg = host.config();
    const ReferenceOutputs whole = reference_paged_attention(host.args(), s.opts);
    const std::int64_t S = std::int64_t(cfg.context_lens.size()), H = cfg.num_heads, D = cfg.head_dim;
    for (int n : {1, 2, 4}) {
      CAPTURE(n);
      std::vector<std::uint8_t> gathered(pjtp::output_bytes(cfg));
      std::int64_t mismatches = 0;
      for (int shard = 0; shard < n; ++shard) {
        pjtp::ShardData data = pjtp::slice_shard(host, n, shard);
        const PagedAttentionArgs a = pjtp::shard_args(cfg, host.num_blocks(), n, shard, data.q.data(), data.k.data(),
                                                      data.v.data(), const_cast<std::int32_t*>(host.lens.data()),
                                                      const_cast<std::int32_t*>(host.table.data()), gathered.data());
        const ReferenceOutputs part = reference_paged_attention(a, s.opts);
        const std::int64_t Hs = H / n;
        REQUIRE(part.output.size() == std::size_t(S * Hs * D));
        // The shard's heads, computed alone, are exactly those heads of the whole problem;
        // written through the shard's output view, they land in its slice of the head-major buffer.
        for (std::int64_t i = 0; i < S; ++i)
          for (std::int64_t h = 0; h < Hs; ++h)
            for (std::int64_t d = 0; d < D; ++d) {
              const double got = part.output[std::size_t((i * Hs + h) * D + d)];
              if (got != whole.output[std::size_t((i * H + shard * Hs + h) * D + d)]) ++mismatches;
              store_element(a.output.data, i * a.output.strides[0] + h * a.output.strides[1] + d, float(got),
                            cfg.out_dtype);
            }
      }
      CHECK(mismatches == 0);
      const std::vector<float> seq_major = pjtp::head_major_to_seq_major(gathered, cfg);
      std::int64_t wrong = 0;
      for (std::size_t i = 0; i < seq_major.size(); ++i)
        if (seq_major[i] != round_to_dtype(float(whole.output[i]), cfg.out_dtype)) ++wrong;
      CHECK(wrong == 0);
    }
    CHECK_THROWS_AS(pjtp::slice_shard(host, 3, 0), std::invalid_argument);  // 3 does not divide 4 KV heads
  }
}
