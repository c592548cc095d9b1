// pagedjit-plan: the plan the engine makes for each benchmark case on a GPU
// preset (no GPU needed), and with --time the host cost of making it: the
// part of a call's host time that is the engine's own, before the launch.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../common/cases.hpp"
#include "../common/cli.hpp"
#include "../common/timing.hpp"
#include "attention/plan_cache.hpp"
#include "attention/validate.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "jit/source_set.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/version.hpp"

#ifndef PAGEDJIT_PLAN_SOURCE_DIR
#define PAGEDJIT_PLAN_SOURCE_DIR "."
#endif

using namespace pagedjit;

namespace {

constexpr const char* kUsage = R"(pagedjit-plan: how the engine plans each benchmark case, without a GPU

usage: pagedjit-plan [options]

Prints, per case, the plan an Engine on the preset GPU makes (kernel, tile,
partitions, grid, profile entry), as Engine::plan would on that GPU.

  --cases FILE   cases file (repeatable; default bench/cases.json here or in
                 the source tree)
  --case SPEC    a case in pagedjit-bench's --case form (repeatable)
  --only NAME[,NAME]
  --gpu h100|h200  the device preset (default h100)
  --no-profile   the built-in heuristic only (EngineOptions::use_profiles = false)
  --resources    also compile each case's decode kernel (NVRTC) and print
                 ptxas's report: registers a thread, local memory (stack
                 frame, spill stores and loads; all should be 0)
  --time         also the host time of planning, per call, median of 9 rounds:
                   validate   validate_call (arguments to problem shape)
                   first      profile lookup + planning: a shape the engine
                              has not seen (the first layer of a decode step;
                              without storing the plan, a few tens of ns)
                   repeat     the engine's memory of recent plans: a shape it
                              has seen (the other layers of the step)
                 The engine adds the driver's launch to these (pagedjit-bench
                 measures the whole call on a GPU).
  --help, --version
)";

[[noreturn]] void usage_error(const std::string& msg) {
  fmt::print(stderr, "pagedjit-plan: {}\n(try --help)\n", msg);
  std::exit(2);
}

struct Options {
  std::vector<std::string> files, specs;
  std::string only, gpu = "h100";
  bool profiles = true, time = false, resources = false;
};

Options parse(int argc, char** argv) {
  Options o;
  pjtools::Cli cli("pagedjit-plan", kUsage, argc, argv);
  while (cli.next()) {
    const std::string& a = cli.option();
    if (a == "--cases") {
      o.files.push_back(cli.value());
    } else if (a == "--case") {
      o.specs.push_back(cli.value());
    } else if (a == "--only") {
      o.only = cli.value();
    } else if (a == "--gpu") {
      o.gpu = cli.choice({"h100", "h200"});
    } else if (a == "--no-profile") {
      o.profiles = false;
    } else if (a == "--time") {
      o.time = true;
    } else if (a == "--resources") {
      o.resources = true;
    } else {
      cli.unknown();
    }
  }
  if (o.time && o.resources)
    usage_error("--time and --resources go in separate runs (compiling would skew the timing)");
  return o;
}

std::vector<pjbench::BenchCase> load(const Options& o) {
  std::vector<std::string> files = o.files;
  if (files.empty() && o.specs.empty()) {
    const std::string src = PAGEDJIT_PLAN_SOURCE_DIR;
    for (const std::string& p : {std::string("bench/cases.json"), src + "/bench/cases.json"})
      if (std::ifstream(p).good()) {
        files.push_back(p);
        break;
      }
    if (files.empty()) usage_error("no bench/cases.json here or in " + src + "; give --cases FILE or --case SPEC");
  }
  std::vector<pjbench::BenchCase> cases;
  for (const std::string& f : files) {
    const auto more = pjbench::load_cases_file(f);
    cases.insert(cases.end(), more.begin(), more.end());
  }
  for (const std::string& s : o.specs) cases.push_back(pjbench::parse_case_string(s));
  pjbench::check_unique_names(cases);
  return o.only.empty() ? cases : pjbench::select_cases(cases, o.only);
}

// Views of the case's tensors as a call passes them. Planning reads shapes
// and strides only, so the pointer is a placeholder that is never read.
struct CallViews {
  PagedAttentionArgs args;
  PagedAttentionOptions options;
};

