// pagedjit-tp: tensor-parallel paged attention. One model-sized
// decode step with its query and KV heads sharded over the GPUs, one engine
// and one host thread per GPU, the outputs gathered with NCCL (or device
// copies); checked against a single-GPU run of the unsharded problem and the
// float64 CPU reference, and timed for 1, 2, 4 and 8 GPUs as available.
#include <fmt/format.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../common/cli.hpp"
#include "check.hpp"
#include "pagedjit/pagedjit.hpp"
#include "pagedjit/testing.hpp"
#include "shard.hpp"
#include "sharded_run.hpp"

using namespace pagedjit;
using json = nlohmann::json;

namespace {

constexpr int kSkipped = 77;  // the exit code CTest reports as skipped (SKIP_RETURN_CODE)

constexpr const char* kUsage = R"(pagedjit-tp: tensor-parallel paged-attention decode over several GPUs

usage: pagedjit-tp [options]

Builds one random decode step, shards its query and KV heads over the GPUs
(shard s of N: query heads [s*H/N, (s+1)*H/N), KV heads [s*KH/N, (s+1)*KH/N),
its own KV cache slice on GPU s, the same block tables and lengths), runs each
shard with its own pagedjit::Engine from its own host thread on its own stream,
and gathers the outputs with NCCL (in-place all-gather) or device copies.

Checks, for each shard count:
  - with options.batch_invariant, the gathered output is BITWISE equal to a
    single-GPU run of the unsharded problem (fixed partitions: the same work
    per KV head whatever the number of heads on the GPU);
  - with default options, the largest difference from the unsharded run;
  - both against the float64 CPU reference (relative L2 below 1e-2 for bf16,
    2e-3 for fp16, 1e-5 for fp32; no NaN/Inf).
Times per step (all shards' attention + the gather): host clock around the
stream synchronizations, and CUDA events per device; medians after warm-up.

problem:
  --heads N          query heads (default 64)
  --kv-heads N       KV heads (default 8)
  --head-dim N       (default 128)
  --dtype T          bf16 | fp16 | fp32 (default bf16; the output too)
  --page-size N      tokens per page (default 16)
  --batch N          sequences (default 32)
  --context N        tokens per sequence (default 4096)
  --ragged           lengths uniform in [context/2, context] instead
  --seed N           (default 1)
runs:
  --gpus N           use at most N GPUs (default: all visible)
  --gather MODE      auto (default: nccl when built with it, else copies),
                     nccl, copies, or both (one row each)
  --all-on-gpu0      also run 2, 4 and 8 shards all on GPU 0 (gathered by
                     copies); automatic when only one GPU is used
  --reps N           timed steps per run (default 50)
  --warmup N         untimed steps first (default 5)
  --json FILE        the results as JSON
  --help, --version

Exit codes: 0 all checks passed, 1 a check failed or an error, 2 bad usage,
77 no GPU (nothing run). NCCL_NVLS_ENABLE is set to 0 (no NVLink multicast).
)";

struct Options {
  int heads = 64, kv_heads = 8, head_dim = 128, page_size = 16, batch = 32, context = 4096;
  DType dtype = DType::bf16;
  bool ragged = false;
  std::uint64_t seed = 1;
  int gpus = 0;
  std::string gather = "auto";
  bool all_on_gpu0 = false;
  int reps = 50, warmup = 5;
  std::string json_path;
};

Options parse(int argc, char** argv) {
  Options o;
  pjtools::Cli cli("pagedjit-tp", kUsage, argc, argv);
  constexpr long long kMax = 1ll << 30;
  while (cli.next()) {
    const std::string& key = cli.option();
    if (key == "--heads")
      o.heads = int(cli.integer(1, kMax));
    else if (key == "--kv-heads")
      o.kv_heads = int(cli.integer(1, kMax));
    else if (key == "--head-dim")
      o.head_dim = int(cli.integer(16, kMax));
    else if (key == "--page-size")
      o.page_size = int(cli.integer(1, kMax));
    else if (key == "--batch")
      o.batch = int(cli.integer(1, kMax));
    else if (key == "--context")
      o.context = int(cli.integer(1, kMax));
    else if (key == "--seed")
      o.seed = std::uint64_t(cli.integer(0, kMax));
    else if (key == "--gpus")
      o.gpus = int(cli.integer(1, kMax));
    else if (key == "--reps")
      o.reps = int(cli.integer(1, kMax));
    else if (key == "--warmup")
      o.warmup = int(cli.integer(0, kMax));
    else if (key == "--json")
      o.json_path = cli.value();
    else if (key == "--ragged")
      o.ragged = true;
    else if (key == "--all-on-gpu0")
      o.all_on_gpu0 = true;
    else if (key == "--dtype")
      o.dtype = parse_dtype(cli.choice({"bf16", "fp16", "fp32"}));
    else if (key == "--gather")
      o.gather = cli.choice({"auto", "nccl", "copies", "both"});
    else
      cli.unknown();
  }
  if (o.heads % o.kv_heads != 0)
    cli.fail(fmt::format("--heads ({}) must be a multiple of --kv-heads ({})", o.heads, o.kv_heads));
  if (o.gather == "nccl" && !pjtp::nccl_built())
    cli.fail(
        "--gather nccl: this pagedjit-tp was built without NCCL (configure with NCCL found, "
        "see cmake/nccl.cmake)");
  return o;
}

double tolerance(DType dt) {
  return dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1e-2;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string bytes_text(double b) {
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  return fmt::format("{:.1f} KiB", b / 1024.0);
}

// The float64 reference output, [seqs, heads, head_dim], sequences spread over the CPU's threads.
std::vector<double> cpu_reference(const testing::HostProblem& host, const PagedAttentionOptions& options) {
  const PagedAttentionArgs args = host.args();
  const auto& c = host.config();
  const int S = int(c.context_lens.size());
  const std::size_t row = std::size_t(c.num_heads) * std::size_t(c.head_dim);
  std::vector<double> out(std::size_t(S) * row);
  const int T = std::max(1, std::min<int>(S, int(std::thread::hardware_concurrency())));
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(T));
  for (int t = 0; t < T; ++t)
    threads.emplace_back([&, t] {
      try {
        std::vector<int> seqs;
        for (int s = t; s < S; s += T) seqs.push_back(s);
        const ReferenceOutputs r = reference_paged_attention(args, options, seqs);
        for (std::size_t i = 0; i < r.seqs.size(); ++i)
          std::copy_n(r.output.begin() + std::ptrdiff_t(i * row), row,
                      out.begin() + std::ptrdiff_t(std::size_t(r.seqs[i]) * row));
      } catch (...) {
        errors[std::size_t(t)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

struct Diff {
  std::int64_t differing = 0;  // elements whose bits differ
  double max_abs = 0;          // over elements finite in both
  std::int64_t nonfinite = 0;  // NaN/Inf in `got`
};

Diff difference(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& want, DType dt) {
  Diff d;
  const std::size_t es = dtype_size(dt), n = got.size() / es;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::memcmp(got.data() + i * es, want.data() + i * es, es) != 0) ++d.differing;
    const float a = load_element(got.data(), std::int64_t(i), dt), b = load_element(want.data(), std::int64_t(i), dt);
    if (!std::isfinite(a)) {
      ++d.nonfinite;
      continue;
    }
    if (std::isfinite(b)) d.max_abs = std::max(d.max_abs, double(std::abs(a - b)));
  }
  return d;
}

struct Timing {
  double host_ms = 0, event_ms = 0, attention_ms = 0;
};

Timing time_steps(pjtp::ShardedRun& run, const PagedAttentionOptions& o, const Options& opt) {
  for (int i = 0; i < opt.warmup; ++i) run.step(o);
  std::vector<double> host, event, attention;
  for (int i = 0; i < opt.reps; ++i) {
    const pjtp::StepTimes t = run.step(o);
    host.push_back(t.host_ms), event.push_back(t.event_ms), attention.push_back(t.attention_ms);
  }
  return {median(host), median(event), median(attention)};
}

struct RunResult {
  std::string label;
  int shards = 1;
  std::vector<int> devices;
  pjtp::Gather gather = pjtp::Gather::none;
  bool peer_access = false;
  std::string skipped;  // why it did not run ("" when it ran)
  std::string error;    // what stopped it ("" when it completed)
  Timing time;
  std::string plan_default, plan_invariant;
  // Against the unsharded run on GPU 0 (for the unsharded run itself: unused).
  Diff invariant_vs_unsharded, default_vs_unsharded;
  int holders_checked = 0;
  // Against the CPU reference.
  testing::ErrorStats ref_default, ref_invariant;
  bool ok = true;
  std::vector<std::string> failures;
};

struct Outputs {
  std::vector<std::uint8_t> invariant, standard;  // head-major bytes
  LaunchInfo invariant_plan;
};

// The decode kernel's name without its merge mode: the cluster and global
// merges give the same bits (a GPU test checks it).
std::string kernel_but_merge(const std::string& name) {
  return name.substr(0, name.rfind(", pj::Merge::"));
}

// What must match for a shard's heads to be computed exactly as in the unsharded call.
bool same_work_per_head(const LaunchInfo& a, const LaunchInfo& b) {
  return kernel_but_merge(a.decode_kernel) == kernel_but_merge(b.decode_kernel) && a.num_splits == b.num_splits &&
         a.chunk_tokens == b.chunk_tokens && a.heads_per_cta == b.heads_per_cta && a.v_dims == b.v_dims;
}

// Runs and checks one configuration. `base` is the unsharded run's outputs
// (nullptr for the unsharded run, whose outputs are returned through `mine`).
RunResult run_config(const testing::HostProblem& host, const std::vector<double>& ref, std::string label,
                     std::vector<int> devices, pjtp::Gather gather, const Outputs* base, Outputs* mine,
                     const Options& opt) {
  RunResult r;
  r.label = std::move(label);
  r.shards = int(devices.size());
  r.devices = devices;
  r.gather = gather;
  const auto& cfg = host.config();
  const double tol = tolerance(cfg.dtype);
  PagedAttentionOptions standard, invariant;
  invariant.batch_invariant = true;

  pjtp::ShardedRun run(host, devices, gather);
  r.peer_access = run.peer_access();
  const LaunchInfo plan_default = run.plan(standard), plan_invariant = run.plan(invariant);
  r.plan_default = plan_default.decode_kernel + " " + plan_default.describe();
  r.plan_invariant = plan_invariant.decode_kernel + " " + plan_invariant.describe();
  if (mine) mine->invariant_plan = plan_invariant;
  auto fail = [&](std::string why) {
    r.ok = false;
    r.failures.push_back(std::move(why));
  };
  auto check_ref = [&](const std::vector<std::uint8_t>& out, const char* what) {
    const testing::ErrorStats e = testing::compare(pjtp::head_major_to_seq_major(out, cfg), ref);
    if (e.nonfinite) fail(fmt::format("{}: {} NaN/Inf elements (unwritten or overflowed)", what, e.nonfinite));
    if (!(e.rel_l2 < tol)) fail(fmt::format("{}: rel L2 {:.3e} vs the CPU reference >= {:.0e}", what, e.rel_l2, tol));
    return e;
  };

  for (const bool inv : {true, false}) {
    const PagedAttentionOptions& o = inv ? invariant : standard;
    run.poison();
    run.step(o);
    const std::vector<int> holders = run.holders();
    r.holders_checked = int(holders.size());
    for (int h : holders) {
      const std::vector<std::uint8_t> out = run.gathered(h);
      const std::string where = fmt::format("{} options, output on device {} (shard {})",
                                            inv ? "batch-invariant" : "default", devices[std::size_t(h)], h);
      if (h == 0) {
        (inv ? r.ref_invariant : r.ref_default) = check_ref(out, where.c_str());
        if (mine) (inv ? mine->invariant : mine->standard) = out;
      }
      if (base) {
        const Diff d = difference(out, inv ? base->invariant : base->standard, cfg.out_dtype);
        Diff& keep = inv ? r.invariant_vs_unsharded : r.default_vs_unsharded;
        keep.differing = std::max(keep.differing, d.differing);
        keep.max_abs = std::max(keep.max_abs, d.max_abs);
        keep.nonfinite = std::max(keep.nonfinite, d.nonfinite);
        if (inv && d.differing)
          fail(
              fmt::format("{}: {} of {} elements differ from the unsharded run (max |diff| {:.3e}); expected "
                          "bitwise equality{}",
                          where, d.differing, out.size() / dtype_size(cfg.out_dtype), d.max_abs,
                          same_work_per_head(plan_invariant, base->invariant_plan)
                              ? " (the plans do the same work per KV head)"
                              : fmt::format(" (the plans differ: shard {} vs unsharded {} {})", r.plan_invariant,
                                            base->invariant_plan.decode_kernel, base->invariant_plan.describe())));
        if (d.nonfinite) fail(fmt::format("{}: {} NaN/Inf elements", where, d.nonfinite));
      }
    }
  }
  r.time = time_steps(run, standard, opt);
  return r;
}

json to_json(const testing::ErrorStats& e) {
  return {{"rel_l2", e.rel_l2}, {"max_abs", e.max_abs}, {"nonfinite", e.nonfinite}};
}

// The decode step of the options: every sequence `context` tokens long, or
// with --ragged lengths uniform in [context/2, context].
testing::ProblemConfig problem_config(const Options& opt) {
  testing::ProblemConfig cfg;
  cfg.num_heads = opt.heads;
  cfg.num_kv_heads = opt.kv_heads;
  cfg.head_dim = opt.head_dim;
  cfg.page_size = opt.page_size;
  cfg.dtype = cfg.out_dtype = opt.dtype;
  cfg.layout = CacheLayout::blocks_heads;
  cfg.seed = opt.seed;
  cfg.context_lens.assign(std::size_t(opt.batch), opt.context);
  if (opt.ragged) {
    std::uint64_t x = opt.seed * 0x9E3779B97F4A7C15ull + 1;
    const int lo = std::max(1, opt.context / 2);
    for (int& l : cfg.context_lens) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      l = lo + int(x % std::uint64_t(opt.context - lo + 1));
    }
  }
  return cfg;
}

// What the header prints and the JSON records about the machine and the gathers.
struct Environment {
  int visible = 0, gpus = 0;          // GPUs visible, GPUs used
  json devices = json::array();       // each visible GPU
  std::vector<pjtp::Gather> gathers;  // the gathers each shard count runs with
  std::string nccl;                   // NCCL's version ("" without NCCL)
  const char* nvls = nullptr;         // NCCL_NVLS_ENABLE
};

void print_problem(const Options& opt, double kv_bytes, double out_bytes) {
  fmt::print("pagedjit-tp {}: tensor-parallel paged-attention decode\n", kVersion);
  fmt::print(
      "problem: {} sequences x {} tokens{}, {} query / {} KV heads, head_dim {}, {}, page {} "
      "(KV cache {}, output {})\n",
      opt.batch, opt.context, opt.ragged ? " (ragged, >= half)" : "", opt.heads, opt.kv_heads, opt.head_dim,
      dtype_name(opt.dtype), opt.page_size, bytes_text(kv_bytes), bytes_text(out_bytes));
}

// Prints the devices line; returns each visible device as JSON.
json describe_devices(int visible, int gpus) {
  json devices_json = json::array();
  std::string device_line;
  for (int d = 0; d < visible; ++d) {
    cudaDeviceProp p{};
    TP_CUDA(cudaGetDeviceProperties(&p, d));
    devices_json.push_back({{"ordinal", d}, {"name", p.name}, {"cc", fmt::format("{}.{}", p.major, p.minor)}});
    device_line +=
        fmt::format("{}[{}] {} (sm_{}{}){}", d ? ", " : "", d, p.name, p.major, p.minor, d < gpus ? "" : " unused");
  }
  fmt::print("devices: {} visible, {} used: {}\n", visible, gpus, device_line);
  return devices_json;
}

std::vector<pjtp::Gather> gathers_of(const Options& opt) {
  std::vector<pjtp::Gather> gathers;
  if (opt.gather == "nccl" || ((opt.gather == "auto" || opt.gather == "both") && pjtp::nccl_built()))
    gathers.push_back(pjtp::Gather::nccl);
  if (opt.gather == "copies" || opt.gather == "both" || (opt.gather == "auto" && !pjtp::nccl_built()))
    gathers.push_back(pjtp::Gather::copies);
  return gathers;
}

void print_gathers(const Environment& env) {
  std::string gather_line;
  for (pjtp::Gather g : env.gathers)
    gather_line +=
        (gather_line.empty() ? "" : "; ") +
        (g == pjtp::Gather::nccl
             ? fmt::format("nccl = NCCL {} in-place ncclAllGather, every GPU gets the whole output", env.nccl)
             : std::string("copies = cudaMemcpyPeerAsync of each shard's slice to GPU 0"));
  fmt::print("gather: {}{}; NCCL_NVLS_ENABLE={}\n", gather_line,
             pjtp::nccl_built() ? "" : " (built without NCCL: see cmake/nccl.cmake)", env.nvls ? env.nvls : "");
  fmt::print(
      "layout: each shard writes its heads head-major ([heads, seqs, head_dim] via output strides) into its "
      "slice of a full buffer, so the gather is a plain concatenation\n");
}

// The CPU reference with default options, and a line on what it and the
// problem (`host_s` seconds) took.
std::vector<double> timed_reference(const testing::HostProblem& host, double host_s) {
  PagedAttentionOptions standard;
  const auto t_ref = std::chrono::steady_clock::now();
  std::vector<double> ref = cpu_reference(host, standard);
  const double ref_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ref).count();
  fmt::print("CPU reference (float64, {} threads): {:.1f} s (problem built in {:.1f} s)\n",
             std::max(1u, std::thread::hardware_concurrency()), ref_s, host_s);
  return ref;
}

RunResult skipped_run(const std::string& label, int shards, pjtp::Gather g, std::string why) {
  RunResult r;
  r.label = label, r.shards = shards, r.gather = g;
  r.skipped = std::move(why);
  return r;
}

// A sharded run; an error (an NCCL or CUDA failure, say) fails it, and the others still run.
RunResult guarded_run(const testing::HostProblem& host, const std::vector<double>& ref, const std::string& label,
                      const std::vector<int>& devs, pjtp::Gather g, const Outputs& base, const Options& opt) {
  try {
    return run_config(host, ref, label, devs, g, &base, nullptr, opt);
  } catch (const std::exception& e) {
    RunResult r;
    r.label = label, r.shards = int(devs.size()), r.devices = devs, r.gather = g;
    r.ok = false;
    r.error = e.what();
    r.failures.push_back(r.error);
    return r;
  }
}

// Every run: the unsharded baseline on GPU 0 first, then 1, 2, 4 and 8 GPUs
// with each gather, then (one GPU, or --all-on-gpu0) 2, 4 and 8 shards on GPU 0.
std::vector<RunResult> run_configs(const testing::HostProblem& host, const std::vector<double>& ref, const Options& opt,
                                   const Environment& env) {
  std::vector<RunResult> results;
  Outputs base;
  results.push_back(run_config(host, ref, "unsharded, GPU 0", {0}, pjtp::Gather::none, nullptr, &base, opt));
  for (int n : {1, 2, 4, 8}) {
    std::vector<int> devs;
    for (int d = 0; d < n; ++d) devs.push_back(d);
    for (pjtp::Gather g : env.gathers) {
      const std::string label = fmt::format("{} GPU{}", n, n > 1 ? "s" : "");
      if (n > env.gpus || opt.kv_heads % n != 0) {
        results.push_back(skipped_run(label, n, g,
                                      n > env.gpus
                                          ? fmt::format("needs {} GPUs, {} used", n, env.gpus)
                                          : fmt::format("{} does not divide the {} KV heads", n, opt.kv_heads)));
        continue;
      }
      results.push_back(guarded_run(host, ref, label, devs, g, base, opt));
    }
  }
  if (env.gpus == 1 || opt.all_on_gpu0) {
    for (int n : {2, 4, 8}) {
      if (opt.kv_heads % n != 0) continue;
      results.push_back(guarded_run(host, ref, fmt::format("{} shards, all on GPU 0", n),
                                    std::vector<int>(std::size_t(n), 0), pjtp::Gather::copies, base, opt));
    }
  }
  return results;
}

// Copies between two GPUs without peer access (the driver stages them).
bool staged_copies(const RunResult& r) {
  return r.gather == pjtp::Gather::copies && r.shards > 1 && r.devices[1] != r.devices[0] && !r.peer_access;
}

void print_plans(const std::vector<RunResult>& results) {
  fmt::print("\nunsharded plan (default options): {}\n", results[0].plan_default);
  fmt::print("unsharded plan (batch-invariant): {}\n", results[0].plan_invariant);
  for (const RunResult& r : results)
    if (r.skipped.empty() && r.error.empty() && r.shards > 1)
      fmt::print("{:<26} shard plan: {}\n", r.label, r.plan_default);
}

// One row of the time table (a run that completed); `base_ms`: the unsharded run's host ms.
void print_row(const RunResult& r, bool is_base, double base_ms) {
  const std::string equal = is_base ? "(the baseline)"
                            : r.invariant_vs_unsharded.differing == 0
                                ? "BITWISE equal"
                                : fmt::format("DIFFERS ({} elems)", r.invariant_vs_unsharded.differing);
  const std::string gather = staged_copies(r) ? "copies*" : pjtp::gather_name(r.gather);
  fmt::print("{:<26} {:>7} {:>9.4f} {:>9.4f} {:>9.4f} {:>7.2f}x  {:<22} {:>13} {:>10.2e}{}\n", r.label, gather,
             r.time.host_ms, r.time.event_ms, r.time.attention_ms, base_ms / r.time.host_ms, equal,
             is_base ? "-" : fmt::format("{:.3e}", r.default_vs_unsharded.max_abs), r.ref_default.rel_l2,
             r.ok ? "" : "  FAILED");
}

void print_times(const std::vector<RunResult>& results, const Options& opt) {
  fmt::print("\ntime per step, median of {} after {} warm-up (all shards' attention + gather):\n", opt.reps,
             opt.warmup);
  fmt::print("{:<26} {:>7} {:>9} {:>9} {:>9} {:>8}  {:<22} {:>13} {:>10}\n", "run", "gather", "host ms", "event ms",
             "attn ms", "speedup", "batch-invariant", "default max|d|", "ref rel_l2");
  for (const RunResult& r : results) {
    if (!r.skipped.empty())
      fmt::print("{:<26} {:>7} skipped: {}\n", r.label, pjtp::gather_name(r.gather), r.skipped);
    else if (!r.error.empty())
      fmt::print("{:<26} {:>7} ERROR (below)\n", r.label, pjtp::gather_name(r.gather));
    else
      print_row(r, &r == &results[0], results[0].time.host_ms);
  }
  fmt::print(
      "host ms: host clock from handing every shard thread its work to all streams synchronized; event ms: "
      "CUDA events per device (first launch to gather done), the longest device; attn ms: the longest "
      "shard's attention; speedup: unsharded host ms / host ms; batch-invariant: gathered output vs the "
      "unsharded run, both with options.batch_invariant{}\n",
      std::any_of(results.begin(), results.end(),
                  [](const RunResult& r) { return r.skipped.empty() && r.error.empty() && staged_copies(r); })
          ? "; copies*: no peer access between the GPUs (copies staged by the driver)"
          : "");
  for (const RunResult& r : results)
    for (const std::string& f : r.failures) fmt::print("FAILED {}: {}\n", r.label, f);
}

// Every run that was not skipped passed.
bool all_passed(const std::vector<RunResult>& results) {
  return std::all_of(results.begin(), results.end(), [](const RunResult& r) { return !r.skipped.empty() || r.ok; });
}

json run_json(const RunResult& r, bool is_base, double base_ms) {
  json e = {{"label", r.label}, {"shards", r.shards}, {"gather", pjtp::gather_name(r.gather)}};
  if (!r.skipped.empty() || !r.error.empty()) {
    if (!r.skipped.empty()) e["skipped"] = r.skipped;
    if (!r.error.empty()) e["error"] = r.error, e["ok"] = false;
    return e;
  }
  e["devices"] = r.devices;
  e["peer_access"] = r.peer_access;
  e["host_ms"] = r.time.host_ms;
  e["event_ms"] = r.time.event_ms;
  e["attention_ms"] = r.time.attention_ms;
  e["speedup_vs_unsharded"] = base_ms / r.time.host_ms;
  e["plan_default"] = r.plan_default;
  e["plan_batch_invariant"] = r.plan_invariant;
  if (!is_base) {
    e["holders_checked"] = r.holders_checked;
    e["batch_invariant_bitwise_equal"] = r.invariant_vs_unsharded.differing == 0;
    e["batch_invariant_differing_elements"] = r.invariant_vs_unsharded.differing;
    e["default_max_abs_diff_vs_unsharded"] = r.default_vs_unsharded.max_abs;
  }
  e["reference_default"] = to_json(r.ref_default);
  e["reference_batch_invariant"] = to_json(r.ref_invariant);
  e["ok"] = r.ok;
  e["failures"] = r.failures;
  return e;
}

json results_json(const Options& opt, const testing::ProblemConfig& cfg, double kv_bytes, const Environment& env,
                  const std::vector<RunResult>& results, bool all_ok) {
  json j;
  j["tool"] = "pagedjit-tp";
  j["version"] = kVersion;
  j["problem"] = {{"batch", opt.batch},         {"context", opt.context},
                  {"ragged", opt.ragged},       {"context_lens", cfg.context_lens},
                  {"heads", opt.heads},         {"kv_heads", opt.kv_heads},
                  {"head_dim", opt.head_dim},   {"dtype", dtype_name(opt.dtype)},
                  {"page_size", opt.page_size}, {"seed", opt.seed},
                  {"kv_cache_bytes", kv_bytes}};
  j["devices"] = env.devices;
  j["gpus_used"] = env.gpus;
  j["nccl"] = env.nccl.empty() ? json(nullptr) : json(env.nccl);
  j["nccl_nvls_enable"] = env.nvls ? env.nvls : "";
  j["reps"] = opt.reps;
  j["warmup"] = opt.warmup;
  j["tolerance_rel_l2"] = tolerance(opt.dtype);
  j["runs"] = json::array();
  for (const RunResult& r : results) j["runs"].push_back(run_json(r, &r == &results[0], results[0].time.host_ms));
  j["ok"] = all_ok;
  return j;
}

void write_json(const std::string& path, const json& j) {
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  if (!f) throw pjtp::ToolError("cannot write " + path);
  fmt::print("wrote {}\n", path);
}

int run_all(const Options& opt) {
  Environment env;
  env.visible = device_count();
  if (env.visible == 0) {
    fmt::print("pagedjit-tp: no GPU: skipped ({})\n", device_unavailable_reason());
    return kSkipped;
  }
  env.gpus = opt.gpus ? std::min(opt.gpus, env.visible) : env.visible;

  const testing::ProblemConfig cfg = problem_config(opt);
  const auto t_host = std::chrono::steady_clock::now();
  const testing::HostProblem host(cfg);
  const double host_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_host).count();
  const double kv_bytes = double(host.k.size() + host.v.size());
  const double out_bytes = double(opt.batch) * opt.heads * opt.head_dim * double(dtype_size(opt.dtype));

  print_problem(opt, kv_bytes, out_bytes);
  env.devices = describe_devices(env.visible, env.gpus);
  env.gathers = gathers_of(opt);
  env.nccl = pjtp::nccl_built() ? pjtp::nccl_version() : "";
  env.nvls = std::getenv("NCCL_NVLS_ENABLE");
  print_gathers(env);
  const std::vector<double> ref = timed_reference(host, host_s);

  const std::vector<RunResult> results = run_configs(host, ref, opt, env);
  print_plans(results);
  print_times(results, opt);
  const bool all_ok = all_passed(results);
  if (!opt.json_path.empty()) write_json(opt.json_path, results_json(opt, cfg, kv_bytes, env, results, all_ok));
  fmt::print("{}\n", all_ok ? "pagedjit-tp: all checks passed" : "pagedjit-tp: CHECKS FAILED");
  return all_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // No NVLink multicast (NVLS), whatever the environment says: before any NCCL call.
  ::setenv("NCCL_NVLS_ENABLE", "0", 1);
  const Options opt = parse(argc, argv);
  try {
    return run_all(opt);
  } catch (const std::exception& e) {
    fmt::print(stderr, "pagedjit-tp: error: {}\n", e.what());
    return 1;
  }
}
