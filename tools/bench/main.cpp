// pagedjit-bench: the benchmark behind every performance claim of the
// project (see ../shared/BENCHMARK.md). Measures the GPU's copy and read
// bandwidth, then each case as a fraction of them, then the small-call costs.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../common/bandwidth.hpp"
#include "../common/cases.hpp"
#include "../common/cli.hpp"
#include "../common/helper_kernels.hpp"
#include "../common/json.hpp"
#include "../common/primary_context.hpp"
#include "append_bench.hpp"
#include "case_runner.hpp"
#include "gpu_info.hpp"
#include "pagedjit/pagedjit.hpp"
#include "peers.hpp"
#include "ragged_bench.hpp"
#include "report.hpp"
#include "small_calls.hpp"
#include "svg_chart.hpp"
#include "threads.hpp"

#ifndef PAGEDJIT_BENCH_SOURCE_DIR
#define PAGEDJIT_BENCH_SOURCE_DIR "."
#endif

using namespace pjbench;

namespace {

constexpr const char* kUsage = R"(pagedjit-bench: paged-attention decode benchmark (see BENCHMARK.md)

usage: pagedjit-bench [options]

Measures the GPU's copy and read-only bandwidth, then each case: median of
CUDA-event timings after warm-up, inputs kept out of L2, checked against the
CPU reference on two sequences. Prints one row per case, then the small-call
section (host cost, tiny-call GPU time, run-time compilation).

cases:
  --cases FILE        cases file (repeatable: the files' cases in order; default:
                      bench/cases.json in the current directory, else in the
                      source tree, else ../shared/bench/)
  --case SPEC         a case on the command line (repeatable), e.g.
                        name=x,batch=8,q_heads=40,kv_heads=8,head_dim=128,page_size=16,ctx=65536,dtype=fp16
                      fields: name batch q_heads kv_heads head_dim page_size(16)
                        ctx (N, Nk, or var:MAX = uniform random lengths in [1, MAX])
                        dtype(bf16|fp16|fp32) layout(blocks_heads|heads_blocks|blocks_tokens)
                        window soft_cap splits(0 = engine) seed kv_dtype(= dtype for now)
                      with --case, the file's cases run only when --cases is given
                      ragged cases (Engine::ragged_paged_attention; bench/cases-ragged.json):
                        q=Q|QxN[+...] (groups of N sequences of Q new tokens, packed
                        in order) and cached=C|C+C... (tokens cached before the step,
                        one value or one per group) instead of batch, ctx and q_len,
                        e.g. name=pf,q_heads=32,kv_heads=8,head_dim=128,q=4096x8,cached=4k
                        or q=2048+1x127,cached=0+4095 (a chunk and 127 decodes)
  --only NAME[,NAME]  run only these cases
  --list              print the selected cases and exit (no GPU needed)

timing:
  --reps N            timed calls per case (default 200, at least 100)
  --warmup N          untimed calls first (default 20)
  --l2 MODE           auto (default: rotate input sets whose KV exceeds 3x L2,
                      or flush with a memset when that needs too many), rotate, flush
  --no-read-floor     skip the same-size read per case (column /rd@sz, JSON
                      read_same_size*): the read ceiling's kernel over exactly
                      the case's bytes, timed like the case (warm-up, reps, one
                      launch per event pair, the case's L2 rotation or flush),
                      best of its grids; /rd@sz = its ms / the case's ms. One
                      buffer, sized for the largest case ("-" if it does not fit)
  --ragged-decode     also time every decode case's own inputs through
                      Engine::ragged_paged_attention (the query as packed rows,
                      query_start 0, q_len, 2 q_len, ...), checked like the case:
                      column rg/pa = ragged ms / paged_attention ms (target <= 1.02)
  --gemm-ceiling T    the bf16 dense GEMM rate, TFLOP/s, that ragged cases are
                      a fraction of (default 790: an H100 SXM's measured cuBLAS
                      rate, taken as a constant, not measured by this run)
  --no-small          skip the small-call section
  --no-append         skip the append_kv measurement (4096 new tokens x 8 KV
                      heads x d128 bf16 into a page-16 cache, GB/s and the
                      fraction of the copy bandwidth; JSON append)
  --device N          GPU ordinal (default 0)
  --threads N         only this (no cases, no small calls): host cost of the
                      small-call section's tiny call from N threads at once,
                      each with its own stream, inputs and caller-provided
                      workspace, with one engine shared by all and with an
                      engine each, and a bare cuLaunchKernel from as many
                      threads; us/call = a thread's median batch of 100 calls,
                      median over threads and over 3 rounds (JSON with --json)

launch configurations (configs/README.md):
  --no-profile        the built-in heuristic only (EngineOptions::use_profiles
                      = false); default: tuned profiles ($PAGEDJIT_PROFILE_PATH,
                      then the shipped profile of this GPU or its architecture)
  --no-pdl            plain launches (EngineOptions::programmatic_launch = false);
                      default: programmatic dependent launch on sm_90+
  --no-cluster        split calls merge through global memory
                      (EngineOptions::cluster_merge = false); default: 2-8
                      partitions merge in a thread-block cluster on sm_90+
  --host-schedule     partitions from the shapes alone (EngineOptions::
                      device_schedule = false); default: a batch's partitions
                      are cut by the kernel from the device-side lengths
  --specialize LIST   compile these launch values into the decode kernel
                      (EngineOptions::specialize), a comma list of page
                      (log2 page size), group (query heads per KV head),
                      splits (the host schedule's partitions per sequence),
                      or none (the default): docs/performance.md,
                      "Specialization"
  --compare-heuristic time every case twice, with the profiles and with the
                      heuristic only (two engines), and print per case the
                      ratio heuristic ms / profile ms and their geomean

output:
  --json FILE         everything measured, as JSON
  --svg FILE          bar chart of the fraction of read bandwidth per case
  --peers FILE        peers' timings (peers.<peer>.<case> = ms, e.g. bench/peers-h100.json):
                      their fraction of this run's read bandwidth, and the ratio
                      best-peer time / ours per case
  --svg-from-json F   no GPU: load an earlier --json output, print its table and
                      write --svg (and --json, with --peers recomputed) from it
  --help              this text
  --version           the pagedjit version

run-time compilation (BENCHMARK.md target 5; JSON small_calls.compile and
small_calls.warm_cache_load): two child processes of this program on one new,
empty cache directory (PAGEDJIT_CACHE_DIR; removed afterwards). "compile" is
the first: nothing on disk, so it compiles with NVRTC. "warm_cache_load" is the
second, with PAGEDJIT_JIT=off: every kernel comes from the disk cache. Each
reports, on the host clock:
  first_lookups.ms      its first pagedjit::precompile(): a decode kernel of the
                        tiny call with another tile
  specialization.ms     then precompile() of the tiny call's own decode kernel
                        alone: KernelCache lookup through to the kernel in host
                        memory (targets: compile <= 500 ms, load <= 2 ms)
  *.entries_added       cache entries the step wrote (= kernels compiled)
  gpu                   first_call_ms and second_call_ms of the tiny call after
                        that, first_call_overhead_ms = their difference (loading
                        the modules onto the GPU); a "note" without a GPU
  error, stderr         why the child failed; what it wrote to stderr

exit status: 0 all cases ran and passed the check; 1 a case failed or no GPU;
2 bad usage or a bad case.
)";

struct Options {
  std::vector<std::string> cases_files;
  std::string only, json, svg, peers, svg_from_json;
  std::vector<std::string> case_specs;
  RunSettings settings;
  bool small = true, append = true, list = false;
  bool no_profile = false, compare_heuristic = false, no_pdl = false, no_cluster = false, host_schedule = false;
  pagedjit::KernelSpecialization specialize;
  int device = 0;
  int threads = 0;  // --threads N: only the host cost with threads
};

[[noreturn]] void usage_error(const std::string& msg) {
  fmt::print(stderr, "pagedjit-bench: {}\n(try --help)\n", msg);
  std::exit(2);
}

// --specialize's value: "none", or a comma list of page, group and splits.
pagedjit::KernelSpecialization parse_specialization(pjtools::Cli& cli) {
  const std::string list = cli.value();
  pagedjit::KernelSpecialization s;
  if (list == "none") return s;
  std::size_t at = 0;
  while (at <= list.size()) {
    const std::size_t comma = std::min(list.find(',', at), list.size());
    const std::string item = list.substr(at, comma - at);
    bool* flag = item == "page" ? &s.page : item == "group" ? &s.group : item == "splits" ? &s.splits : nullptr;
    if (!flag || *flag)
      cli.fail(fmt::format("--specialize: \"{}\" is not one of page, group, splits (each once), or none", item));
    *flag = true;
    at = comma + 1;
  }
  return s;
}

// The settings' name of a specialization: "none", or the comma list.
std::string specialization_name(const pagedjit::KernelSpecialization& s) {
  std::string n;
  for (const auto& [on, name] : {std::pair{s.page, "page"}, std::pair{s.group, "group"}, std::pair{s.splits, "splits"}})
    if (on) n += (n.empty() ? "" : ",") + std::string(name);
  return n.empty() ? "none" : n;
}

Options parse_options(int argc, char** argv) {
  Options o;
  pjtools::Cli cli("pagedjit-bench", kUsage, argc, argv);
  constexpr long long kMaxCount = 1000000000;
  while (cli.next()) {
    const std::string& a = cli.option();
    if (a == "--cases") {
      o.cases_files.push_back(cli.value());
    } else if (a == "--case") {
      o.case_specs.push_back(cli.value());
    } else if (a == "--only") {
      o.only = cli.value();
    } else if (a == "--list") {
      o.list = true;
    } else if (a == "--reps") {
      o.settings.reps = int(cli.integer(100, kMaxCount));
    } else if (a == "--warmup") {
      o.settings.warmup = int(cli.integer(1, kMaxCount));
    } else if (a == "--l2") {
      const std::string m = cli.choice({"auto", "rotate", "flush"});
      o.settings.l2 = m == "auto" ? L2Mode::automatic : m == "rotate" ? L2Mode::rotate : L2Mode::flush;
    } else if (a == "--no-read-floor") {
      o.settings.read_floor = false;
    } else if (a == "--ragged-decode") {
      o.settings.ragged_decode = true;
    } else if (a == "--gemm-ceiling") {
      o.settings.gemm_ceiling_tflops = cli.number(1, 1e6);
    } else if (a == "--no-small") {
      o.small = false;
    } else if (a == "--no-append") {
      o.append = false;
    } else if (a == "--device") {
      o.device = int(cli.integer(0, kMaxCount));
    } else if (a == "--threads") {
      o.threads = int(cli.integer(1, 1024));
    } else if (a == "--no-profile") {
      o.no_profile = true;
    } else if (a == "--no-pdl") {
      o.no_pdl = true;
    } else if (a == "--no-cluster") {
      o.no_cluster = true;
    } else if (a == "--host-schedule") {
      o.host_schedule = true;
    } else if (a == "--specialize") {
      o.specialize = parse_specialization(cli);
    } else if (a == "--compare-heuristic") {
      o.compare_heuristic = true;
    } else if (a == "--json") {
      o.json = cli.value();
    } else if (a == "--svg") {
      o.svg = cli.value();
    } else if (a == "--peers") {
      o.peers = cli.value();
    } else if (a == "--svg-from-json") {
      o.svg_from_json = cli.value();
    } else {
      cli.unknown();
    }
  }
  if (o.no_profile && o.compare_heuristic)
    usage_error("--compare-heuristic compares with the profiles: it cannot go with --no-profile");
  if (o.threads && (o.list || o.compare_heuristic || !o.svg.empty() || !o.peers.empty() || !o.svg_from_json.empty()))
    usage_error(
        "--threads runs no cases: it cannot go with --list, --compare-heuristic, --svg, --peers or "
        "--svg-from-json");
  return o;
}

bool readable(const std::string& path) {
  return std::ifstream(path).good();
}

std::string default_cases_file() {
  const std::string src = PAGEDJIT_BENCH_SOURCE_DIR;
  for (const std::string& p : {std::string("bench/cases.json"), src + "/bench/cases.json",
                               std::string("../shared/bench/cases.json"), src + "/../shared/bench/cases.json"})
    if (readable(p)) return p;
  usage_error("no cases file found (looked for bench/cases.json here and in " + src +
              ", and ../shared/bench/cases.json); give --cases FILE or --case SPEC");
}

std::vector<BenchCase> select(const Options& o) {
  std::vector<BenchCase> cases;
  std::vector<std::string> files = o.cases_files;
  if (files.empty() && o.case_specs.empty()) files.push_back(default_cases_file());
  for (const std::string& file : files) {
    try {
      const std::vector<BenchCase> more = load_cases_file(file);
      cases.insert(cases.end(), more.begin(), more.end());
    } catch (const CaseError& e) {
      fmt::print(stderr, "pagedjit-bench: {}\n", e.what());
      std::exit(2);
    }
  }
  for (const std::string& spec : o.case_specs) {
    try {
      cases.push_back(parse_case_string(spec));
    } catch (const CaseError& e) {
      fmt::print(stderr, "pagedjit-bench: {}\n", format_case_error(spec, e));
      std::exit(2);
    }
  }
  try {
    check_unique_names(cases);
    if (!o.only.empty()) cases = select_cases(cases, o.only);
  } catch (const CaseError& e) {
    fmt::print(stderr, "pagedjit-bench: {}\n", e.what());
    std::exit(2);
  }
  return cases;
}

// Writes the requested files; returns the errors (printed after the table).
std::vector<std::string> write_outputs(const Options& o, const Json& run) {
  std::vector<std::string> errors;
  try {
    if (!o.json.empty()) write_json_file(o.json, run);
  } catch (const std::exception& e) {
    errors.push_back(e.what());
  }
  try {
    if (!o.svg.empty()) write_text_file(o.svg, render_svg(run));
  } catch (const std::exception& e) {
    errors.push_back(fmt::format("--svg: {}", e.what()));
  }
  return errors;
}

int print_and_finish(const Options& o, const Json& run, int status) {
  const std::vector<std::string> errors = write_outputs(o, run);
  fmt::print("\n{}", format_report(run));
  if (!o.json.empty() && errors.empty()) fmt::print("wrote {}\n", o.json);
  if (!o.svg.empty() && errors.empty()) fmt::print("wrote {}\n", o.svg);
  for (const auto& e : errors) fmt::print(stderr, "pagedjit-bench: {}\n", e);
  return errors.empty() ? status : 1;
}

// --svg-from-json: everything from an earlier run's JSON, no GPU.
int from_json(const Options& o) {
  Json run;
  try {
    run = read_json_file(o.svg_from_json);
    if (!o.peers.empty()) run["peers"] = compare_with_peers(run, o.peers);
    render_svg(run);  // fails early on a JSON that is not a run
  } catch (const std::exception& e) {
    fmt::print(stderr, "pagedjit-bench: {}\n", e.what());
    return 2;
  }
  Options out = o;
  if (out.json == o.svg_from_json) out.json.clear();
  return print_and_finish(out, run, 0);
}

// Where a case's launch configuration came from: the plan's source, and with
// "profile" its level and file (LaunchInfo::source / profile); then, where
// the device schedule ran, its work items and waves (a profile's work_waves
// is what --compare-heuristic weighs against the default).
std::string plan_text(const Json& row) {
  if (!row.contains("launch") || !row["launch"].is_object()) return "?";
  const Json& l = row["launch"];
  std::string s = l.contains("source") && l["source"].is_string() ? l["source"].get<std::string>() : "?";
  if (l.contains("profile") && l["profile"].is_string() && !l["profile"].get<std::string>().empty())
    s += " " + l["profile"].get<std::string>();
  if (l.contains("work_items") && l["work_items"].is_number_integer() && l["work_items"].get<int>() > 0)
    s += fmt::format("; device-schedule items={} waves={}", l["work_items"].get<int>(), l.value("work_waves", 0));
  return s;
}

std::string rel_err_text(const Json& check) {
  return check.contains("rel_l2") && check["rel_l2"].is_number() ? fmt::format("{:.1e}", check["rel_l2"].get<double>())
                                                                 : std::string("NaN");
}

// The progress lines of a ragged case; false when it failed.
bool print_ragged_row(const Json& row) {
  if (!row["error"].is_null()) {
    fmt::print("  ERROR {}\n", row["error"].get<std::string>());
    return false;
  }
  const Json& ck = row["check"];
  bool ok = ck["pass"].get<bool>();
  fmt::print(
      "  {:.4f} ms, {:.1f} TFLOP/s = {:.3f} of the GEMM ceiling, {:.1f} GB/s = {:.3f} of read; rel err {} {}{}; {}\n",
      row["time_ms"].get<double>(), row["TFLOPs"].get<double>(), row["frac_gemm"].get<double>(),
      row["GBps"].get<double>(), row["frac_read"].get<double>(), rel_err_text(ck), ok ? "ok" : "FAIL",
      ck["nonfinite_anywhere"].get<std::int64_t>() ? " (unwritten rows)" : "", row["l2"]["text"].get<std::string>());
  fmt::print("  plan: {}\n", row["launch"]["describe"].get<std::string>());
  if (row.contains("split")) {
    const Json& sp = row["split"];
    const bool split_ok = sp["check"]["pass"].get<bool>();
    ok = ok && split_ok;
    std::string parts;
    for (const Json& call : sp["calls"])
      parts += fmt::format("{}{} {:.4f} ms", parts.empty() ? "" : " + ", call["group"].get<std::string>(),
                           call["time_ms"].get<double>());
    fmt::print("  one call per group: {} = {:.4f} ms; one call / that = {:.3f}; rel err {} {}\n", parts,
               sp["sum_ms"].get<double>(), sp["ratio"].get<double>(), rel_err_text(sp["check"]),
               split_ok ? "ok" : "FAIL");
  }
  return ok;
}

// The progress line of --ragged-decode; false when it failed.
bool print_ragged_decode(const Json& rd) {
  if (!rd["error"].is_null()) {
    fmt::print("  through ragged_paged_attention: ERROR {}\n", rd["error"].get<std::string>());
    return false;
  }
  const bool ok = rd["check"]["pass"].get<bool>();
  fmt::print("  through ragged_paged_attention: {:.4f} ms = {:.3f} x paged_attention; rel err {} {}; {}\n",
             rd["time_ms"].get<double>(), rd["ratio"].get<double>(), rel_err_text(rd["check"]), ok ? "ok" : "FAIL",
             rd["launch"]["describe"].get<std::string>());
  return ok;
}

// --compare-heuristic: the heuristic-only run of a case next to the profile run.
Json compare_row(const Json& profile_row, const Json& h) {
  Json c;
  const bool ok = profile_row["error"].is_null() && h["error"].is_null() && h.contains("time_ms") &&
                  profile_row.contains("time_ms");
  c["time_ms"] = h.contains("time_ms") ? h["time_ms"] : Json();
  c["launch"] = h.contains("launch") ? h["launch"] : Json();
  c["check_pass"] = h.contains("check") ? h["check"]["pass"] : Json();
  c["error"] = h["error"];
  c["ratio"] = ok ? Json(h["time_ms"].get<double>() / profile_row["time_ms"].get<double>()) : Json();
  return c;
}

Json compare_summary(const Json& cases) {
  double log_sum = 0;
  int n = 0;
  for (const Json& r : cases)
    if (r.contains("compare_heuristic") && r["compare_heuristic"]["ratio"].is_number()) {
      log_sum += std::log(r["compare_heuristic"]["ratio"].get<double>());
      ++n;
    }
  return Json{{"geomean_ratio", n ? Json(std::exp(log_sum / n)) : Json()},
              {"cases", n},
              {"ratio", "heuristic ms / profile ms (>1: the profile is faster)"}};
}

pagedjit::EngineOptions engine_options(const Options& o, bool use_profiles) {
  pagedjit::EngineOptions e;
  e.use_profiles = use_profiles;
  e.programmatic_launch = !o.no_pdl;
  e.cluster_merge = !o.no_cluster;
  e.device_schedule = !o.host_schedule;
  e.specialize = o.specialize;
  return e;
}

// --threads N: the host cost of one call from N threads, shared engine or one each.
int run_threads(const Options& o, const Json& command) {
  const pagedjit::EngineOptions options = engine_options(o, !o.no_profile);
  pagedjit::Engine engine(o.device, options);
  PrimaryContext context(o.device);
  const pagedjit::DeviceInfo& dev = engine.device();
  Json run;
  run["tool"] = "pagedjit-bench";
  run["version"] = pagedjit::kVersion;
  run["date_utc"] = utc_now();
  run["command"] = command;
  run["gpu"] = gpu_info_json(dev);
  run["settings"] = Json{{"profiles", o.no_profile ? "off (--no-profile)" : "on"},
                         {"programmatic_launch", !o.no_pdl},
                         {"cluster_merge", !o.no_cluster},
                         {"device_schedule", !o.host_schedule},
                         {"specialize", specialization_name(o.specialize)},
                         {"cpu_threads", std::thread::hardware_concurrency()}};
  fmt::print("{} ({} SMs, {}), driver {}; {} CPU threads\n", dev.name, dev.sm_count, dev.arch(),
             run["gpu"]["driver_version"].get<std::string>(), std::thread::hardware_concurrency());
  const HelperKernels kernels(dev);
  fmt::print("host cost with {} threads ...\n", o.threads);
  std::fflush(stdout);
  run["threads"] = run_thread_scaling(engine, options, kernels, o.threads);
  fmt::print("{}", thread_scaling_text(run["threads"]));
  int status = run["threads"].contains("error") ? 1 : 0;
  if (!o.json.empty()) {
    try {
      write_json_file(o.json, run);
      fmt::print("wrote {}\n", o.json);
    } catch (const std::exception& e) {
      fmt::print(stderr, "pagedjit-bench: {}\n", e.what());
      status = 1;
    }
  }
  return status;
}

int run_benchmark(const Options& o, const std::vector<BenchCase>& cases, const Json& command) {
  Json peers_file;
  if (!o.peers.empty()) {
    try {
      peers_file = read_json_file(o.peers);
      if (!peers_file.contains("peers")) throw std::runtime_error(o.peers + ": no \"peers\" object");
    } catch (const std::exception& e) {
      fmt::print(stderr, "pagedjit-bench: {}\n", e.what());
      return 2;
    }
  }
  pagedjit::Engine engine(o.device, engine_options(o, !o.no_profile));
  // --compare-heuristic: a second engine that never uses a profile.
  std::unique_ptr<pagedjit::Engine> heuristic;
  if (o.compare_heuristic) heuristic = std::make_unique<pagedjit::Engine>(o.device, engine_options(o, false));
  PrimaryContext context(o.device);
  const pagedjit::DeviceInfo& dev = engine.device();
  CUstream stream = nullptr;

  Json run;
  run["tool"] = "pagedjit-bench";
  run["version"] = pagedjit::kVersion;
  run["date_utc"] = utc_now();
  run["command"] = command;
  run["gpu"] = gpu_info_json(dev);
  fmt::print("{} ({} SMs, {}), driver {}\n", dev.name, dev.sm_count, dev.arch(),
             run["gpu"]["driver_version"].get<std::string>());

  const HelperKernels kernels(dev);
  fmt::print("measuring copy and read bandwidth ...\n");
  const Bandwidth bw = measure_bandwidth(kernels, dev, stream);
  run["bandwidth"] = bandwidth_json(bw);
  fmt::print("  copy {:.1f} GB/s, read {:.1f} GB/s (grid {}x{})\n", bw.copy_GBps, bw.read_GBps, bw.best_read.blocks,
             bw.best_read.threads);
  run["settings"] = Json{{"reps", o.settings.reps},
                         {"warmup", o.settings.warmup},
                         {"l2", l2_mode_name(o.settings.l2)},
                         {"max_sets", o.settings.max_sets},
                         {"memory_budget", o.settings.memory_budget},
                         {"stream", "legacy default stream"},
                         {"profiles", o.no_profile ? "off (--no-profile)" : "on"},
                         {"programmatic_launch", !o.no_pdl},
                         {"cluster_merge", !o.no_cluster},
                         {"device_schedule", !o.host_schedule},
                         {"specialize", specialization_name(o.specialize)},
                         {"compare_heuristic", o.compare_heuristic},
                         {"read_floor", o.settings.read_floor},
                         {"ragged_decode", o.settings.ragged_decode},
                         {"gemm_ceiling_TFLOPs", o.settings.gemm_ceiling_tflops},
                         {"gemm_ceiling_source", "constant (--gemm-ceiling), not measured by this run"}};
  // The same-size read of every case: one buffer for the largest, freed after the cases.
  std::unique_ptr<ReadFloor> read_floor;
  std::vector<BenchCase> decode_cases;  // ragged cases have no same-size read
  for (const BenchCase& c : cases)
    if (!c.ragged()) decode_cases.push_back(c);
  if (o.settings.read_floor && !decode_cases.empty()) {
    read_floor = std::make_unique<ReadFloor>(make_read_floor(kernels, dev, decode_cases, o.settings));
    if (read_floor->error.empty())
      fmt::print("same-size read floor: {:.2f} GB buffer for the largest case\n", double(read_floor->buf.size()) / 1e9);
    else
      fmt::print("same-size read floor: none ({}); column /rd@sz shows -\n", read_floor->error);
    run["settings"]["read_floor_buffer_bytes"] = read_floor->buf.size();
    run["settings"]["read_floor_error"] = read_floor->error.empty() ? Json() : Json(read_floor->error);
  }

  int status = 0;
  run["cases"] = Json::array();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const BenchCase& c = cases[i];
    if (c.ragged()) {
      fmt::print("[{}/{}] {}: {} ({} query tokens, {:.1f} TFLOP causal) ...\n", i + 1, cases.size(), c.name,
                 c.shape_text(), c.query_tokens(), c.causal_flops() / 1e12);
      std::fflush(stdout);
      const Json row = run_ragged_case(engine, c, bw, o.settings, stream);
      if (!run.contains("ragged")) run["ragged"] = Json::array();
      run["ragged"].push_back(row);
      if (!print_ragged_row(row)) status = 1;
      continue;
    }
    fmt::print("[{}/{}] {}: {} ({:.0f} MB to read) ...\n", i + 1, cases.size(), c.name, c.shape_text(),
               double(c.bytes()) / 1e6);
    std::fflush(stdout);
    Json row = run_case(engine, c, bw, o.settings, stream, read_floor.get());
    if (!row["error"].is_null()) {
      fmt::print("  ERROR {}\n", row["error"].get<std::string>());
      status = 1;
    } else {
      const bool pass = row["check"]["pass"].get<bool>();
      if (!pass) status = 1;
      fmt::print("  {:.4f} ms, {:.1f} GB/s = {:.3f} of read; rel err {} {}; {}\n", row["time_ms"].get<double>(),
                 row["GBps"].get<double>(), row["frac_read"].get<double>(),
                 row["check"]["rel_l2"].is_number() ? fmt::format("{:.1e}", row["check"]["rel_l2"].get<double>())
                                                    : std::string("NaN"),
                 pass ? "ok" : "FAIL", row["l2"]["text"].get<std::string>());
      if (row.contains("read_same_size")) {
        const Json& rs = row["read_same_size"];
        if (row["frac_read_same_size"].is_number())
          fmt::print("  same-size read: {:.4f} ms (grid {}x{}): case = {:.3f} of it\n", rs["ms"].get<double>(),
                     rs["grid"]["blocks"].get<int>(), rs["grid"]["threads"].get<int>(),
                     row["frac_read_same_size"].get<double>());
        else
          fmt::print("  same-size read: - ({})\n", rs.value("error", std::string("?")));
      }
      fmt::print("  plan: {}\n", plan_text(row));
      if (row.contains("ragged_decode") && !print_ragged_decode(row["ragged_decode"])) status = 1;
    }
    if (heuristic) {
      const Json h = run_case(*heuristic, c, bw, o.settings, stream);
      row["compare_heuristic"] = compare_row(row, h);
      if (!h["error"].is_null() || (h.contains("check") && !h["check"].value("pass", false))) status = 1;
      const Json& ch = row["compare_heuristic"];
      if (ch["ratio"].is_number())
        fmt::print("  heuristic only: {:.4f} ms ({}): heuristic / profile = {:.3f}\n", ch["time_ms"].get<double>(),
                   plan_text(h), ch["ratio"].get<double>());
      else
        fmt::print("  heuristic only: {}\n",
                   ch["error"].is_string() ? "ERROR " + ch["error"].get<std::string>() : std::string("no comparison"));
    }
    run["cases"].push_back(row);
  }
  read_floor.reset();  // its buffer is free again for the small calls
  if (heuristic) run["compare_heuristic"] = compare_summary(run["cases"]);
  if (o.append) {
    fmt::print("append_kv ...\n");
    std::fflush(stdout);
    try {
      run["append"] = run_append(engine, bw, o.settings, stream);
    } catch (const pagedjit::Error& e) {
      fmt::print("  ERROR {}\n", e.what());
      run["append"] = Json{{"error", e.what()}};
      status = 1;
    }
  }
  if (o.small) {
    fmt::print("small calls ...\n");
    std::fflush(stdout);
    run["small_calls"] = run_small_calls(engine, kernels, o.settings, stream);
  }
  if (!o.peers.empty()) run["peers"] = compare_with_peers_json(run, peers_file, o.peers);
  return print_and_finish(o, run, status);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == kChildCompileTimingFlag)  // hidden: see small_calls.hpp
    return run_compile_timing_child(std::vector<std::string>(argv + 2, argv + argc));
  const Options o = parse_options(argc, argv);
  if (!o.svg_from_json.empty()) return from_json(o);
  const std::vector<BenchCase> cases = o.threads ? std::vector<BenchCase>() : select(o);
  if (o.list) {
    for (const BenchCase& c : cases)
      if (c.ragged())
        fmt::print("{:<20} {}  query tokens {}  context tokens {}  {:.2f} TFLOP causal  ({})\n", c.name, c.shape_text(),
                   c.query_tokens(), c.tokens(), c.causal_flops() / 1e12, c.origin);
      else
        fmt::print("{:<20} {}  tokens {}  {:.0f} MB to read  ({})\n", c.name, c.shape_text(), c.tokens(),
                   double(c.bytes()) / 1e6, c.origin);
    return 0;
  }
  if (pagedjit::device_count() == 0) {
    fmt::print(stderr, "pagedjit-bench: no GPU: {}\n", pagedjit::device_unavailable_reason());
    return 1;
  }
  Json command = Json::array();
  for (int i = 0; i < argc; ++i) command.push_back(argv[i]);
  try {
    if (o.threads) return run_threads(o, command);
    return run_benchmark(o, cases, command);
  } catch (const pagedjit::Error& e) {
    fmt::print(stderr, "pagedjit-bench: {} ({})\n", e.what(), pagedjit::error_code_name(e.code()));
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "pagedjit-bench: {}\n", e.what());
    return 1;
  }
}