CallViews views_of(const pjbench::BenchCase& c) {
  void* p = reinterpret_cast<void*>(std::uintptr_t(0x1000));
  const std::vector<int> lens = c.context_lens();
  std::int64_t max_len = 0, blocks = 0;
  for (int n : lens) {
    max_len = std::max<std::int64_t>(max_len, n);
    blocks += (n + c.page_size - 1) / c.page_size;
  }
  const std::int64_t max_blocks = std::max<std::int64_t>(1, (max_len + c.page_size - 1) / c.page_size);
  blocks = std::max<std::int64_t>(blocks, 1);
  const std::int64_t b = c.batch, h = c.q_heads, kvh = c.kv_heads, d = c.head_dim, pg = c.page_size;
  CallViews v;
  PagedAttentionArgs& a = v.args;
  a.query = c.q_len > 1 ? TensorView(p, c.dtype, {b, c.q_len, h, d}) : TensorView(p, c.dtype, {b, h, d});
  a.output = a.query;
  // Far from the inputs' placeholder: what the kernel writes may not overlap what it reads.
  a.output.data = reinterpret_cast<void*>(std::uintptr_t(1) << 44);
  a.layout = c.layout;
  switch (c.layout) {
    case CacheLayout::blocks_heads:
      a.key_cache = TensorView(p, c.kv_dtype, {blocks, kvh, pg, d});
      break;
    case CacheLayout::heads_blocks:
      a.key_cache = TensorView(p, c.kv_dtype, {kvh, blocks, pg, d});
      break;
    case CacheLayout::blocks_tokens:
      a.key_cache = TensorView(p, c.kv_dtype, {blocks, pg, kvh, d});
      break;
  }
  a.value_cache = a.key_cache;
  a.context_lens = TensorView(p, DType::i32, {b});
  a.block_tables = TensorView(p, DType::i32, {b, max_blocks});
  v.options = c.options();
  return v;
}

// Host nanoseconds per call of `f`: the bench's host-clock batches (9 of
// 2000 calls, median), after a warm-up batch; nothing to synchronize.
double ns_per_call(const std::function<void()>& f) {
  for (int i = 0; i < 200; ++i) f();
  return pjbench::host_cost_us(9, 2000, f, [] {}).median * 1e3;
}

int run(const Options& o) {
  const DeviceInfo device = o.gpu == "h200" ? DeviceInfo::h200() : DeviceInfo::h100_sxm();
  attention::PlanCache cache(
      device, o.profiles ? tuning::ProfileRegistry::global().for_device(device, false) : tuning::DeviceProfiles(),
      true);
  fmt::print("{} ({}, {} SMs), {}\n", device.name, device.arch(), device.sm_count, cache.profiles().describe());
  if (o.time) fmt::print("{:<22} {:>9} {:>9} {:>9}  plan\n", "case", "validate", "first", "repeat");
  int status = 0;
  std::vector<double> firsts, repeats;
  for (const pjbench::BenchCase& c : load(o)) {
    const CallViews v = views_of(c);
    try {
      const ProblemShape shape = validate_call(v.args, v.options);
      const auto plan = cache.plan(shape, v.options);
      if (!o.time) {
        fmt::print("{:<22} {}\n  {}\n", c.name, plan->info.describe(), plan->info.decode_kernel);
        if (!plan->info.profile.empty()) fmt::print("  profile: {}\n", plan->info.profile);
        if (o.resources) {
          const jit::ResourceUsage u = jit::resource_usage(plan->decode, jit::SourceSet::current());
          fmt::print("  ptxas: {} registers, local memory: {} B stack, {} B spill stores, {} B spill loads{}\n",
                     u.registers, u.stack_bytes, u.spill_store_bytes, u.spill_load_bytes,
                     u.uses_local_memory() ? "  <- LOCAL MEMORY" : "");
          if (u.uses_local_memory()) status = 1;
        }
        continue;
      }
      volatile int sink = 0;  // keeps the timed calls from being optimized away
      const double validate = ns_per_call([&] { sink = sink + validate_call(v.args, v.options).num_seqs; });
      const double first = ns_per_call([&] { sink = sink + cache.make(shape, v.options).info.num_splits; });
      const double repeat = ns_per_call([&] { sink = sink + cache.plan(shape, v.options)->info.num_splits; });
      firsts.push_back(validate + first);
      repeats.push_back(validate + repeat);
      fmt::print("{:<22} {:>6.0f} ns {:>6.0f} ns {:>6.0f} ns  {}\n", c.name, validate, first, repeat,
                 plan->info.describe());
    } catch (const Error& e) {
      fmt::print("{:<22} cannot be planned: {} ({})\n", c.name, e.what(), error_code_name(e.code()));
      status = 1;
    }
  }
  if (o.time && !firsts.empty()) {
    std::sort(firsts.begin(), firsts.end());
    std::sort(repeats.begin(), repeats.end());
    fmt::print("validate + plan, median over the cases: first {:.0f} ns, repeat {:.0f} ns\n", firsts[firsts.size() / 2],
               repeats[repeats.size() / 2]);
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    return run(o);
  } catch (const pjbench::CaseError& e) {
    fmt::print(stderr, "pagedjit-plan: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "pagedjit-plan: {}\n", e.what());
    return 1;
  }
}
