#include "case_runner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include "../common/timing.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"
#include "ragged_bench.hpp"

namespace pjbench {
namespace {

constexpr std::int64_t kMB = 1000000;

double mb(std::int64_t bytes) {
  return double(bytes) / double(kMB);
}

// The sequences the CPU reference checks: the first and the longest (or the last).
std::vector<int> check_seqs(const std::vector<int>& lens) {
  const int n = int(lens.size());
  if (n <= 1) return {0};
  const int longest = int(std::max_element(lens.begin(), lens.end()) - lens.begin());
  return {0, longest != 0 ? longest : n - 1};
}

// The case's same-size read: `warmup` untimed and `reps` timed launches of
// pj_bench_read over `bytes` at region i % `regions` of the floor's buffer,
// `between(i)` (the case's L2 flush, when it flushes) before each, for every
// grid of the list; the best median wins.
Json same_size_read(const ReadFloor& f, std::int64_t bytes, int regions, int warmup, int reps,
                    const std::function<void(int)>& between, CUstream stream) {
  const std::int64_t stride = read_floor_stride(bytes);
  if (!f.error.empty()) return Json{{"error", f.error}};
  if (stride * regions > std::int64_t(f.buf.size()))
    return Json{{"error", fmt::format("read buffer of {:.1f} MB, {} x {:.1f} MB needed", mb(std::int64_t(f.buf.size())),
                                      regions, mb(stride))}};
  Stats best;
  ReadGrid best_grid;
  for (const ReadGrid& g : f.grids) {
    const auto call = [&](int i) {
      launch_read(*f.kernels, g, f.buf.ptr() + CUdeviceptr(stride * (i % regions)), std::size_t(bytes), f.sink.ptr(),
                  stream);
    };
    const Stats st = summarize(time_calls(stream, warmup, reps, call, between));
    if (best.n == 0 || st.median < best.median) {
      best = st;
      best_grid = g;
    }
  }
  return Json{{"ms", best.median},
              {"min_ms", best.min},
              {"p10_ms", best.p10},
              {"p90_ms", best.p90},
              {"GBps", double(bytes / 16 * 16) / (best.median * 1e-3) / 1e9},
              {"bytes", bytes / 16 * 16},
              {"regions", regions},
              {"grid", Json{{"blocks", best_grid.blocks}, {"threads", best_grid.threads}}},
              {"grids_tried", f.grids.size()},
              {"reps", best.n},
              {"warmup", warmup},
              {"error", nullptr}};
}

}  // namespace

std::int64_t read_floor_stride(std::int64_t case_bytes) {
  return (std::max<std::int64_t>(case_bytes, 16) + 255) / 256 * 256;
}

ReadFloor make_read_floor(const HelperKernels& kernels, const pagedjit::DeviceInfo& device,
                          const std::vector<BenchCase>& cases, const RunSettings& s) {
  ReadFloor f;
  f.kernels = &kernels;
  f.grids = read_grid_list(device.sm_count);
  std::int64_t need = 0, case_need = 0;
  for (const BenchCase& c : cases) {
    const std::int64_t alloc = problem_alloc_bytes(c);
    if (alloc > s.memory_budget) continue;  // that case stops before its timing
    const L2Plan p = plan_l2(c.kv_bytes(), alloc, device.l2_bytes, s);
    need = std::max(need, read_floor_stride(c.bytes()) * p.sets);  // one region per input set
    case_need = std::max(case_need, alloc * p.sets + p.flush_bytes);
  }
  if (need == 0) {
    f.error = "no case to time";
    return f;
  }
  if (need > s.memory_budget) {
    f.error = fmt::format("a {:.2f} GB read buffer is over the GPU memory budget of {:.0f} GB", double(need) / 1e9,
                          double(s.memory_budget) / 1e9);
    return f;
  }
  const pagedjit::DriverApi& d = pagedjit::driver();
  try {
    std::size_t free_b = 0, total_b = 0;
    pagedjit::check(d.cuMemGetInfo(&free_b, &total_b), "cuMemGetInfo");
    constexpr std::int64_t kSlack = std::int64_t(1) << 30;  // the engine's workspace and modules
    if (std::int64_t(free_b) < need + case_need + kSlack) {
      f.error =
          fmt::format("a {:.2f} GB read buffer would not leave the largest case's {:.2f} GB (+1 GiB) of {:.2f} GB free",
                      double(need) / 1e9, double(case_need) / 1e9, double(free_b) / 1e9);
      return f;
    }
    f.buf = pagedjit::DeviceBuffer(std::size_t(need));
    f.sink = pagedjit::DeviceBuffer(read_sink_bytes(device.sm_count));
    fill_read_pattern(f.buf.ptr(), f.buf.size());
    pagedjit::check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  } catch (const pagedjit::Error& e) {
    f.buf = pagedjit::DeviceBuffer();
    f.sink = pagedjit::DeviceBuffer();
    f.error = fmt::format("no {:.2f} GB read buffer: {}", double(need) / 1e9, e.what());
  }
  return f;
}

const char* l2_mode_name(L2Mode m) {
  switch (m) {
    case L2Mode::automatic:
      return "auto";
    case L2Mode::rotate:
      return "rotate";
    case L2Mode::flush:
      return "flush";
  }
  return "?";
}

L2Plan plan_l2(std::int64_t kv_bytes, std::int64_t alloc_bytes, std::int64_t l2_bytes, const RunSettings& s) {
  if (l2_bytes <= 0) l2_bytes = 50 * kMB;
  const std::int64_t target = 3 * l2_bytes;
  const std::int64_t kv = std::max<std::int64_t>(kv_bytes, 1);
  const std::int64_t need = (target + kv - 1) / kv;
  const std::int64_t fit = std::max<std::int64_t>(1, s.memory_budget / std::max<std::int64_t>(alloc_bytes, 1));
  L2Plan p;
  const bool rotate = s.l2 == L2Mode::rotate || (s.l2 == L2Mode::automatic && need <= s.max_sets && need <= fit);
  if (rotate) {
    p.sets = int(std::clamp<std::int64_t>(need, 1, std::min<std::int64_t>(fit, 1024)));
    p.text = p.sets == 1 ? fmt::format("rotate 1 set (KV {:.0f} MB = {:.1f}x L2)", mb(kv_bytes),
                                       double(kv_bytes) / double(l2_bytes))
                         : fmt::format("rotate {} sets ({} x {:.1f} MB KV = {:.1f}x L2)", p.sets, p.sets, mb(kv_bytes),
                                       double(kv_bytes) * p.sets / double(l2_bytes));
  } else {
    p.sets = 1;
    p.flush_bytes = std::max<std::int64_t>(64ll << 20, (2 * l2_bytes + (1 << 20) - 1) / (1 << 20) * (1 << 20));
    p.text =
        fmt::format("flush L2 ({:.0f} MB memset before each timing; KV {:.1f} MB)", mb(p.flush_bytes), mb(kv_bytes));
  }
  return p;
}

L2Plan plan_case_memory(const BenchCase& c, std::int64_t l2_bytes, const RunSettings& s, Json& row) {
  const std::int64_t alloc = problem_alloc_bytes(c);
  if (alloc > s.memory_budget)
    throw pagedjit::InvalidArgument(
        "case", fmt::format("a problem under the GPU memory budget of {:.0f} GB", double(s.memory_budget) / 1e9),
        fmt::format("{:.1f} GB", double(alloc) / 1e9));
  const L2Plan l2 = plan_l2(c.kv_bytes(), alloc, l2_bytes, s);
  row["l2"] = Json{{"mode", l2.flush_bytes ? "flush" : "rotate"},
                   {"sets", l2.sets},
                   {"flush_bytes", l2.flush_bytes},
                   {"text", l2.text}};
  return l2;
}

std::int64_t problem_alloc_bytes(const BenchCase& c) {
  std::int64_t pages = 3;  // the spare pages ProblemConfig adds
  for (int l : c.context_lens()) pages += (std::int64_t(l) + c.page_size - 1) / c.page_size;
  const std::int64_t es = std::int64_t(pagedjit::dtype_size(c.dtype));
  const std::int64_t kv =
      2 * pages * c.page_size * c.kv_heads * c.head_dim * std::int64_t(pagedjit::dtype_size(c.kv_dtype));
  // Query and output; a ragged case has its packed ones besides the decode problem's.
  const std::int64_t rows = std::int64_t(c.batch) * c.q_len + (c.ragged() ? c.query_tokens() : 0);
  const std::int64_t qo = 2 * rows * c.q_heads * c.head_dim * es;
  return kv + qo + std::int64_t(c.batch) * 4 * (1 + pages) + (1 << 20);
}

double tolerance(pagedjit::DType dtype) {
  switch (dtype) {
    case pagedjit::DType::f32:
      return 1e-4;
    case pagedjit::DType::f16:
      return 2e-3;
    default:
      return 1e-2;
  }
}

Json launch_info_json(const pagedjit::LaunchInfo& i) {
  return Json{{"describe", i.describe()},
              {"decode_kernel", i.decode_kernel},
              {"compute", i.compute},
              {"source", i.source},
              {"profile", i.profile},
              {"num_splits", i.num_splits},
              {"chunk_tokens", i.chunk_tokens},
              {"work_items", i.work_items},
              {"work_waves", i.work_waves},
              {"tile_tokens", i.tile_tokens},
              {"warps", i.warps},
              {"stages", i.stages},
              {"heads_per_cta", i.heads_per_cta},
              {"head_chunks", i.head_chunks},
              {"grid", {i.grid[0], i.grid[1], i.grid[2]}},
              {"threads", i.threads},
              {"smem_bytes", i.smem_bytes},
              {"workspace_bytes", i.workspace_bytes}};
}

Json case_config_json(const BenchCase& c) {
  Json j{{"batch", c.batch},
         {"q_heads", c.q_heads},
         {"kv_heads", c.kv_heads},
         {"head_dim", c.head_dim},
         {"page_size", c.page_size},
         {"ctx", c.ctx.describe()},
         {"dtype", pagedjit::dtype_name(c.dtype)},
         {"kv_dtype", pagedjit::dtype_name(c.kv_dtype)},
         {"q_len", c.q_len},
         {"layout", pagedjit::layout_name(c.layout)},
         {"splits", c.splits},
         {"seed", c.seed}};
  j["window"] = c.window ? Json(*c.window) : Json();
  j["soft_cap"] = c.soft_cap ? Json(*c.soft_cap) : Json();
  if (c.ctx.kind != ContextSpec::Kind::fixed && !c.ragged()) j["context_lens"] = c.context_lens();
  if (c.ragged()) {
    j["q"] = c.q_text();
    j["cached"] = c.cached_text();
    Json groups = Json::array();
    for (const RaggedGroup& g : c.groups)
      groups.push_back(Json{{"q_len", g.q_len}, {"count", g.count}, {"cached", g.cached}});
    j["groups"] = groups;
  }
  return j;
}

Json run_case(pagedjit::Engine& engine, const BenchCase& c, const Bandwidth& bw, const RunSettings& s, CUstream stream,
              const ReadFloor* read_floor) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  Json row;
  row["name"] = c.name;
  row["origin"] = c.origin;
  row["shape"] = c.shape_text();
  row["config"] = case_config_json(c);
  row["uniform_lengths"] = c.uniform_lengths();
  row["tokens"] = c.tokens();
  row["tokens_read"] = c.tokens_read();
  row["kv_bytes"] = c.kv_bytes();
  row["bytes"] = c.bytes();
  row["floor_ms_copy"] = double(c.bytes()) / (bw.copy_GBps * 1e9) * 1e3;
  row["floor_ms_read"] = double(c.bytes()) / (bw.read_GBps * 1e9) * 1e3;
  row["error"] = nullptr;
  try {
    const L2Plan l2 = plan_case_memory(c, engine.device().l2_bytes, s, row);

    const double t0 = host_seconds();
    std::vector<std::unique_ptr<pagedjit::testing::DeviceProblem>> sets;
    std::vector<pagedjit::PagedAttentionArgs> args;
    for (int i = 0; i < l2.sets; ++i) {
      sets.push_back(std::make_unique<pagedjit::testing::DeviceProblem>(c.problem(i)));
      args.push_back(sets.back()->args());
    }
    row["setup_s"] = host_seconds() - t0;
    const pagedjit::PagedAttentionOptions opts = c.options();

    // Correctness: poisoned output, one call, the CPU reference on two sequences.
    sets[0]->poison_outputs();
    const double t1 = host_seconds();
    const pagedjit::LaunchInfo info = engine.paged_attention(args[0], opts, stream);
    pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
    row["first_call_ms"] = (host_seconds() - t1) * 1e3;  // includes compiling and loading its kernels
    row["launch"] = launch_info_json(info);
    const std::vector<int> seqs = check_seqs(c.context_lens());
    const pagedjit::testing::ErrorStats err = sets[0]->check(opts, seqs);
    const double tol = tolerance(c.dtype);
    const bool pass = err.nonfinite == 0 && err.rel_l2 <= tol;
    row["check"] = Json{{"seqs", seqs},           {"rel_l2", err.nonfinite ? Json() : Json(err.rel_l2)},
                        {"max_abs", err.max_abs}, {"nonfinite", err.nonfinite},
                        {"tolerance", tol},       {"pass", pass}};

    // Timing.
    std::unique_ptr<pagedjit::DeviceBuffer> flush;
    if (l2.flush_bytes) flush = std::make_unique<pagedjit::DeviceBuffer>(std::size_t(l2.flush_bytes));
    const int n = l2.sets;
    const auto call = [&](int i) { engine.paged_attention(args[std::size_t(i % n)], opts, stream); };
    std::function<void(int)> between;  // empty: no flush
    if (flush)
      between = [&](int i) {
        pagedjit::check(d.cuMemsetD8Async(flush->ptr(), static_cast<unsigned char>(i), flush->size(), stream),
                        "cuMemsetD8Async(L2 flush)");
      };
    const int warmup = std::max(s.warmup, n);
    const Stats st = summarize(time_calls(stream, warmup, s.reps, call, between));
    const double gbps = double(c.bytes()) / (st.median * 1e-3) / 1e9;
    row["reps"] = st.n;
    row["warmup"] = warmup;
    row["time_ms"] = st.median;
    row["min_ms"] = st.min;
    row["p10_ms"] = st.p10;
    row["p90_ms"] = st.p90;
    row["max_ms"] = st.max;
    row["GBps"] = gbps;
    row["frac_copy"] = gbps / bw.copy_GBps;
    row["frac_read"] = gbps / bw.read_GBps;
    if (s.ragged_decode)
      row["ragged_decode"] =
          time_decode_as_ragged(engine, c, sets, opts, seqs, st.median, warmup, s.reps, between, stream);
    if (read_floor) {
      // The same bytes read by pj_bench_read, timed the same way: n regions in
      // turn where the case rotates n sets, the same flush where it flushes.
      try {
        row["read_same_size"] = same_size_read(*read_floor, c.bytes(), n, warmup, s.reps, between, stream);
      } catch (const pagedjit::Error& e) {
        row["read_same_size"] = Json{{"error", e.what()}};
        d.cuStreamSynchronize(stream);
      }
      const Json& rs = row["read_same_size"];
      const Json ms = rs.contains("ms") ? rs["ms"] : Json();
      row["read_same_size_ms"] = ms;
      row["frac_read_same_size"] = ms.is_number() ? Json(ms.get<double>() / st.median) : Json();
    }
  } catch (const pagedjit::Error& e) {
    row["error"] = fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
    d.cuStreamSynchronize(stream);
  } catch (const std::bad_alloc&) {
    row["error"] = "out of host memory";
  }
  return row;
}

}  // namespace pjbench
