// pagedjit-tune: the offline autotuner. Times the launch
// configurations of a list of problems on this GPU and writes the profile
// the engine looks up at run time (configs/README.md).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../common/bandwidth.hpp"
#include "../common/cases.hpp"
#include "../common/cli.hpp"
#include "../common/helper_kernels.hpp"
#include "../common/primary_context.hpp"
#include "../common/timing.hpp"
#include "attention/planner.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "jit/source_set.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"
#include "pagedjit/version.hpp"
#include "precompile.hpp"
#include "results.hpp"
#include "search.hpp"
#include "tuning/profile.hpp"
#include "tuning/registry.hpp"

#ifndef PAGEDJIT_TUNE_SOURCE_DIR
#define PAGEDJIT_TUNE_SOURCE_DIR "."
#endif

using namespace pjtune;
using pagedjit::DeviceInfo;
using pagedjit::KernelConfig;
using pagedjit::ProblemShape;
namespace tuning = pagedjit::tuning;

namespace {

constexpr const char* kUsage = R"(pagedjit-tune: times launch configurations on this GPU and writes its profile

usage: pagedjit-tune [options]            tune (needs a GPU)
       pagedjit-tune --dry-run [options]  the search space, no GPU needed
       pagedjit-tune --check FILE...      validate profile files, no GPU needed

For each problem (a bench case; default configs/tune-problems.json):
  phase 1  every tile shape (warps 1/2/4/8 x 16/32/64 tokens per warp x stages
           2/3/4/6; above head_dim 128 also half the output dims per CTA, and
           8 tokens per warp: warp pairs that split the output dims) with
           the heuristic's partitions; shapes that cannot run on the device
           (shared memory, threads, the planner's limits) are pruned untimed
  phase 2  the 3 fastest tile shapes x, where the engine's device schedule
           plans the batch (two or more sequences), work items per CTA slot
           (work_waves 1/2/3/4/6/8; the one phase 1 timed is not repeated),
           else fixed partition lengths 512..16384 and one partition per
           sequence
  phase 3  the 3 fastest configurations and the heuristic's own choice timed
           again (twice the timings) and checked against the CPU reference
The profile entry of a problem's bucket is the fastest checked configuration
when it beats the heuristic by --min-gain, else the heuristic's choice, so a
profile never makes a bucket slower. Kernels are compiled in parallel first
(--jobs). A timing: --warmup calls, then the median of --reps CUDA-event
timings, L2 flushed (memset of 2x L2) before each. Every timing, failures
included, is appended to the results file at once: a rerun skips what is
there, so an interrupted run resumes and a larger search space times only
what is new.

options:
  --problems FILE   problems, in the bench's cases format (default
                    configs/tune-problems.json here, else in the source tree)
  --only NAME[,..]  tune only these problems
  --out FILE        the profile to write (default configs/<gpu-name>.json)
  --results FILE    the results file (default pagedjit-tune-<gpu-name>.jsonl)
  --budget-s N      stop timing new configurations after N seconds and write
                    the profile from what was measured (default 480)
  --reps N          timings per configuration (default 30; phase 3: twice)
  --warmup N        untimed calls first (default 5)
  --min-gain F      a tuned configuration must beat the heuristic by this
                    fraction (default 0.01)
  --jobs N          parallel compiles (default: all cores)
  --retry-failed    time again configurations stored as failed
  --device N        GPU ordinal (default 0)
  --gpu h100|h200   the device --dry-run plans for (default h100)
  --check FILE...   validate profiles (schema, values, buckets, and the
                    configurations against the device's limits when the
                    profile's GPU is a known preset); exit 0 when all are valid
  --dry-run         print problems, buckets, candidates and pruned
                    configurations for --gpu; no GPU needed
  --help, --version

exit status: 0 done; 1 a profile is invalid (--check), or tuning failed;
2 bad usage, a bad problems file, or no GPU (without --check / --dry-run).
)";

struct Options {
  std::string problems, only, out, results, gpu = "h100";
  std::vector<std::string> check_files;
  bool check = false, dry_run = false, retry_failed = false;
  double budget_s = 480, min_gain = 0.01;
  int reps = 30, warmup = 5, device = 0, jobs = 0;
};

[[noreturn]] void usage_error(const std::string& msg) {
  fmt::print(stderr, "pagedjit-tune: {}\n(try --help)\n", msg);
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options o;
  pjtools::Cli cli("pagedjit-tune", kUsage, argc, argv);
  while (cli.next()) {
    const std::string& a = cli.option();
    if (a == "--problems") {
      o.problems = cli.value();
    } else if (a == "--only") {
      o.only = cli.value();
    } else if (a == "--out") {
      o.out = cli.value();
    } else if (a == "--results") {
      o.results = cli.value();
    } else if (a == "--budget-s") {
      o.budget_s = cli.number(0, 1e7);
    } else if (a == "--reps") {
      o.reps = int(cli.integer(3, 100000));
    } else if (a == "--warmup") {
      o.warmup = int(cli.integer(1, 100000));
    } else if (a == "--min-gain") {
      o.min_gain = cli.number(0, 0.5);
    } else if (a == "--jobs") {
      o.jobs = int(cli.integer(1, 1024));
    } else if (a == "--retry-failed") {
      o.retry_failed = true;
    } else if (a == "--device") {
      o.device = int(cli.integer(0, 1024));
    } else if (a == "--gpu") {
      o.gpu = cli.choice({"h100", "h200"});
    } else if (a == "--dry-run") {
      o.dry_run = true;
    } else if (a == "--check") {
      o.check = true;
      for (std::string& f : cli.values()) o.check_files.push_back(std::move(f));
    } else {
      cli.unknown();
    }
  }
  if (o.jobs == 0) o.jobs = int(std::max(1u, std::thread::hardware_concurrency()));
  return o;
}

std::string mmss(double s) {
  if (!(s >= 0) || s > 359999) return "--:--";
  const long t = std::lround(s);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                   : fmt::format("{:02}:{:02}", t / 60, t % 60);
}

// ------------------------------------------------------------------ --check

// Limits to check a profile's configurations against: the preset of its GPU,
// else of its architecture when one is known.
std::optional<DeviceInfo> limits_for(const tuning::Profile& p) {
  for (const DeviceInfo& d : {DeviceInfo::h100_sxm(), DeviceInfo::h200()})
    if (p.device.name == d.name) return d;
  if (p.device.arch == DeviceInfo::h100_sxm().arch()) return DeviceInfo::h100_sxm();
  return std::nullopt;
}

int run_check(const Options& o) {
  int bad = 0;
  for (const std::string& file : o.check_files) {
    try {
      const tuning::Profile p = tuning::load_profile_file(file);
      std::string limits = "device limits not checked (no preset for this GPU)";
      if (const std::optional<DeviceInfo> d = limits_for(p)) {
        for (std::size_t i = 0; i < p.entries.size(); ++i) {
          const std::string err = tuning::config_error(p.entries[i].config, p.entries[i].bucket.corner(false), *d);
          if (!err.empty())
            throw std::runtime_error(fmt::format("'{}#/entries/{}/config': {} cannot run on {}: {}", file, i,
                                                 tuning::describe_config(p.entries[i].config), d->name, err));
        }
        limits = fmt::format("configurations within the limits of {}", d->name);
      }
      fmt::print("{}: ok: schema {}, {} entries for {} ({}, {} SMs), engine {}, NVRTC {}, driver {}; {}\n", file,
                 p.schema_version, p.entries.size(), p.device.name, p.device.arch, p.device.sm_count, p.engine_version,
                 p.toolkit, p.driver, limits);
    } catch (const std::exception& e) {
      fmt::print("{}: INVALID: {}\n", file, tuning::profile_error_text(e));
      ++bad;
    }
  }
  return bad ? 1 : 0;
}

// ------------------------------------------------------------------ problems

struct Problem {
  pjbench::BenchCase c;
  ProblemShape shape;
  tuning::Bucket bucket;
  std::vector<Candidate> tiles;  // phase 1, pruned ones included
  std::vector<int> chunks;       // phase 2 partition lengths (host schedule)
  // Phase 2 work_waves where the heuristic's plan takes the device schedule
  // (empty otherwise); each tile's own plan decides (phase2_configs).
  std::vector<int> waves;
  std::size_t phase2_per_tile() const { return waves.empty() ? chunks.size() : waves.size(); }
};

bool readable(const std::string& path) {
  return std::ifstream(path).good();
}

std::string default_problems_file() {
  const std::string src = PAGEDJIT_TUNE_SOURCE_DIR;
  for (const std::string& p : {std::string("configs/tune-problems.json"), src + "/configs/tune-problems.json"})
    if (readable(p)) return p;
  usage_error("no problems file (looked for configs/tune-problems.json here and in " + src + "); give --problems FILE");
}

std::vector<Problem> load_problems(const Options& o, const DeviceInfo& device) {
  const std::string file = o.problems.empty() ? default_problems_file() : o.problems;
  std::vector<pjbench::BenchCase> cases;
  try {
    cases = pjbench::load_cases_file(file);
    pjbench::check_unique_names(cases);
    if (!o.only.empty()) cases = pjbench::select_cases(cases, o.only);
  } catch (const pjbench::CaseError& e) {
    fmt::print(stderr, "pagedjit-tune: {}\n", e.what());
    std::exit(2);
  }
  std::vector<Problem> out;
  for (const pjbench::BenchCase& c : cases) {
    if (const std::string err = tuning_problem_error(c); !err.empty()) {
      fmt::print(stderr, "pagedjit-tune: {}: problem \"{}\": {}\n", file, c.name, err);
      std::exit(2);
    }
    Problem p;
    p.c = c;
    p.shape = shape_of(c);
    p.bucket = bucket_of(p.shape);
    for (const Problem& q : out)
      if (q.bucket == p.bucket) {
        fmt::print(stderr, "pagedjit-tune: {}: problems \"{}\" and \"{}\" fall in the same bucket ({}): keep one\n",
                   file, q.c.name, c.name, p.bucket.describe());
        std::exit(2);
      }
    p.tiles = tile_candidates(p.shape, device);
    p.chunks = chunk_candidates(p.shape);
    if (device_scheduled(p.shape, std::nullopt, device)) {
      const int own = pagedjit::plan_problem(p.shape, {}, device).work_waves;
      for (int w : waves_candidates())
        if (w != own) p.waves.push_back(w);
    }
    out.push_back(std::move(p));
  }
  if (out.empty()) {
    fmt::print(stderr, "pagedjit-tune: {}: no problems\n", file);
    std::exit(2);
  }
  return out;
}

std::size_t timings_planned(const Problem& p) {
  std::size_t n = 1;  // the heuristic
  for (const Candidate& c : p.tiles) n += c.pruned.empty();
  return n + std::size_t(kFinalists) * p.phase2_per_tile() + kFinalists + 1;
}

std::string short_config(const KernelConfig& c) {
  std::string s = fmt::format("{}/{}/{}", c.tile_tokens, c.warps, c.stages);
  if (c.chunk_tokens) s += fmt::format(" chunk {}", c.chunk_tokens);
  if (c.v_dims) s += fmt::format(" dv{}", c.v_dims);
  if (c.work_waves) s += fmt::format(" waves {}", c.work_waves);
  return s;
}

// ------------------------------------------------------------------ --dry-run

int run_dry(const Options& o) {
  const DeviceInfo device = gpu_preset(o.gpu);
  const std::vector<Problem> problems = load_problems(o, device);
  fmt::print("pagedjit-tune --dry-run for {} ({}, {} SMs, {} bytes of shared memory per block)\n", device.name,
             device.arch(), device.sm_count, device.max_smem_per_block);
  std::size_t candidates = 0, pruned = 0, timings = 0;
  std::set<std::string> kernels;
  for (const Problem& p : problems) {
    fmt::print("\nproblem {}: {}\n", p.c.name, p.c.shape_text());
    fmt::print("  bucket     {}\n", p.bucket.describe());
    try {
      fmt::print("  heuristic  {}\n", pagedjit::plan_problem(p.shape, p.c.options(), device).describe());
    } catch (const pagedjit::Error& e) {
      fmt::print("  heuristic  cannot plan: {}\n", e.what());
    }
    std::vector<std::string> timed;
    std::size_t n_pruned = 0;
    for (const Candidate& c : p.tiles) {
      if (!c.pruned.empty()) {
        ++n_pruned;
        continue;
      }
      timed.push_back(short_config(c.config));
      pagedjit::PagedAttentionOptions opts = p.c.options();
      opts.kernel_config = c.config;
      kernels.insert(pagedjit::plan_problem(p.shape, opts, device).decode_kernel);
    }
    fmt::print("  phase 1    {} tile configs (tile/warps/stages), {} pruned:\n", timed.size(), n_pruned);
    for (std::size_t i = 0; i < timed.size(); i += 10) {
      std::string line;
      for (std::size_t k = i; k < std::min(timed.size(), i + 10); ++k) line += fmt::format(" {:<12}", timed[k]);
      fmt::print("            {}\n", line);
    }
    for (const Candidate& c : p.tiles)
      if (!c.pruned.empty()) fmt::print("    PRUNED {}: {}\n", tuning::describe_config(c.config), c.pruned);
    if (!p.waves.empty()) {
      std::string waves;
      for (int w : p.waves) waves += fmt::format(" {}", w);
      fmt::print("  phase 2    {} fastest x {} work_waves (device schedule):{}\n", kFinalists, p.waves.size(), waves);
    } else {
      std::string chunks;
      for (int ch : p.chunks) chunks += fmt::format(" {}", ch);
      fmt::print("  phase 2    {} fastest x {} partition lengths:{}\n", kFinalists, p.chunks.size(),
                 chunks.empty() ? " (none: the context is short)" : chunks);
    }
    fmt::print("  phase 3    {} finalists + the heuristic, re-timed and checked\n", kFinalists);
    candidates += p.tiles.size();
    pruned += n_pruned;
    timings += timings_planned(p);
  }
  fmt::print(
      "\ntotal: {} problems in {} buckets; {} phase-1 configs of which {} pruned (never timed); at most {} timings; "
      "{} kernels to compile\n",
      problems.size(), problems.size(), candidates, pruned, timings, kernels.size());
  return 0;
}

// ------------------------------------------------------------------ tuning on the GPU

// Count, elapsed time and time left, on one stderr line (redrawn on a
// terminal, else a line every 10%).
class Progress {
 public:
  Progress(std::string what, std::size_t total) : what_(std::move(what)), total_(std::max<std::size_t>(total, 1)) {
    tty_ = ::isatty(2) != 0;
    t0_ = pjbench::host_seconds();
  }
  void grow(std::size_t n) { total_ += n; }
  void shrink(std::size_t n) { total_ = std::max(done_, total_ - std::min(total_, n)); }
  // One item done; `worked`: it took real work (cached ones do not count for the rate).
  void step(bool worked, const std::string& label) {
    ++done_;
    if (worked) ++worked_;
    total_ = std::max(total_, done_);
    draw(label, false);
  }
  void finish(const std::string& label) { draw(label, true); }
  double elapsed() const { return pjbench::host_seconds() - t0_; }

