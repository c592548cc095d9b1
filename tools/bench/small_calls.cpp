#include "small_calls.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"
#include "timing.hpp"

namespace pjbench {
namespace {

using pagedjit::DType;

std::string error_text(const pagedjit::Error& e) {
  return fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
}

// Host cost: a warm engine call against a bare launch of an empty kernel,
// both as batches of back-to-back calls on the host clock.
Json host_cost(pagedjit::Engine& engine, const HelperKernels& kernels, const pagedjit::PagedAttentionArgs& args,
               const pagedjit::PagedAttentionOptions& opts, const pagedjit::LaunchInfo& info, CUstream stream) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  constexpr int kBatches = 50, kPerBatch = 100;
  const auto sync = [&] { pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize"); };
  const auto bare = [&] {
    pagedjit::check(d.cuLaunchKernel(kernels.empty(), 1, 1, 1, 32, 1, 1, 0, stream, nullptr, nullptr),
                    "cuLaunchKernel(pj_bench_empty)");
  };
  const auto warm = [&] { engine.paged_attention(args, opts, stream); };
  // Alternate the two so that drift of the machine hits both alike.
  std::vector<double> bare_us, engine_us;
  for (int round = 0; round < 3; ++round) {
    bare_us.push_back(host_cost_us(kBatches, kPerBatch, bare, sync).median);
    engine_us.push_back(host_cost_us(kBatches, kPerBatch, warm, sync).median);
  }
  const double b = summarize(bare_us).median, e = summarize(engine_us).median;
  const int launches = info.combine_kernel.empty() ? 1 : 2;
  return Json{{"method", fmt::format("host steady clock, {} batches of {} back-to-back calls, stream synchronized "
                                     "between batches; median of 3 alternating rounds",
                                     kBatches, kPerBatch)},
              {"engine_us", e},
              {"bare_launch_us", b},
              {"overhead_us", e - b},
              {"engine_launches_per_call", launches},
              {"engine_rounds_us", engine_us},
              {"bare_rounds_us", bare_us}};
}

// GPU time of the tiny call as replays of a CUDA graph holding one call per
// input set, captured on a non-default stream.
Json graph_time(pagedjit::Engine& engine, const std::vector<pagedjit::PagedAttentionArgs>& args,
                const pagedjit::PagedAttentionOptions& opts, int reps) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  CUstream cs = nullptr;
  pagedjit::check(d.cuStreamCreate(&cs, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  CUgraph graph = nullptr;
  CUgraphExec exec = nullptr;
  Json out;
  try {
    // A warm call on the capture stream first: its split workspace is allocated
    // outside the capture.
    engine.paged_attention(args[0], opts, cs);
    pagedjit::check(d.cuStreamSynchronize(cs), "cuStreamSynchronize");
    pagedjit::check(d.cuStreamBeginCapture(cs, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
    try {
      for (const auto& a : args) engine.paged_attention(a, opts, cs);
    } catch (...) {
      d.cuStreamEndCapture(cs, &graph);
      throw;
    }
    pagedjit::check(d.cuStreamEndCapture(cs, &graph), "cuStreamEndCapture");
    pagedjit::check(d.cuGraphInstantiate(&exec, graph, 0), "cuGraphInstantiate");
    const int calls = int(args.size());
    const std::vector<double> ms =
        time_calls(cs, 3, reps, [&](int) { pagedjit::check(d.cuGraphLaunch(exec, cs), "cuGraphLaunch"); });
    const Stats st = summarize(ms);
    out = Json{{"method", fmt::format("CUDA graph of {} calls (one per input set) captured on a non-default stream; "
                                      "median of {} replays timed with events, divided by {}",
                                      calls, st.n, calls)},
               {"calls_per_graph", calls},
               {"us_per_call", st.median * 1e3 / calls},
               {"replay_ms", st.median},
               {"replay_min_ms", st.min},
               {"replay_p90_ms", st.p90}};
  } catch (const pagedjit::Error& e) {
    out = Json{{"error", error_text(e)}};
  }
  if (exec) d.cuGraphExecDestroy(exec);
  if (graph) d.cuGraphDestroy(graph);
  d.cuStreamSynchronize(cs);
  d.cuStreamDestroy(cs);
  return out;
}

// Cold compile of a (dtype, head_dim) pair this process has not compiled:
// decode + combine, then one more decode specialization of the same pair with
// a forced tile (its combine kernel is then cached: one kernel alone).
Json compile_time(const pagedjit::DeviceInfo& device, const std::set<std::pair<DType, int>>& used) {
  const std::pair<DType, int> candidates[] = {{DType::f16, 96},  {DType::f16, 80},  {DType::bf16, 96},
                                              {DType::f16, 112}, {DType::bf16, 80}, {DType::f16, 64},
                                              {DType::bf16, 64}, {DType::f16, 192}, {DType::f32, 96}};
  const std::pair<DType, int>* pick = nullptr;
  for (const auto& c : candidates)
    if (!used.count(c)) {
      pick = &c;
      break;
    }
  if (!pick) return Json{{"error", "every candidate (dtype, head_dim) pair was already compiled in this run"}};
  pagedjit::ProblemShape shape;
  shape.num_seqs = 1;
  shape.num_heads = 32;
  shape.num_kv_heads = 8;
  shape.head_dim = pick->second;
  shape.page_size = 16;
  shape.max_blocks = 64;
  shape.num_blocks = 64;
  shape.dtype = shape.out_dtype = pick->first;
  shape.max_context_len = 1024;
  Json out{{"dtype", pagedjit::dtype_name(pick->first)}, {"head_dim", pick->second}, {"clock", "host steady clock"}};
  try {
    // TODO(disk cache): once kernels persist on disk, a kernel of an earlier
    // run may come from there: measure in a child process with
    // PAGEDJIT_CACHE_DIR set to an empty directory (and the warm-cache load in
    // a second child on the same directory).
    double t0 = host_seconds();
    const pagedjit::LaunchInfo first = pagedjit::precompile(shape, {}, device);
    out["pair_ms"] = (host_seconds() - t0) * 1e3;
    // NVRTC takes hundreds of ms; a few ms means the kernels came from a cache.
    out["suspect_cache_hit"] = out["pair_ms"].get<double>() < 50;
    out["pair_kernels"] = Json{first.decode_kernel, "combine"};
    pagedjit::PagedAttentionOptions forced;
    forced.pages_per_compute_block = first.tile_tokens == 16 ? 2 : 1;
    const pagedjit::LaunchInfo plan = pagedjit::plan_problem(shape, forced, device);
    if (plan.decode_kernel != first.decode_kernel) {
      t0 = host_seconds();
      pagedjit::precompile(shape, forced, device);
      out["single_ms"] = (host_seconds() - t0) * 1e3;
      out["single_kernel"] = plan.decode_kernel;
    } else {
      out["single_ms"] = nullptr;
      out["single_kernel"] = "n/a: a forced tile gave the same kernel";
    }
  } catch (const pagedjit::Error& e) {
    out["error"] = error_text(e);
  }
  return out;
}

}  // namespace

BenchCase tiny_case() {
  return parse_case_string("name=tiny,batch=1,q_heads=32,kv_heads=8,head_dim=128,page_size=16,ctx=1024,dtype=bf16");
}

Json run_small_calls(pagedjit::Engine& engine, const HelperKernels& kernels,
                     const std::set<std::pair<DType, int>>& used, const RunSettings& s, CUstream stream) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  const BenchCase tiny = tiny_case();
  Json out;
  out["case"] = tiny.shape_text();
  try {
    // Enough input sets that one round of them exceeds 3x L2: no call reads
    // from the cache (4 MB of KV each).
    RunSettings rs = s;
    rs.max_sets = 64;
    rs.l2 = L2Mode::rotate;
    const L2Plan l2 = plan_l2(tiny.kv_bytes(), problem_alloc_bytes(tiny), engine.device().l2_bytes, rs);
    std::vector<std::unique_ptr<pagedjit::testing::DeviceProblem>> sets;
    std::vector<pagedjit::PagedAttentionArgs> args;
    for (int i = 0; i < l2.sets; ++i) {
      sets.push_back(std::make_unique<pagedjit::testing::DeviceProblem>(tiny.problem(i)));
      args.push_back(sets.back()->args());
    }
    out["l2"] = l2.text;
    const pagedjit::PagedAttentionOptions opts = tiny.options();
    const pagedjit::LaunchInfo info = engine.paged_attention(args[0], opts, stream);
    pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
    out["launch"] = launch_info_json(info);

    out["host"] = host_cost(engine, kernels, args[0], opts, info, stream);

    const int n = int(args.size());
    const int reps = std::max(s.reps, 200);
    const Stats one = summarize(time_calls(stream, std::max(n, s.warmup), reps, [&](int i) {
      engine.paged_attention(args[std::size_t(i % n)], opts, stream);
    }));
    out["events"] = Json{{"method", fmt::format("one call between two events, {} input sets in turn; median of {} "
                                                "(includes any launch gap)",
                                                n, one.n)},
                         {"us", one.median * 1e3},
                         {"min_us", one.min * 1e3},
                         {"p90_us", one.p90 * 1e3}};
    out["graph"] = graph_time(engine, args, opts, std::max(30, s.reps / 4));
  } catch (const pagedjit::Error& e) {
    out["error"] = error_text(e);
  }
  out["compile"] = compile_time(engine.device(), used);
  out["warm_cache_load"] =
      Json{{"ms", nullptr}, {"note", "n/a (disk cache not built yet)"}, {"todo", true}};  // TODO(disk cache issue)
  return out;
}

}  // namespace pjbench
