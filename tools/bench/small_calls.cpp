#include "small_calls.hpp"

#include <fmt/format.h>

#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../common/timing.hpp"
#include "attention/planner.hpp"
#include "attention/validate.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"
#include "precompile.hpp"

namespace pjbench {
namespace {

std::string error_text(const pagedjit::Error& e) {
  return fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
}

// Calls of a shape the engine has not planned lately, as the first layer of
// a decode step: the max_context_len hint cycles through more values than
// the engine keeps plans for (16).
constexpr int kNewShapes = 64;

// Host cost: a warm engine call against a bare launch of an empty kernel,
// both as batches of back-to-back calls on the host clock; and calls that
// plan anew. `roomy`: the problem of `args` with a block table of at least
// kNewShapes spare pages (hints past the table's capacity are capped, so
// without them every hint would be the same shape); `max_len`: its longest
// context.
Json host_cost(pagedjit::Engine& engine, const HelperKernels& kernels, const pagedjit::PagedAttentionArgs& args,
               const pagedjit::PagedAttentionArgs& roomy, const pagedjit::PagedAttentionOptions& opts,
               std::int64_t max_len, int page_size, CUstream stream) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  constexpr int kBatches = 50, kPerBatch = 100;
  const auto sync = [&] { pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize"); };
  const auto bare = [&] {
    pagedjit::check(d.cuLaunchKernel(kernels.empty(), 1, 1, 1, 32, 1, 1, 0, stream, nullptr, nullptr),
                    "cuLaunchKernel(pj_bench_empty)");
  };
  const auto warm = [&] { engine.paged_attention(args, opts, stream); };
  std::vector<pagedjit::PagedAttentionOptions> shapes(kNewShapes, opts);
  std::set<std::int64_t> hints;
  for (int i = 0; i < kNewShapes; ++i) {
    shapes[std::size_t(i)].max_context_len = max_len + std::int64_t(page_size) * i;
    hints.insert(pagedjit::validate_call(roomy, shapes[std::size_t(i)]).max_context_len);
  }
  const bool distinct = int(hints.size()) == kNewShapes;  // else no new-shape timing, and the JSON says why
  // One pass first: it compiles and loads whatever kernels those plans name.
  if (distinct)
    for (const auto& o : shapes) engine.paged_attention(roomy, o, stream);
  std::size_t next = 0;
  const auto fresh = [&] { engine.paged_attention(roomy, shapes[next++ % kNewShapes], stream); };
  // Alternate the three so that drift of the machine hits all alike.
  std::vector<double> bare_us, engine_us, fresh_us;
  for (int round = 0; round < 3; ++round) {
    bare_us.push_back(host_cost_us(kBatches, kPerBatch, bare, sync).median);
    engine_us.push_back(host_cost_us(kBatches, kPerBatch, warm, sync).median);
    if (distinct) fresh_us.push_back(host_cost_us(kBatches, kPerBatch, fresh, sync).median);
  }
  const double b = summarize(bare_us).median, e = summarize(engine_us).median;
  const int launches = 1;  // splits merge in the decode kernel
  Json out{{"method", fmt::format("host steady clock, {} batches of {} back-to-back calls, stream synchronized "
                                  "between batches; median of 3 alternating rounds; new shapes: {} "
                                  "max_context_len hints in turn",
                                  kBatches, kPerBatch, kNewShapes)},
           {"engine_us", e},
           {"bare_launch_us", b},
           {"overhead_us", e - b},
           {"engine_launches_per_call", launches},
           {"engine_rounds_us", engine_us},
           {"bare_rounds_us", bare_us}};
  if (distinct) {
    const double f = summarize(fresh_us).median;
    out["engine_new_shape_us"] = f;
    out["new_shape_overhead_us"] = f - b;
    out["new_shape_rounds_us"] = fresh_us;
  } else {
    out["new_shape_error"] = fmt::format("{} max_context_len hints made only {} shapes", kNewShapes, hints.size());
  }
  return out;
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

// ---------------------------------------------------------------------------
// Run-time compilation (BENCHMARK.md target 5), measured in two child
// processes of this binary on one new, empty cache directory: the first
// compiles (nothing on disk, nothing in its memory), the second finds the same
// kernels in the disk cache.

// Entries (.pjk files) in the cache directory; 0 when it does not exist.
int count_entries(const std::string& dir) {
  std::error_code ec;
  int n = 0;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".pjk") ++n;
  return n;
}

// The measurement of one child; fills `out` as it goes, so what was measured
// before an error is still reported.
void child_measure(bool warm, const std::string& dir, int ordinal, Json& out) {
  const int before = count_entries(dir);
  out["entries_before"] = before;
  if (!warm && before != 0)
    throw std::runtime_error(
        fmt::format("{} holds {} cache entries: a cold compile needs an empty directory", dir, before));
  if (warm && before == 0) throw std::runtime_error(fmt::format("{} holds no cache entries to load", dir));

  // Plan for the real device when this process has one (its engine is made
  // before the clock starts), else for the H100 preset.
  std::unique_ptr<pagedjit::Engine> engine;
  pagedjit::DeviceInfo dev = pagedjit::DeviceInfo::h100_sxm();
  if (pagedjit::device_count() > ordinal) {
    engine = std::make_unique<pagedjit::Engine>(ordinal);
    dev = engine->device();
    out["device"] = dev.name;
  } else {
    std::string why = pagedjit::device_unavailable_reason();
    while (!why.empty() && (why.back() == '.' || why.back() == '\n')) why.pop_back();
    out["device"] = fmt::format("none ({}); planned for the {} preset", why, dev.name);
  }
  out["arch"] = dev.arch();

  // The tiny call of the small-call section; its decode kernel is the
  // specialization measured. A forced other tile gives a second decode kernel
  // of the same shape, compiled first so that NVRTC's start-up is paid before.
  const BenchCase tiny = tiny_case();
  out["case"] = tiny.shape_text();
  const pagedjit::testing::HostProblem host(tiny.problem(0));
  const pagedjit::PagedAttentionOptions opts = tiny.options();
  const pagedjit::ProblemShape shape = pagedjit::validate_call(host.args(), opts);
  const pagedjit::LaunchInfo plan = pagedjit::plan_problem(shape, opts, dev);
  pagedjit::PagedAttentionOptions other = opts;
  other.pages_per_compute_block = plan.tile_tokens == shape.page_size ? 2 : 1;
  const pagedjit::LaunchInfo other_plan = pagedjit::plan_problem(shape, other, dev);
  if (other_plan.decode_kernel == plan.decode_kernel)
    throw std::runtime_error("a forced tile gave the same decode kernel: no second specialization to time");

  // 1. The process's first lookup: the other tile's decode kernel.
  double t0 = host_seconds();
  pagedjit::precompile(shape, other, dev);
  const double first_ms = (host_seconds() - t0) * 1e3;
  const int after_first = count_entries(dir);
  out["first_lookups"] = Json{{"ms", first_ms},
                              {"kernels", Json{other_plan.decode_kernel}},
                              {"options", fmt::format("pages_per_compute_block={}", *other.pages_per_compute_block)},
                              {"entries_added", after_first - before}};
  // 2. The specialization: the tiny call's decode kernel.
  t0 = host_seconds();
  pagedjit::precompile(shape, opts, dev);
  const double one_ms = (host_seconds() - t0) * 1e3;
  const int after = count_entries(dir);
  out["specialization"] = Json{{"ms", one_ms}, {"kernel", plan.decode_kernel}, {"entries_added", after - after_first}};
  out["entries_after"] = after;

  if (!engine) {
    out["gpu"] = Json{{"note", "no GPU in this process: loading the module on a GPU was not measured"}};
    return;
  }
  // 3. Loading onto the GPU: the first call of the tiny problem against a
  //    second identical one.
  try {
    const pagedjit::DriverApi& d = pagedjit::driver();
    const HelperKernels helpers(dev);
    pagedjit::testing::DeviceProblem problem(tiny.problem(0));
    pagedjit::PagedAttentionArgs args = problem.args();
    const std::int64_t ws_bytes = engine->workspace_bytes(args, opts);
    pagedjit::DeviceBuffer workspace;
    if (ws_bytes > 0) {
      workspace = pagedjit::DeviceBuffer(std::size_t(ws_bytes));
      args.workspace = workspace.data();
      args.workspace_bytes = ws_bytes;
    }
    CUstream stream = nullptr;
    pagedjit::check(d.cuLaunchKernel(helpers.empty(), 1, 1, 1, 32, 1, 1, 0, stream, nullptr, nullptr),
                    "cuLaunchKernel(pj_bench_empty)");
    pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
    pagedjit::LaunchInfo info;
    const auto timed_call = [&] {
      const double s = host_seconds();
      info = engine->paged_attention(args, opts, stream);
      pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
      return (host_seconds() - s) * 1e3;
    };
    const double first = timed_call();
    const double second = timed_call();
    const int kernels = 1;  // one launch per call: splits merge in the kernel
    out["gpu"] = Json{{"method",
                       "host clock around Engine::paged_attention of the tiny call plus a stream synchronize, first "
                       "call after the lookups above minus a second identical call: loading the call's modules onto "
                       "the GPU (cuLibraryLoadData, lazy loading at first launch); caller-provided workspace; an "
                       "empty kernel ran first, so the context's own first-launch cost is not counted"},
                      {"first_call_ms", first},
                      {"second_call_ms", second},
                      {"first_call_overhead_ms", first - second},
                      {"kernels_loaded", kernels},
                      {"decode_kernel", info.decode_kernel}};
    if (info.decode_kernel != plan.decode_kernel)
      out["gpu"]["note"] = "the call used another decode kernel than the one timed above";
  } catch (const pagedjit::Error& e) {
    out["gpu"] = Json{{"error", error_text(e)}};
  }
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string tail_of_file(const std::string& path, std::size_t max_chars) {
  std::ifstream f(path);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text.size() > max_chars ? "..." + text.substr(text.size() - max_chars) : text;
}

// Runs this binary in child mode and returns the JSON line it printed (with
// "error" when it failed or printed none).
Json run_child(const std::string& exe, const std::string& mode, const std::string& dir, int ordinal,
               const std::string& stderr_file) {
  const std::string cmd = fmt::format("{} {} {} {} --device {} 2>{}", shell_quote(exe), kChildCompileTimingFlag, mode,
                                      shell_quote(dir), ordinal, shell_quote(stderr_file));
  const double t0 = host_seconds();
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return Json{{"error", fmt::format("popen({}): {}", cmd, std::strerror(errno))}};
  std::string text;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) text.append(buf, n);
  const int status = ::pclose(pipe);
  const double wall_ms = (host_seconds() - t0) * 1e3;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const std::size_t nl = text.rfind('\n');
  Json out = Json::parse(nl == std::string::npos ? text : text.substr(nl + 1), nullptr, false);
  if (out.is_discarded() || !out.is_object())
    out = Json{{"error", "the child printed no JSON line"}, {"stdout", text.substr(0, 2000)}};
  const std::string err = tail_of_file(stderr_file, 2000);
  if (!err.empty()) out["stderr"] = err;
  if (!out.contains("error") && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    out["error"] = fmt::format("the child exited with status {}", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  out["child_command"] = cmd;
  out["child_wall_ms"] = wall_ms;
  return out;
}

// Both children on one new temporary directory, removed afterwards.
// Returns {cold, warm}.
std::pair<Json, Json> compile_and_load(int ordinal) {
  std::error_code ec;
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) {
    const Json e{{"error", fmt::format("cannot find this program (/proc/self/exe): {}", ec.message())}};
    return {e, e};
  }
  std::filesystem::path tmp = std::filesystem::temp_directory_path(ec);
  if (ec) tmp = "/tmp";
  std::string root = (tmp / "pagedjit-bench-XXXXXX").string();
  if (!::mkdtemp(root.data())) {
    const Json e{{"error", fmt::format("mkdtemp({}): {}", root, std::strerror(errno))}};
    return {e, e};
  }
  const std::string dir = root + "/cache";
  std::filesystem::create_directory(dir, ec);
  Json cold = run_child(exe, "cold", dir, ordinal, root + "/cold.stderr");
  Json warm = cold.contains("error") ? Json{{"error", "not run: the cold-compile child failed"}}
                                     : run_child(exe, "warm", dir, ordinal, root + "/warm.stderr");
  std::filesystem::remove_all(root, ec);
  return {cold, warm};
}

}  // namespace

BenchCase tiny_case() {
  return parse_case_string("name=tiny,batch=1,q_heads=32,kv_heads=8,head_dim=128,page_size=16,ctx=1024,dtype=bf16");
}

int run_compile_timing_child(const std::vector<std::string>& args) {
  Json out;
  const bool usage_ok = (args.size() == 2 || (args.size() == 4 && args[2] == "--device")) &&
                        (args[0] == "cold" || args[0] == "warm") && !args[1].empty();
  int ordinal = 0;
  if (usage_ok && args.size() == 4) {
    try {
      std::size_t used = 0;
      ordinal = std::stoi(args[3], &used);
      if (used != args[3].size() || ordinal < 0) ordinal = -1;
    } catch (const std::exception&) {
      ordinal = -1;
    }
  }
  if (!usage_ok || ordinal < 0) {
    out["error"] = fmt::format("usage: pagedjit-bench {} cold|warm DIR [--device N]", kChildCompileTimingFlag);
    fmt::print("{}\n", out.dump());
    return 2;
  }
  const bool warm = args[0] == "warm";
  const std::string& dir = args[1];
  // The environment the engine reads when its kernel cache first starts (not
  // yet in this process): this directory, enabled, no size cap to evict with,
  // and for the warm child no compiling at all.
  ::unsetenv("PAGEDJIT_CACHE");
  ::unsetenv("PAGEDJIT_CACHE_MAX_BYTES");
  ::setenv("PAGEDJIT_CACHE_DIR", dir.c_str(), 1);
  if (warm)
    ::setenv("PAGEDJIT_JIT", "off", 1);
  else
    ::unsetenv("PAGEDJIT_JIT");
  out["mode"] = args[0];
  out["cache_dir"] = dir;
  out["env"] = fmt::format("PAGEDJIT_CACHE_DIR={}{}", dir, warm ? " PAGEDJIT_JIT=off" : "");
  out["method"] =
      warm ? "a second fresh process on the cold child's cache directory, with PAGEDJIT_JIT=off (a kernel not found "
             "on disk is an error, so nothing is compiled); host steady clock around pagedjit::precompile(), i.e. "
             "KernelCache::get through to the kernel in host memory: key, entry file read, checksum, metadata (not "
             "yet loaded on a GPU: see gpu)"
           : "a fresh process whose PAGEDJIT_CACHE_DIR is a new empty directory; host steady clock around "
             "pagedjit::precompile(), i.e. KernelCache::get through to the kernel in host memory: key, disk lookup "
             "(a miss), cross-process compile lock, NVRTC compile, entry written to disk";
  out["clock"] = "host steady clock";
  int status = 0;
  try {
    child_measure(warm, dir, ordinal, out);
  } catch (const pagedjit::Error& e) {
    out["error"] = error_text(e);
    status = 1;
  } catch (const std::exception& e) {
    out["error"] = e.what();
    status = 1;
  }
  fmt::print("{}\n", out.dump());
  return status;
}

Json run_small_calls(pagedjit::Engine& engine, const HelperKernels& kernels, const RunSettings& s, CUstream stream) {
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

    const std::vector<int> lens = tiny.context_lens();
    const int max_len = *std::max_element(lens.begin(), lens.end());
    pagedjit::testing::ProblemConfig roomy_config = tiny.problem(0);
    roomy_config.max_blocks = (max_len + tiny.page_size - 1) / tiny.page_size + kNewShapes;
    const pagedjit::testing::DeviceProblem roomy(roomy_config);
    out["host"] = host_cost(engine, kernels, args[0], roomy.args(), opts, max_len, tiny.page_size, stream);

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
  auto [cold, warm] = compile_and_load(engine.device().ordinal);
  out["compile"] = std::move(cold);
  out["warm_cache_load"] = std::move(warm);
  return out;
}

}  // namespace pjbench