 private:
  void draw(const std::string& label, bool last) {
    const double el = elapsed();
    const double rate = worked_ ? el / double(worked_) : 0;
    const double eta = worked_ ? rate * double(total_ - done_) : -1;
    const double frac = double(done_) / double(total_);
    const int width = 24, filled = int(frac * width);
    std::string bar(std::size_t(filled), '=');
    if (filled < width) bar += '>' + std::string(std::size_t(width - filled - 1), ' ');
    std::string line = fmt::format("{} [{}] {}/{}  {} elapsed  ETA {}  {}", what_, bar, done_, total_, mmss(el),
                                   last ? "00:00" : mmss(eta), label);
    if (line.size() > 150) line.resize(150);
    if (tty_) {
      fmt::print(stderr, "\r{:<150}{}", line, last ? "\n" : "");
    } else {
      const int decile = int(frac * 10);
      if (last || decile != last_decile_ || el - last_print_ > 30) {
        fmt::print(stderr, "{}\n", line);
        last_decile_ = decile;
        last_print_ = el;
      }
    }
    std::fflush(stderr);
  }
  std::string what_;
  std::size_t total_, done_ = 0, worked_ = 0;
  bool tty_ = false;
  double t0_ = 0, last_print_ = 0;
  int last_decile_ = -1;
};

bool sticky(int result) {
  switch (result) {
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_UNKNOWN:
      return true;
    default:
      return false;
  }
}

struct FatalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double tolerance(pagedjit::DType dtype) {
  return dtype == pagedjit::DType::f32 ? 1e-4 : dtype == pagedjit::DType::f16 ? 2e-3 : 1e-2;
}

Json config_json(const KernelConfig& c) {
  Json j{{"tile_tokens", c.tile_tokens},
         {"warps", c.warps},
         {"stages", c.stages},
         {"chunk_tokens", c.chunk_tokens},
         {"v_dims", c.v_dims}};
  j["work_waves"] = c.work_waves;
  return j;
}

class Tuner {
 public:
  Tuner(const Options& o, pagedjit::Engine& engine, ResultStore& store, double read_GBps)
      : o_(o), engine_(engine), dev_(engine.device()), store_(store), read_GBps_(read_GBps) {
    prefix_ = fmt::format("{}|{}|src:{}|nvrtc:{}", dev_.name, pagedjit::kVersion,
                          pagedjit::jit::SourceSet::current().hash.substr(0, 16), pagedjit::jit::nvrtc_version());
    const std::int64_t l2 = std::max(dev_.l2_bytes, 50 << 20);
    flush_ = std::make_unique<pagedjit::DeviceBuffer>(
        std::size_t(std::max<std::int64_t>(64ll << 20, (2 * l2 + (1 << 20) - 1) / (1 << 20) * (1 << 20))));
  }

