// EngineOptions::specialize: a decode kernel with the page shift, the GQA
// group or the host schedule's split count compiled in gives the same bits
// as the one that reads them from its parameters, and the right answer.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "attention/validate.hpp"
#include "gpu.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"
#include "precompile.hpp"

using namespace pagedjit;

namespace {

struct Variant {
  const char* name;
  DType dtype;
  std::optional<DType> kv_dtype;
  int head_dim, group, page_size, q_len;
  std::vector<int> lens;
  int num_splits;  // 0: the engine's choice (the device schedule for a batch, unless the engine is off it)
  std::optional<std::int64_t> window;
};

// Each value compiled in alone, and all three.
struct Flavour {
  const char* name;
  KernelSpecialization spec;
};

std::vector<Flavour> flavours() {
  Flavour page{"page", {}}, group{"group", {}}, splits{"splits", {}}, all{"page,group,splits", {}};
  page.spec.page = true;
  group.spec.group = true;
  splits.spec.splits = true;
  all.spec.page = all.spec.group = all.spec.splits = true;
  return {page, group, splits, all};
}

EngineOptions options(bool device_schedule, KernelSpecialization spec = {}) {
  EngineOptions e;
  e.device_schedule = device_schedule;
  e.specialize = spec;
  return e;
}

testing::ProblemConfig config_of(const Variant& v) {
  testing::ProblemConfig cfg;
  cfg.dtype = cfg.out_dtype = v.dtype;
  cfg.kv_dtype = v.kv_dtype;
  cfg.num_kv_heads = 2, cfg.num_heads = 2 * v.group, cfg.head_dim = v.head_dim;
  cfg.page_size = v.page_size, cfg.q_len = v.q_len, cfg.context_lens = v.lens;
  cfg.with_lse = true;
  cfg.seed = std::uint64_t(v.group * 100 + v.page_size);
  return cfg;
}

PagedAttentionOptions options_of(const Variant& v) {
  PagedAttentionOptions o;
  o.num_splits = v.num_splits;
  o.sliding_window = v.window;
  o.return_lse = true;
  return o;
}

double tolerance(DType dt) {
  return dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1e-2;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("gpu: specialized decode kernels give the unspecialized kernel's bits, and the right answer" *
            pjtest::skip_without_gpu()) {
    const DriverApi& d = driver();
    const std::vector<Variant> variants = {
        {"group 4, 16-token pages, ragged batch", DType::bf16, {}, 128, 4, 16, 1, {1024, 0, 3, 700, 129}, 0, {}},
        {"group 7, 32-token pages, 2 tokens, window", DType::f16, {}, 128, 7, 32, 2, {900, 17, 2000}, 0, 300},
        {"group 1, 1-token pages, 3 splits", DType::bf16, {}, 64, 1, 1, 1, {333, 2000, 1}, 3, {}},
        {"group 8, e4m3 cache, 64-token pages, unsplit", DType::bf16, DType::e4m3, 128, 8, 64, 1, {4096, 1500}, 1, {}},
        {"group 3, fp32, 8 splits", DType::f32, {}, 128, 3, 16, 1, {3000, 64}, 8, {}},
        {"group 2, d256, 5 splits", DType::bf16, {}, 256, 2, 16, 1, {2500, 700}, 5, {}},
    };
    // Both schedules: the split count is compiled in only where the host schedule fixes it.
    for (bool device_schedule : {true, false}) {
      Engine reference(0, options(device_schedule));
      std::vector<std::unique_ptr<Engine>> engines;
      for (const Flavour& f : flavours())
        engines.push_back(std::make_unique<Engine>(0, options(device_schedule, f.spec)));
      // Compile every kernel up front, in parallel (as the engines will plan them).
      std::vector<std::future<LaunchInfo>> jobs;
      for (const Variant& v : variants) {
        const PagedAttentionOptions o = options_of(v);
        const ProblemShape shape = validate_call(testing::HostProblem(config_of(v)).args(), o);
        const DeviceInfo dev = reference.device();
        std::vector<KernelSpecialization> specs{KernelSpecialization{}};
        for (const Flavour& f : flavours()) specs.push_back(f.spec);
        for (const KernelSpecialization& spec : specs)
          jobs.push_back(std::async(std::launch::async, [shape, o, dev, device_schedule, spec] {
            return precompile(shape, o, dev, true, device_schedule, spec);
          }));
      }
      for (auto& j : jobs) j.get();

      for (const Variant& v : variants) {
        testing::DeviceProblem prob(config_of(v));
        const PagedAttentionOptions o = options_of(v);
        const LaunchInfo base = reference.plan(prob.args(), o);
        INFO(v.name, "; device schedule allowed: ", device_schedule, "; ", base.describe());
        prob.poison_outputs();
        const LaunchInfo ran = reference.paged_attention(prob.args(), o, nullptr);
        check(d.cuCtxSynchronize(), "cuCtxSynchronize");
        const std::vector<float> want_out = prob.output(), want_lse = prob.lse();
        for (std::size_t i = 0; i < engines.size(); ++i) {
          const Flavour f = flavours()[i];
          INFO("specialize=", f.name);
          const LaunchInfo info = engines[i]->plan(prob.args(), o);
          INFO(info.decode_kernel);
          // The same plan, a kernel that differs only in what it compiles in.
          CHECK(info.grid[0] == base.grid[0]);
          CHECK(info.grid[1] == base.grid[1]);
          CHECK(info.grid[2] == base.grid[2]);
          CHECK(info.num_splits == base.num_splits);
          const bool fixes_splits = f.spec.splits && base.work_items == 0;
          CHECK((info.decode_kernel != base.decode_kernel) == (f.spec.page || f.spec.group || fixes_splits));
          prob.poison_outputs();
          const LaunchInfo launched = engines[i]->paged_attention(prob.args(), o, nullptr);
          check(d.cuCtxSynchronize(), "cuCtxSynchronize");
          const std::vector<float> out = prob.output(), lse = prob.lse();
          // The device schedule's work items follow the compiled kernel's
          // occupancy (its registers): other items cut other partitions,
          // which round differently. The same cut gives the same bits.
          if (launched.work_items == ran.work_items) {
            CHECK(std::memcmp(out.data(), want_out.data(), out.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(lse.data(), want_lse.data(), lse.size() * sizeof(float)) == 0);
          } else {
            MESSAGE(fmt::format("{} ({}): {} work items, unspecialized {}: bits not compared", v.name, f.name,
                                launched.work_items, ran.work_items));
          }
          const testing::ErrorStats e = prob.check(o);
          INFO(fmt::format("rel_l2={:.3e} nonfinite={} lse_max_abs={:.3e}", e.rel_l2, e.nonfinite, e.lse_max_abs));
          CHECK(e.nonfinite == 0);
          CHECK(e.rel_l2 < tolerance(v.dtype));
          CHECK(e.lse_ok);
          CHECK(e.lse_max_abs < (v.dtype == DType::f32 ? 1e-4 : 2e-2));
        }
      }
    }
  }
}
