#include "threads.hpp"

#include <cuda.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "../common/timing.hpp"
#include "case_runner.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"
#include "small_calls.hpp"

namespace pjbench {
namespace {

// Per thread and run: kBatches batches of kPerBatch back-to-back calls (the
// small-call section's host_cost_us), after kWarmCalls untimed ones; every
// run kRounds times, the runs alternating so that drift hits all alike.
constexpr int kBatches = 20, kPerBatch = 100, kWarmCalls = 20, kRounds = 3;

// What one thread calls with: its own stream, inputs and outputs, workspace,
// and engine (for the runs with an engine each). Nothing is shared between
// lanes but the engine of the shared runs.
struct Lane {
  CUstream stream = nullptr;
  std::unique_ptr<pagedjit::testing::DeviceProblem> problem;
  pagedjit::DeviceBuffer workspace;
  pagedjit::PagedAttentionArgs args;
  std::unique_ptr<pagedjit::Engine> engine;

  Lane() = default;
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;
  // The stream's work is done before its buffers and engine go.
  ~Lane() {
    if (!stream) return;
    pagedjit::driver().cuStreamSynchronize(stream);
    pagedjit::driver().cuStreamDestroy(stream);
  }
};

using Lanes = std::vector<std::unique_ptr<Lane>>;

// `n` lanes of the tiny call, each engine (the shared one and the lane's)
// called once on the lane's stream: compiled, loaded and planned before any
// timing. Returns the workspace each lane brings (bytes, 0: none needed).
std::int64_t make_lanes(Lanes& lanes, pagedjit::Engine& shared, const pagedjit::EngineOptions& options,
                        const BenchCase& tiny, int n) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  const pagedjit::PagedAttentionOptions opts = tiny.options();
  std::int64_t ws_bytes = 0;
  for (int t = 0; t < n; ++t) {
    lanes.push_back(std::make_unique<Lane>());
    Lane& lane = *lanes.back();
    pagedjit::check(d.cuStreamCreate(&lane.stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    lane.problem = std::make_unique<pagedjit::testing::DeviceProblem>(tiny.problem(t));
    lane.args = lane.problem->args();
    lane.engine = std::make_unique<pagedjit::Engine>(shared.device().ordinal, options);
    const std::int64_t bytes =
        std::max(shared.workspace_bytes(lane.args, opts), lane.engine->workspace_bytes(lane.args, opts));
    if (bytes > 0) {
      lane.workspace = pagedjit::DeviceBuffer(std::size_t(bytes));
      lane.args.workspace = lane.workspace.data();
      lane.args.workspace_bytes = bytes;
    }
    ws_bytes = std::max(ws_bytes, bytes);
    shared.paged_attention(lane.args, opts, lane.stream);
    lane.engine->paged_attention(lane.args, opts, lane.stream);
    pagedjit::check(d.cuStreamSynchronize(lane.stream), "cuStreamSynchronize");
  }
  return ws_bytes;
}

using Call = std::function<void(Lane&)>;

// Runs `call` from lanes [0, n), one thread each with `ctx` current. Each
// thread warms up, waits until all have, then times host_cost_us on its own
// lane, so the timed calls of all threads overlap. Returns each thread's
// median microseconds per call; rethrows the first thread's error.
std::vector<double> time_threads(Lanes& lanes, int n, CUcontext ctx, const Call& call) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  std::vector<double> us(static_cast<std::size_t>(n), 0.0);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  const auto body = [&](int t) {
    Lane& lane = *lanes[std::size_t(t)];
    const auto sync = [&] { pagedjit::check(d.cuStreamSynchronize(lane.stream), "cuStreamSynchronize"); };
    try {
      pagedjit::check(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
      for (int i = 0; i < kWarmCalls; ++i) call(lane);
      sync();
    } catch (...) {
      errors[std::size_t(t)] = std::current_exception();
    }
    ready.fetch_add(1);
    while (!go.load()) std::this_thread::yield();
    if (errors[std::size_t(t)]) return;
    try {
      us[std::size_t(t)] = host_cost_us(
                               kBatches, kPerBatch, [&] { call(lane); }, sync)
                               .median;
    } catch (...) {
      errors[std::size_t(t)] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  try {
    for (int t = 0; t < n; ++t) threads.emplace_back(body, t);
  } catch (...) {  // a thread could not start: release those waiting, then fail
    go = true;
    for (auto& th : threads) th.join();
    throw;
  }
  while (ready.load() < n) std::this_thread::yield();
  go = true;
  for (auto& th : threads) th.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return us;
}

// One way of calling, timed from `threads` threads.
struct Run {
  const char* key;
  std::string label;
  int threads;
  Call call;
  std::vector<double> round_us;                // per round: the median over its threads
  std::vector<std::vector<double>> thread_us;  // per round: each thread's median
};

Json run_json(const Run& r) {
  double lo = 0, hi = 0;
  bool first = true;
  for (const auto& round : r.thread_us)
    for (double v : round) {
      lo = first ? v : std::min(lo, v);
      hi = first ? v : std::max(hi, v);
      first = false;
    }
  return Json{{"label", r.label},         {"threads", r.threads}, {"us", summarize(r.round_us).median},
              {"min_thread_us", lo},      {"max_thread_us", hi},  {"rounds_us", r.round_us},
              {"threads_us", r.thread_us}};
}

}  // namespace

Json run_thread_scaling(pagedjit::Engine& shared, const pagedjit::EngineOptions& options, const HelperKernels& kernels,
                        int threads) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  const BenchCase tiny = tiny_case();
  const pagedjit::PagedAttentionOptions opts = tiny.options();
  Json out;
  out["case"] = tiny.shape_text();
  out["threads"] = threads;
  out["method"] = fmt::format(
      "each of N host threads has its own non-blocking stream, its own inputs and outputs of the tiny call and a "
      "caller-provided workspace (no call allocates); per run, every thread makes {} untimed calls, waits for the "
      "others, then times {} batches of {} back-to-back calls on the host steady clock, its stream synchronized "
      "between batches (outside the clock); a thread's cost = its median batch / {}; a run's cost = the median over "
      "its threads; the runs alternate, {} rounds, median of the rounds. Shared: one Engine for all N threads; "
      "own: an Engine per thread (same options); bare: cuLaunchKernel of an empty kernel, no engine",
      kWarmCalls, kBatches, kPerBatch, kPerBatch, kRounds);
  try {
    CUcontext ctx = nullptr;
    pagedjit::check(d.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
    Lanes lanes;
    out["workspace_bytes"] = make_lanes(lanes, shared, options, tiny, threads);
    out["launch"] = launch_info_json(shared.plan(lanes[0]->args, opts));

    const Call bare = [&](Lane& l) {
      pagedjit::check(d.cuLaunchKernel(kernels.empty(), 1, 1, 1, 32, 1, 1, 0, l.stream, nullptr, nullptr),
                      "cuLaunchKernel(pj_bench_empty)");
    };
    const Call shared_call = [&](Lane& l) { shared.paged_attention(l.args, opts, l.stream); };
    const Call own_call = [&](Lane& l) { l.engine->paged_attention(l.args, opts, l.stream); };
    const std::string n = fmt::format("{} thread{}", threads, threads == 1 ? "" : "s");
    std::vector<Run> runs = {
        {"bare_1", "bare cuLaunchKernel (empty), 1 thread", 1, bare, {}, {}},
        {"bare_n", fmt::format("bare cuLaunchKernel (empty), {}", n), threads, bare, {}, {}},
        {"engine_1", "engine, 1 thread", 1, shared_call, {}, {}},
        {"shared_n", fmt::format("engine, {}, one shared engine", n), threads, shared_call, {}, {}},
        {"own_n", fmt::format("engine, {}, an engine each", n), threads, own_call, {}, {}},
    };
    for (int round = 0; round < kRounds; ++round)
      for (Run& r : runs) {
        std::vector<double> us = time_threads(lanes, r.threads, ctx, r.call);
        r.round_us.push_back(summarize(us).median);
        r.thread_us.push_back(std::move(us));
      }
    Json results = Json::object();
    for (const Run& r : runs) results[r.key] = run_json(r);
    const double shared_us = results["shared_n"]["us"].get<double>(), own_us = results["own_n"]["us"].get<double>();
    const double bare_us = results["bare_n"]["us"].get<double>();
    out["runs"] = results;
    out["shared_over_own"] = shared_us / own_us;
    out["shared_overhead_us"] = shared_us - bare_us;
    out["own_overhead_us"] = own_us - bare_us;
  } catch (const pagedjit::Error& e) {
    out["error"] = fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
  }
  return out;
}

std::string thread_scaling_text(const Json& j) {
  std::string o = fmt::format("\nhost cost with threads ({}, {} threads):\n", j.value("case", std::string("tiny")),
                              j.value("threads", 0));
  if (j.contains("workspace_bytes"))
    o += fmt::format(
        "  per thread: own stream, inputs and caller-provided workspace ({} B); a thread's median "
        "batch, the median over threads (min - max over threads and rounds), median of {} rounds\n",
        j["workspace_bytes"].get<std::int64_t>(), kRounds);
  if (j.contains("runs"))
    for (const char* key : {"bare_1", "bare_n", "engine_1", "shared_n", "own_n"}) {
      const Json& r = j["runs"][key];
      o += fmt::format("  {:<48} {:8.2f} us/call  ({:.2f} - {:.2f})\n", r["label"].get<std::string>(),
                       r["us"].get<double>(), r["min_thread_us"].get<double>(), r["max_thread_us"].get<double>());
    }
  if (j.contains("shared_over_own"))
    o += fmt::format(
        "  shared / own: {:.2f}x; over the bare launch from as many threads: shared {:+.2f} us, own {:+.2f} us\n",
        j["shared_over_own"].get<double>(), j["shared_overhead_us"].get<double>(), j["own_overhead_us"].get<double>());
  if (j.contains("error")) o += fmt::format("  ERROR: {}\n", j["error"].get<std::string>());
  return o;
}

}  // namespace pjbench