  std::string key(const Problem& p, const std::string& phase, const std::optional<KernelConfig>& c) const {
    return fmt::format("{}|{}|{}|{}|{}", prefix_, p.c.shape_text(), phase,
                       c ? tuning::describe_config(*c) : std::string("heuristic"), pjtune::plan_text(p.shape, c, dev_));
  }

  // Compiles every phase-1 kernel not yet timed, in parallel. Failures are
  // recorded per kernel and become failed results when their configs come up.
  void compile_all(const std::vector<Problem>& problems) {
    std::map<std::string, std::pair<ProblemShape, pagedjit::PagedAttentionOptions>> todo;
    std::size_t configs = 0, pruned = 0;
    for (const Problem& p : problems)
      for (const Candidate& c : p.tiles) {
        ++configs;
        if (!c.pruned.empty()) {
          ++pruned;
          continue;
        }
        if (store_.find(key(p, "search", c.config))) continue;
        pagedjit::PagedAttentionOptions opts = p.c.options();
        opts.kernel_config = c.config;
        try {
          const std::string k = pagedjit::plan_problem(p.shape, opts, dev_).decode_kernel;
          kernel_of_[key(p, "search", c.config)] = k;
          todo.emplace(k, std::make_pair(p.shape, opts));
        } catch (const pagedjit::Error&) {
          // Planned again when timed; the error is recorded then.
        }
      }
    fmt::print("phase 1: {} tile configs over {} problems, {} pruned before timing (they cannot run on {})\n", configs,
               problems.size(), pruned, dev_.name);
    if (todo.empty()) return;
    fmt::print("compiling {} kernels with {} threads (cached ones load from the disk cache) ...\n", todo.size(),
               o_.jobs);
    std::fflush(stdout);
    std::vector<std::pair<std::string, std::pair<ProblemShape, pagedjit::PagedAttentionOptions>>> list(todo.begin(),
                                                                                                       todo.end());
    std::atomic<std::size_t> next{0};
    std::mutex mu;
    Progress bar("compile", list.size());
    auto work = [&] {
      for (std::size_t i; (i = next.fetch_add(1)) < list.size();) {
        std::string err;
        try {
          pagedjit::precompile(list[i].second.first, list[i].second.second, dev_);
        } catch (const pagedjit::Error& e) {
          err = fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
        } catch (const std::exception& e) {
          err = e.what();
        }
        std::lock_guard<std::mutex> lock(mu);
        if (!err.empty()) compile_errors_[list[i].first] = err;
        bar.step(true, list[i].first);
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < std::min<int>(o_.jobs, int(list.size())); ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    bar.finish(fmt::format("{} kernels, {} failed", list.size(), compile_errors_.size()));
  }

  void run(std::vector<Problem>& problems) {
    std::size_t total = 0;
    for (const Problem& p : problems) total += timings_planned(p);
    progress_ = std::make_unique<Progress>("tune", total);
    t0_ = pjbench::host_seconds();
    for (Problem& p : problems) {
      run_problem(p);
      dp_.reset();
    }
    progress_->finish(fmt::format("{} timed this run, {} from {}", timed_, reused_, store_.path()));
  }

  bool out_of_budget() const { return budget_hit_; }
  std::size_t timed() const { return timed_; }
  // Configurations that gave wrong results in this run (kernel bugs: never chosen).
  const std::vector<std::string>& wrong() const { return wrong_; }
  std::size_t reused() const { return reused_; }

  // The search results of a problem that succeeded, fastest first.
  std::vector<std::pair<double, KernelConfig>> ranked(const Problem& p, bool tiles_only) const {
    std::vector<std::pair<double, KernelConfig>> out;
    std::set<std::string> seen;
    auto add = [&](const KernelConfig& c) {
      const Result* r = store_.find(key(p, "search", c));
      if (r && r->ok && seen.insert(tuning::describe_config(c)).second) out.emplace_back(r->time_ms, c);
    };
    for (const Candidate& c : p.tiles)
      if (c.pruned.empty()) add(c.config);
    if (!tiles_only)
      for (const KernelConfig& t : top_tiles(p))
        for (const KernelConfig& c : phase2_configs(p.shape, t, dev_)) add(c);
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    return out;
  }

  std::vector<KernelConfig> top_tiles(const Problem& p) const {
    std::vector<KernelConfig> out;
    for (const auto& [ms, c] : ranked(p, true)) {
      if (int(out.size()) == kFinalists) break;
      out.push_back(c);
    }
    return out;
  }

  std::vector<KernelConfig> finalists(const Problem& p) const {
    std::vector<KernelConfig> out;
    for (const auto& [ms, c] : ranked(p, false)) {
      if (int(out.size()) == kFinalists) break;
      out.push_back(c);
    }
    return out;
  }

  struct Pick {
    KernelConfig config;
    double time_ms = 0, heuristic_ms = 0;
    std::string chosen;
  };

  // The entry for a problem's bucket, from the stored results.
  std::optional<Pick> pick(const Problem& p) const {
    const Result* h = store_.find(key(p, "confirm", std::nullopt));
    if (!h || !h->ok) h = store_.find(key(p, "search", std::nullopt));
    if (!h || !h->ok || !h->line.contains("launch")) return std::nullopt;
    Pick pk;
    const Json& l = h->line["launch"];
    pk.config = KernelConfig{l.at("tile_tokens").get<int>(), l.at("warps").get<int>(), l.at("stages").get<int>(), 0, 0};
    pk.time_ms = pk.heuristic_ms = h->time_ms;
    pk.chosen = "heuristic";
    double best = 0;
    std::optional<KernelConfig> best_cfg;
    for (const KernelConfig& c : finalists(p)) {
      const Result* r = store_.find(key(p, "confirm", c));
      if (r && r->ok && (!best_cfg || r->time_ms < best)) best = r->time_ms, best_cfg = c;
    }
    if (best_cfg && best < pk.heuristic_ms * (1 - o_.min_gain)) {
      pk.config = *best_cfg;
      pk.time_ms = best;
      pk.chosen = "tuned";
    }
    pk.config = entry_config(p.shape, pk.config, dev_);
    return pk;
  }

  double frac_read(const Problem& p, double ms) const { return double(p.c.bytes()) / (ms * 1e-3) / 1e9 / read_GBps_; }

 private:
  void run_problem(Problem& p) {
    measure(p, "search", std::nullopt, o_.reps, false);
    for (const Candidate& c : p.tiles)
      if (c.pruned.empty()) measure(p, "search", c.config, o_.reps, false);
    std::vector<KernelConfig> phase2;
    for (const KernelConfig& t : top_tiles(p))
      for (const KernelConfig& c : phase2_configs(p.shape, t, dev_)) phase2.push_back(c);
    // The count planned before phase 1 assumed kFinalists tiles that all plan like the heuristic.
    progress_->shrink(std::size_t(kFinalists) * p.phase2_per_tile());
    progress_->grow(phase2.size());
    for (const KernelConfig& c : phase2) measure(p, "search", c, o_.reps, false);
    measure(p, "confirm", std::nullopt, 2 * o_.reps, true);
    const std::vector<KernelConfig> fin = finalists(p);
    for (const KernelConfig& c : fin) measure(p, "confirm", c, 2 * o_.reps, true);
    progress_->shrink(std::size_t(kFinalists - int(fin.size())));
  }

  void ensure_problem(const Problem& p) {
    if (dp_) return;
    dp_ = std::make_unique<pagedjit::testing::DeviceProblem>(p.c.problem(0));
    args_ = dp_->args();
    const std::vector<int> lens = p.c.context_lens();
    check_seqs_ = {0};
    if (lens.size() > 1) {
      const int longest = int(std::max_element(lens.begin(), lens.end()) - lens.begin());
      check_seqs_.push_back(longest != 0 ? longest : int(lens.size()) - 1);
    }
  }

  void measure(const Problem& p, const std::string& phase, const std::optional<KernelConfig>& cfg, int reps,
               bool check) {
    const std::string k = key(p, phase, cfg);
    const std::string label = fmt::format("{} {} {}", p.c.name, phase, cfg ? short_config(*cfg) : "heuristic");
    if (const Result* r = store_.find(k); r && (r->ok || !o_.retry_failed)) {
      ++reused_;
      progress_->step(false, label);
      return;
    }
    if (pjbench::host_seconds() - t0_ > o_.budget_s) {
      if (!budget_hit_)
        fmt::print(stderr,
                   "\npagedjit-tune: --budget-s {} reached: no more timings; writing the profile from what "
                   "was measured\n",
                   o_.budget_s);
      budget_hit_ = true;
      progress_->step(false, label);
      return;
    }
    const pagedjit::DriverApi& d = pagedjit::driver();
    Json line;
    line["key"] = k;
    line["device"] = dev_.name;
    line["engine_version"] = pagedjit::kVersion;
    line["problem"] = p.c.name;
    line["shape"] = p.c.shape_text();
    line["bucket"] = p.bucket.describe();
    line["phase"] = phase;
    line["config"] = cfg ? config_json(*cfg) : Json();
    line["ok"] = false;
    bool fatal = false;
    const auto kernel = kernel_of_.find(k);
    if (cfg && kernel != kernel_of_.end() && compile_errors_.count(kernel->second)) {
      line["error"] = compile_errors_.at(kernel->second);
    } else {
      try {
        ensure_problem(p);
        pagedjit::PagedAttentionOptions opts = p.c.options();
        if (cfg) opts.kernel_config = *cfg;
        const pagedjit::LaunchInfo info = engine_.plan(args_, opts);
        line["launch"] = Json{{"describe", info.describe()},
                              {"tile_tokens", info.tile_tokens},
                              {"warps", info.warps},
                              {"stages", info.stages},
                              {"chunk_tokens", info.chunk_tokens},
                              {"num_splits", info.num_splits},
                              {"v_dims", info.v_dims},
                              {"source", info.source}};
        // The plan's work items: an upper bound, which the launch lowers to the kernel's occupancy.
        line["launch"]["work_items"] = info.work_items;
        line["launch"]["work_waves"] = info.work_waves;
        CUstream stream = nullptr;
        const auto call = [&](int) { engine_.paged_attention(args_, opts, stream); };
        const auto between = [&](int i) {
          pagedjit::check(d.cuMemsetD8Async(flush_->ptr(), static_cast<unsigned char>(i), flush_->size(), stream),
                          "cuMemsetD8Async(L2 flush)");
        };
        const pjbench::Stats st = pjbench::summarize(pjbench::time_calls(stream, o_.warmup, reps, call, between));
        line["time_ms"] = st.median;
        line["min_ms"] = st.min;
        line["p90_ms"] = st.p90;
        line["reps"] = st.n;
        line["frac_read"] = frac_read(p, st.median);
        bool pass = true;
        if (check) {
          dp_->poison_outputs();
          engine_.paged_attention(args_, opts, stream);
          pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
          const pagedjit::testing::ErrorStats err = dp_->check(opts, check_seqs_);
          const double tol = tolerance(p.c.dtype);
          pass = err.nonfinite == 0 && err.rel_l2 <= tol;
          line["check"] = Json{{"seqs", check_seqs_},
                               {"rel_l2", err.nonfinite ? Json() : Json(err.rel_l2)},
                               {"nonfinite", err.nonfinite},
                               {"tolerance", tol},
                               {"pass", pass}};
          if (!pass) {
            wrong_.push_back(label);
            line["error"] =
                fmt::format("wrong result against the CPU reference: rel_l2 {} ({} non-finite), tolerance {}",
                            err.rel_l2, err.nonfinite, tol);
          }
        }
        line["ok"] = pass && st.median > 0;
        if (!(st.median > 0) && pass) line["error"] = "no time measured";
      } catch (const pagedjit::DriverError& e) {
        line["error"] = fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
        fatal = sticky(e.result());
      } catch (const pagedjit::Error& e) {
        line["error"] = fmt::format("{}: {}", pagedjit::error_code_name(e.code()), e.what());
      } catch (const std::bad_alloc&) {
        line["error"] = "out of host memory";
      }
      if (!line["ok"].get<bool>()) d.cuStreamSynchronize(nullptr);
    }
    line["utc"] = pjbench::utc_now();
    store_.add(line);
    ++timed_;
    progress_->step(true, label);
    if (fatal)
      throw FatalError(
          fmt::format("{} left the CUDA context unusable ({}); it is recorded as failed: rerun to "
                      "resume without it",
                      label, line["error"].get<std::string>()));
  }

  const Options& o_;
  pagedjit::Engine& engine_;
  const DeviceInfo& dev_;
  ResultStore& store_;
  double read_GBps_;
  std::string prefix_;
  std::unique_ptr<pagedjit::DeviceBuffer> flush_;
  std::map<std::string, std::string> kernel_of_;       // result key -> decode kernel
  std::map<std::string, std::string> compile_errors_;  // decode kernel -> error
  std::unique_ptr<Progress> progress_;
  std::unique_ptr<pagedjit::testing::DeviceProblem> dp_;
  pagedjit::PagedAttentionArgs args_;
  std::vector<int> check_seqs_;
  double t0_ = 0;
  bool budget_hit_ = false;
  std::size_t timed_ = 0, reused_ = 0;
  std::vector<std::string> wrong_;
};

std::string driver_version_string() {
  const int v = pagedjit::driver().version;
  return v > 0 ? fmt::format("{}.{}", v / 1000, (v % 1000) / 10) : "unknown";
}

int run_tune(const Options& o, const std::string& problems_file) {
  pagedjit::EngineOptions eo;
  eo.use_profiles = false;  // the heuristic's own choice is the baseline
  pagedjit::Engine engine(o.device, eo);
  pjbench::PrimaryContext context(o.device);
  const DeviceInfo& dev = engine.device();
  std::vector<Problem> problems = load_problems(o, dev);
  const std::string name = slug(dev.name);
  const std::string out = o.out.empty() ? "configs/" + name + ".json" : o.out;
  const std::string results = o.results.empty() ? "pagedjit-tune-" + name + ".jsonl" : o.results;
  fmt::print("{} ({}, {} SMs), driver {}, NVRTC {}, pagedjit {}\n", dev.name, dev.arch(), dev.sm_count,
             driver_version_string(), pagedjit::jit::nvrtc_version(), pagedjit::kVersion);
  ResultStore store(results);
  fmt::print("results file {}: {} results{}\n", results, store.loaded(),
             store.bad_lines() ? fmt::format(" ({} unreadable lines ignored)", store.bad_lines()) : std::string());

  const pjbench::HelperKernels helpers(dev);
  const pjbench::Bandwidth bw = pjbench::measure_bandwidth(helpers, dev, nullptr);
  fmt::print("read bandwidth {:.1f} GB/s (copy {:.1f} GB/s)\n", bw.read_GBps, bw.copy_GBps);

  Tuner tuner(o, engine, store, bw.read_GBps);
  const double t0 = pjbench::host_seconds();
  tuner.compile_all(problems);
  const double t_compile = pjbench::host_seconds() - t0;
  int status = 0;
  try {
    tuner.run(problems);
  } catch (const FatalError& e) {
    fmt::print(stderr, "\npagedjit-tune: {}\n", e.what());
    status = 1;
  }

  tuning::Profile prof;
  prof.device = {dev.name, dev.arch(), dev.sm_count, dev.total_memory};
  prof.toolkit = pagedjit::jit::nvrtc_version();
  prof.driver = driver_version_string();
  prof.engine_version = pagedjit::kVersion;
  prof.created_utc = pjbench::utc_now();
  prof.read_GBps = std::round(bw.read_GBps * 10) / 10;
  prof.about = fmt::format(
      "pagedjit-tune on {}: {} problems from {}; median of {} CUDA-event timings (finalists {}), L2 flushed before "
      "each; min gain over the heuristic {}",
      dev.name, problems.size(), problems_file, o.reps, 2 * o.reps, o.min_gain);
  fmt::print("\n{:<20} {:<62} {:>9} {:>9} {:>6} {:>6}  {}\n", "problem", "bucket", "heur ms", "chosen", "gain", "/read",
             "configuration");
  std::size_t tuned = 0;
  for (const Problem& p : problems) {
    const std::optional<Tuner::Pick> pk = tuner.pick(p);
    if (!pk) {
      fmt::print("{:<20} {:<62} no entry: the heuristic was not measured\n", p.c.name, p.bucket.describe());
      continue;
    }
    tuning::Entry e;
    e.bucket = p.bucket;
    e.config = pk->config;
    e.time_ms = std::round(pk->time_ms * 1e5) / 1e5;
    e.heuristic_ms = std::round(pk->heuristic_ms * 1e5) / 1e5;
    e.frac_read = std::round(tuner.frac_read(p, pk->time_ms) * 1e4) / 1e4;
    e.chosen = pk->chosen;
    e.problem = p.c.name + ": " + p.c.shape_text();
    tuned += e.chosen == "tuned";
    fmt::print("{:<20} {:<62} {:9.4f} {:9.4f} {:6.3f} {:6.3f}  {} ({})\n", p.c.name, p.bucket.describe(),
               pk->heuristic_ms, pk->time_ms, pk->heuristic_ms / pk->time_ms, e.frac_read,
               tuning::describe_config(e.config), e.chosen);
    prof.entries.push_back(e);
  }
  const std::string text = tuning::serialize_profile(prof);
  try {
    tuning::parse_profile(text, out);  // never write a profile the engine would refuse
    const std::filesystem::path parent = std::filesystem::path(out).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    std::ofstream f(out, std::ios::binary);
    f << text;
    f.close();
    if (!f) throw std::runtime_error("cannot write " + out);
  } catch (const std::exception& e) {
    fmt::print(stderr, "pagedjit-tune: {}\n", tuning::profile_error_text(e));
    return 1;
  }
  fmt::print(
      "\nwrote {}: {} entries, {} tuned (the rest keep the heuristic's choice); {} timings this run, {} reused "
      "from {}; compile {:.0f} s, total {:.0f} s{}\n",
      out, prof.entries.size(), tuned, tuner.timed(), tuner.reused(), results, t_compile, pjbench::host_seconds() - t0,
      tuner.out_of_budget() ? " (budget reached: rerun to finish)" : "");
  for (const std::string& w : tuner.wrong())
    fmt::print(stderr, "pagedjit-tune: WRONG RESULT (a kernel bug; never chosen, details in {}): {}\n", results, w);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  try {
    if (o.check) return run_check(o);
    if (o.dry_run) return run_dry(o);
    if (pagedjit::device_count() == 0) {
      fmt::print(stderr,
                 "pagedjit-tune: no GPU: {}\n"
                 "  tuning needs one; --dry-run shows the search space and --check FILE validates profiles "
                 "without one\n",
                 pagedjit::device_unavailable_reason());
      return 2;
    }
    return run_tune(o, o.problems.empty() ? default_problems_file() : o.problems);
  } catch (const pagedjit::Error& e) {
    fmt::print(stderr, "pagedjit-tune: {} ({})\n", e.what(), pagedjit::error_code_name(e.code()));
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "pagedjit-tune: {}\n", e.what());
    return 1;
  }
}
