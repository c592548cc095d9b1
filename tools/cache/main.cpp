// pagedjit-cache: inspects, checks, clears and pre-warms the disk cache of
// compiled kernels (engine/src/jit/disk_store.hpp). Needs no GPU.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "attention/plan_cache.hpp"
#include "attention/planner.hpp"
#include "jit/disk_store.hpp"
#include "jit/kernel_cache.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "jit/source_set.hpp"
#include "json_depth.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/version.hpp"
#include "tuning/registry.hpp"

using namespace pagedjit;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// ------------------------------------------------------------------ usage

constexpr const char* kUsage = R"(usage: pagedjit-cache [--dir DIR] [--json] <command> [options]

Manages the disk cache of compiled pagedjit kernels. Needs no GPU.

commands:
  list          entries with sizes, last use and readable names
  stats         totals: entries, bytes, cap, stale entries, lock files
  clear         removes entries (all, or --stale ones)
  verify        reads every entry in full; reports and removes bad ones
  warm          compiles kernels for a list of problem shapes into the cache
  time-load     times loading one kernel from the cache in this (fresh) process
  time-compile  times compiling one kernel with NVRTC (the cache is not used)

common options:
  --dir DIR     the cache directory (default: $PAGEDJIT_CACHE_DIR, else
                $XDG_CACHE_HOME/pagedjit, else ~/.cache/pagedjit)
  --json        machine-readable output on stdout
  --help        help for a command: pagedjit-cache <command> --help
  --version     the pagedjit version

environment: PAGEDJIT_CACHE_DIR, PAGEDJIT_CACHE=off, PAGEDJIT_CACHE_MAX_BYTES,
PAGEDJIT_CACHE_LOCKS=off, PAGEDJIT_JIT=off (misses are errors; `warm` compiles anyway).
)";

const std::map<std::string, std::string> kCommandHelp = {
    {"list", R"(usage: pagedjit-cache list [--dir DIR] [--json] [--verify]

Lists the entries, most recently used first: file, size, last use, compile
time and the kernel's readable name. "stale" marks entries built from other
kernel sources or another NVRTC (this build never uses them; LRU eviction or
`clear --stale` removes them).
  --verify   read each entry in full and check its checksum (slower)
)"},
    {"stats", R"(usage: pagedjit-cache stats [--dir DIR] [--json]

Totals for the cache directory: entries and bytes (current and stale), the size
cap (PAGEDJIT_CACHE_MAX_BYTES, default 1 GiB), lock and temporary files, and the
NVRTC version and source hash this build's keys use.
)"},
    {"clear", R"(usage: pagedjit-cache clear [--dir DIR] [--json] [--stale]

Removes every entry, lock file and temporary file of the cache directory (the
directory itself stays).
  --stale    remove only entries built from other sources or another NVRTC
)"},
    {"verify", R"(usage: pagedjit-cache verify [--dir DIR] [--json] [--dry-run]

Reads every entry in full (header, key, metadata, checksum) and removes the bad
ones, which the engine would treat as misses anyway. Exit status 0 when every
entry was valid, 1 when bad ones were found.
  --dry-run  report bad entries without removing them
)"},
    {"warm", R"(usage: pagedjit-cache warm [--dir DIR] [--json] [--arch ARCH] [--gpu h100|h200|all]
                           [--shapes FILE] [--jobs N] [--no-cluster] [--no-profile]

Plans every problem shape as an Engine on the GPU would (its tuned profile
first, as EngineOptions::use_profiles) and compiles its decode kernel into the
cache, in parallel, skipping those already cached.
Other processes warming the same directory at the same time share the work
through lock files.
  --arch ARCH    NVRTC target (default: the preset's, sm_90a)
  --gpu NAME     planning preset and its profile: h100 (default), h200, or all
  --no-profile   plan with the built-in heuristic only (an engine made with
                 EngineOptions::use_profiles = false)
  --shapes FILE  JSON problem shapes (default: the matrix fp16/bf16/fp32 x
                 head_dim 64/128/256 x groups 1/4/8). Either a list of shapes,
                 {"shapes": [...]}, or bench/cases.json's {"dtype", "cases"}.
                 A shape: {"dtype": "bf16", "out_dtype": "bf16", "head_dim": 128,
                 "num_heads": 32, "num_kv_heads": 8 (or "q_heads"/"kv_heads", or
                 "group"), "page_size": 16, "num_seqs": 8 (or "batch"),
                 "max_context_len": 4096 (or "ctx"), "num_splits": 0,
                 "pages_per_compute_block": n, "kv_dtype": the dtype's}.
                 Numbers must be whole and fit an int (2^31-1).
  --jobs N       parallel compiles (default: all cores)
  --no-cluster   plan as an engine with EngineOptions::cluster_merge = false
                 (small split calls merge in global memory: another kernel)
Exit status 0 when every kernel is in the cache afterwards (1 also when the
size cap, PAGEDJIT_CACHE_MAX_BYTES, evicted some of them again).
)"},
    {"time-load", R"(usage: pagedjit-cache time-load [--dir DIR] [--json] [spec options] [--repeat N] [--fill] [--cold]

Times, in this fresh process, the first KernelCache::get of one kernel from the
disk cache (key, file read, checksum, metadata), then the median of N more
disk loads. Run it several times to see process-to-process spread.
  --fill         compile and store the kernel first when it is missing
  --cold         drop the entry's pages from the OS page cache first, so the
                 first get reads the disk (posix_fadvise DONTNEED)
  --repeat N     further loads to time (default 20)
spec options (default: bf16, head_dim 128, group 4, h100):
  --dtype T --head-dim D --group G --gpu h100|h200 --arch A
  --merge none|global|cluster   (default: what the plan of a 8-sequence, 4k-token
                                batch chooses)
)"},
    {"time-compile", R"(usage: pagedjit-cache time-compile [--json] [spec options] [--repeat N]

Compiles one kernel N times with NVRTC (default 3) and reports each time; the
first includes NVRTC's one-time start-up in this process, which is what a cold
miss pays. The cache is not read or written.
spec options (default: bf16, head_dim 128, group 4, h100):
  --dtype T --head-dim D --group G --gpu h100|h200 --arch A
  --merge none|global|cluster   (default: what the plan of a 8-sequence, 4k-token
                                batch chooses)
)"},
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ------------------------------------------------------------------ arguments

struct Args {
  std::string command;
  std::optional<std::string> dir;
  bool json = false, help = false;
  std::map<std::string, std::string> values;  // --name value
  std::set<std::string> flags;                // --name

  std::string get(const std::string& name, const std::string& def) const {
    auto it = values.find(name);
    return it == values.end() ? def : it->second;
  }
  int get_int(const std::string& name, int def) const {
    auto it = values.find(name);
    if (it == values.end()) return def;
    try {
      std::size_t used = 0;
      const int v = std::stoi(it->second, &used);
      if (used != it->second.size()) throw std::invalid_argument("");
      return v;
    } catch (const std::exception&) {
      throw UsageError(fmt::format("--{} expects an integer, got '{}'", name, it->second));
    }
  }
  bool flag(const std::string& name) const { return flags.count(name) != 0; }
};

const std::set<std::string> kValueOptions = {"dir",    "arch",  "gpu",      "shapes", "jobs",
                                             "repeat", "dtype", "head-dim", "group",  "merge"};
const std::set<std::string> kFlagOptions = {"json", "help", "verify",     "stale",     "dry-run",
                                            "fill", "cold", "no-cluster", "no-profile"};
const std::map<std::string, std::set<std::string>> kCommandOptions = {
    {"list", {"verify"}},
    {"stats", {}},
    {"clear", {"stale"}},
    {"verify", {"dry-run"}},
    {"warm", {"arch", "gpu", "shapes", "jobs", "no-cluster", "no-profile"}},
    {"time-load", {"dtype", "head-dim", "group", "gpu", "arch", "merge", "repeat", "fill", "cold"}},
    {"time-compile", {"dtype", "head-dim", "group", "gpu", "arch", "merge", "repeat"}},
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h") arg = "--help";
    if (arg.rfind("--", 0) == 0) {
      std::string name = arg.substr(2), value;
      const auto eq = name.find('=');
      const bool has_value = eq != std::string::npos;
      if (has_value) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      if (kValueOptions.count(name)) {
        if (!has_value) {
          if (i + 1 >= argc) throw UsageError(fmt::format("--{} needs a value", name));
          value = argv[++i];
        }
        if (name == "dir")
          a.dir = value;
        else
          a.values[name] = value;
      } else if (kFlagOptions.count(name) && !has_value) {
        if (name == "json")
          a.json = true;
        else if (name == "help")
          a.help = true;
        else
          a.flags.insert(name);
      } else {
        throw UsageError(fmt::format("unknown option '{}'", arg));
      }
    } else if (a.command.empty()) {
      a.command = arg;
    } else {
      throw UsageError(fmt::format("unexpected argument '{}'", arg));
    }
  }
  if (a.command == "help") {
    a.command.clear();
    a.help = true;
  }
  if (!a.command.empty()) {
    auto it = kCommandOptions.find(a.command);
    if (it == kCommandOptions.end()) throw UsageError(fmt::format("unknown command '{}'", a.command));
    for (const auto& [name, v] : a.values)
      if (!it->second.count(name)) throw UsageError(fmt::format("{} takes no --{}", a.command, name));
    for (const auto& name : a.flags)
      if (!it->second.count(name)) throw UsageError(fmt::format("{} takes no --{}", a.command, name));
  }
  return a;
}

// ------------------------------------------------------------------ helpers

std::string human_bytes(std::uint64_t b) {
  if (b < 1024) return fmt::format("{} B", b);
  if (b < (1ull << 20)) return fmt::format("{:.1f} KiB", double(b) / 1024);
  if (b < (1ull << 30)) return fmt::format("{:.1f} MiB", double(b) / (1 << 20));
  return fmt::format("{:.2f} GiB", double(b) / (1ull << 30));
}

std::string local_time(std::int64_t t) {
  if (t <= 0) return "-";
  const std::time_t tt = std::time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The key suffix this build writes: entries without it are stale.
std::string current_key_suffix() {
  return fmt::format("|sources={}|nvrtc={}", jit::SourceSet::current().hash, jit::nvrtc_version());
}
bool is_current(const std::string& key) {
  static const std::string suffix = current_key_suffix();
  static const std::string prefix = fmt::format("pagedjit-cache-v{}|pagedjit={}|", jit::kCacheFormatVersion, kVersion);
  return key.size() >= suffix.size() && key.rfind(prefix, 0) == 0 &&
         key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string cache_dir(const Args& a) {
  if (a.dir) {
    if (a.dir->empty()) throw UsageError("--dir needs a directory");
    return *a.dir;
  }
  const jit::CacheLocation loc = jit::cache_location_from_env();
  if (!loc.enabled) throw UsageError(fmt::format("the disk cache is disabled ({}); pass --dir DIR", loc.reason));
  return loc.dir;
}

jit::DiskStore open_store(const Args& a) {
  return jit::DiskStore(jit::DiskStoreOptions::from_env(cache_dir(a)));
}

json entry_json(const jit::EntryInfo& e) {
  json j = {{"file", e.file_name},
            {"bytes", e.file_bytes},
            {"last_used", e.last_used},
            {"status", jit::entry_status_name(e.status)}};
  if (e.status != jit::EntryStatus::ok) j["detail"] = e.detail;
  if (!e.key.empty()) {
    j["key"] = e.key;
    j["current"] = is_current(e.key);
  }
  if (!e.lowered_name.empty()) {
    j["readable"] = e.readable;
    j["lowered_name"] = e.lowered_name;
    j["is_ptx"] = e.is_ptx;
    j["compile_ms"] = e.compile_ms;
    j["created"] = e.created;
    j["payload_bytes"] = e.payload_bytes;
    j["nvrtc_log_bytes"] = e.log_bytes;
  }
  return j;
}

void print_json(const json& j) {
  fmt::print("{}\n", j.dump(2));
}

// ------------------------------------------------------------------ specs

DeviceInfo gpu_preset(const std::string& name) {
  if (name == "h100") return DeviceInfo::h100_sxm();
  if (name == "h200") return DeviceInfo::h200();
  throw UsageError(fmt::format("--gpu expects h100 or h200, got '{}'", name));
}

ProblemShape make_shape(DType dt, DType out, int head_dim, int heads, int kv_heads, int page_size, int num_seqs,
                        std::int64_t max_ctx) {
  ProblemShape s;
  s.num_seqs = num_seqs;
  s.num_heads = heads;
  s.num_kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.page_size = page_size;
  // Pages per sequence and in all, in 64 bits: a shapes file may ask for more than an int holds.
  const std::int64_t max_blocks = (max_ctx + page_size - 1) / page_size;
  const std::int64_t num_blocks = max_blocks * num_seqs;
  if (max_ctx < 0 || max_blocks > std::numeric_limits<int>::max() || num_blocks > std::numeric_limits<int>::max())
    throw UsageError(fmt::format("{} sequences of {} tokens in pages of {} need {} pages, more than 2^31-1", num_seqs,
                                 max_ctx, page_size, num_blocks));
  s.max_blocks = int(max_blocks);
  s.num_blocks = int(num_blocks);
  s.dtype = dt;
  s.kv_dtype = dt;  // the query's, unless a shape says otherwise
  s.out_dtype = out;
  s.max_context_len = max_ctx;
  return s;
}

struct ShapeItem {
  std::string name;
  ProblemShape shape;
  PagedAttentionOptions options;
};

std::vector<ShapeItem> default_matrix() {
  std::vector<ShapeItem> out;
  for (DType dt : {DType::f16, DType::bf16, DType::f32})
    for (int d : {64, 128, 256})
      for (int g : {1, 4, 8})
        out.push_back(
            {fmt::format("{} d{} g{}", dtype_name(dt), d, g), make_shape(dt, dt, d, 8 * g, 8, 16, 8, 4096), {}});
  return out;
}

// A whole number of a shapes file, in [lo, hi]: a JSON integer, or a float
// with an integral value (128.0, 1e3). Anything else (128.7, 1e30, "64",
// true, null) is refused, naming the field, rather than converted: a float
// outside the integer's range does not convert at all (undefined behavior).
std::int64_t json_integer(const json& v, const std::string& name, std::int64_t lo, std::int64_t hi) {
  auto out_of_range = [&] {
    return UsageError(fmt::format("{} = {} is out of range (expected an integer in [{}, {}])", name, v.dump(), lo, hi));
  };
  std::int64_t x = 0;
  if (v.is_number_unsigned()) {
    const std::uint64_t u = v.get<std::uint64_t>();
    if (u > std::uint64_t(std::numeric_limits<std::int64_t>::max())) throw out_of_range();
    x = std::int64_t(u);
  } else if (v.is_number_integer()) {
    x = v.get<std::int64_t>();
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d))
      throw UsageError(fmt::format("{} = {} is not an integer", name, v.dump()));
    // lo and hi are far inside the range where doubles hold integers exactly.
    if (!(d >= double(lo) && d <= double(hi))) throw out_of_range();
    x = std::int64_t(d);
  } else {
    throw UsageError(fmt::format("{} must be an integer, got {} ({})", name, v.dump(), v.type_name()));
  }
  if (x < lo || x > hi) throw out_of_range();
  return x;
}

// Larger shapes files are refused before reading: far more shapes than a
// warm run could compile.
constexpr std::size_t kMaxShapesFileBytes = std::size_t(16) << 20;

std::vector<ShapeItem> shapes_from_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UsageError(fmt::format("cannot open {}", path));
  std::string text(kMaxShapesFileBytes + 1, '\0');
  f.read(text.data(), std::streamsize(text.size()));
  text.resize(std::size_t(f.gcount()));
  if (text.size() > kMaxShapesFileBytes)
    throw UsageError(fmt::format("{}: larger than {} bytes", path, kMaxShapesFileBytes));
  if (json_too_deep(text))
    throw UsageError(fmt::format("{}: JSON nested more than {} levels deep", path, kMaxJsonDepth));
  json doc;
  try {
    doc = json::parse(text);
  } catch (const std::exception& e) {
    throw UsageError(fmt::format("{}: not JSON: {}", path, e.what()));
  }
  std::string file_dtype = "bf16";
  json list;
  if (doc.is_array()) {
    list = doc;
  } else if (doc.is_object() && doc.contains("shapes")) {
    list = doc["shapes"];
    file_dtype = doc.value("dtype", file_dtype);
  } else if (doc.is_object() && doc.contains("cases")) {
    list = doc["cases"];
    file_dtype = doc.value("dtype", file_dtype);
  } else {
    throw UsageError(fmt::format("{}: expected a list of shapes, {{\"shapes\": [...]}} or {{\"cases\": [...]}}", path));
  }
  std::vector<ShapeItem> out;
  int index = 0;
  for (const json& c : list) {
    const std::string where = fmt::format("{}: shape {}", path, index++);
    try {
      // Every number becomes an int of the shape: [lo, 2^31-1].
      constexpr std::int64_t kIntMax = std::numeric_limits<int>::max();
      auto num = [&](std::initializer_list<const char*> names, std::int64_t def, std::int64_t lo) -> int {
        for (const char* n : names)
          if (c.contains(n)) return int(json_integer(c.at(n), n, lo, kIntMax));
        return int(def);
      };
      if (!c.is_object()) throw UsageError(fmt::format("expected an object, got {}", c.dump()));
      const DType dt = parse_dtype(c.value("dtype", file_dtype));
      const DType out_dt = parse_dtype(c.value("out_dtype", dtype_name(dt)));
      if (!c.contains("head_dim")) throw UsageError("head_dim is required");
      const int head_dim = num({"head_dim"}, 0, 1);
      int kv = num({"num_kv_heads", "kv_heads"}, 0, 0);
      int heads = num({"num_heads", "q_heads"}, 0, 0);
      const int group = num({"group"}, 1, 1);
      if (kv == 0) kv = heads ? heads / group : 8;
      if (heads == 0) {
        if (std::int64_t(kv) * group > kIntMax)
          throw UsageError(fmt::format("num_kv_heads {} x group {} is more than 2^31-1 heads", kv, group));
        heads = kv * group;
      }
      std::int64_t ctx = 4096;
      if (c.contains("max_context_len")) {
        ctx = num({"max_context_len"}, 0, 0);
      } else if (c.contains("ctx")) {
        const json& x = c["ctx"];
        if (x.is_number())
          ctx = num({"ctx"}, 0, 0);
        else if (x.is_object() && x.contains("lengths") && x["lengths"].is_array())
          for (const json& l : x["lengths"]) ctx = std::max(ctx, json_integer(l, "ctx.lengths[]", 0, kIntMax));
      }
      ShapeItem item;
      item.name = c.value("name", fmt::format("shape {}", index - 1));
      item.shape =
          make_shape(dt, out_dt, head_dim, heads, kv, num({"page_size"}, 16, 1), num({"num_seqs", "batch"}, 8, 1), ctx);
      if (c.contains("kv_dtype")) item.shape.kv_dtype = parse_dtype(c.at("kv_dtype").get<std::string>());
      item.options.num_splits = num({"num_splits"}, 0, 0);
      if (c.contains("pages_per_compute_block")) {
        const int ppcb = num({"pages_per_compute_block"}, 0, 1);
        if (std::int64_t(ppcb) * item.shape.page_size > 4096)  // as validate_call: at most 4096 tokens
          throw UsageError(fmt::format("pages_per_compute_block {} x page_size {} is more than 4096 tokens", ppcb,
                                       item.shape.page_size));
        item.options.pages_per_compute_block = ppcb;
      }
      if (kv <= 0 || heads % kv != 0) throw UsageError("num_heads must be a multiple of num_kv_heads");
      out.push_back(std::move(item));
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("{}: {}", where, e.what()));
    } catch (const std::exception& e) {
      throw UsageError(fmt::format("{}: {}", where, e.what()));
    }
  }
  return out;
}

// `spec` built for another target: below sm_90 there are no clusters, and a
// cluster-merged plan merges in global memory there (as make_plan does).
jit::KernelSpec retarget(jit::KernelSpec spec, const std::string& arch) {
  spec.arch = arch;
  if (spec.merge == jit::Merge::cluster && !jit::arch_has_clusters(arch)) spec.merge = jit::Merge::global;
  return spec;
}

// The one kernel of the timing commands.
jit::KernelSpec spec_from_args(const Args& a) {
  const DType dt = parse_dtype(a.get("dtype", "bf16"));
  const int d = a.get_int("head-dim", 128), g = a.get_int("group", 4);
  if (d < 1) throw UsageError(fmt::format("--head-dim must be positive, got {}", d));
  if (g < 1 || g > (1 << 24)) throw UsageError(fmt::format("--group must be in [1, 2^24], got {}", g));
  const ProblemShape s = make_shape(dt, dt, d, 8 * g, 8, 16, 8, 4096);
  const attention::Plan plan = attention::make_plan(s, {}, gpu_preset(a.get("gpu", "h100")));
  jit::KernelSpec spec = plan.decode;
  if (a.values.count("arch")) spec = retarget(spec, jit::clamp_arch(a.get("arch", "")));
  if (a.values.count("merge")) {
    const std::string m = a.get("merge", "");
    if (m == "none")
      spec.merge = jit::Merge::none;
    else if (m == "global")
      spec.merge = jit::Merge::global;
    else if (m == "cluster")
      spec.merge = jit::Merge::cluster;
    else
      throw UsageError(fmt::format("--merge must be none, global or cluster, got '{}'", m));
    spec.check();
  }
  return spec;
}

// ------------------------------------------------------------------ commands

int cmd_list(const Args& a) {
  const jit::DiskStore store = open_store(a);
  const auto contents = store.scan(true, a.flag("verify"));
  if (a.json) {
    json entries = json::array();
    for (const auto& e : contents.entries) entries.push_back(entry_json(e));
    print_json({{"dir", store.dir()}, {"entries", entries}});
    return 0;
  }
  std::uint64_t total = 0;
  for (const auto& e : contents.entries) total += e.file_bytes;
  fmt::print("{}: {} entries, {}\n", store.dir(), contents.entries.size(), human_bytes(total));
  if (contents.entries.empty()) return 0;
  fmt::print("{:<20} {:<19} {:>10} {:>9}  {}\n", "FILE", "LAST USED", "SIZE", "COMPILE", "KERNEL");
  for (const auto& e : contents.entries) {
    std::string name = e.status == jit::EntryStatus::ok
                           ? e.readable + (is_current(e.key) ? "" : "  [stale]")
                           : fmt::format("<{}: {}>", jit::entry_status_name(e.status), e.detail);
    fmt::print("{:<20} {:<19} {:>10} {:>9}  {}\n", e.file_name, local_time(e.last_used), human_bytes(e.file_bytes),
               e.status == jit::EntryStatus::ok ? fmt::format("{:.0f} ms", e.compile_ms) : "-", name);
  }
  return 0;
}

int cmd_stats(const Args& a) {
  const jit::DiskStore store = open_store(a);
  const auto contents = store.scan(true, false);
  std::uint64_t bytes = 0, current_bytes = 0, bad = 0;
  std::size_t current = 0, stale = 0;
  std::int64_t oldest = 0, newest = 0;
  for (const auto& e : contents.entries) {
    bytes += e.file_bytes;
    if (e.status != jit::EntryStatus::ok) {
      ++bad;
    } else if (is_current(e.key)) {
      ++current;
      current_bytes += e.file_bytes;
    } else {
      ++stale;
    }
    if (e.last_used && (!oldest || e.last_used < oldest)) oldest = e.last_used;
    newest = std::max(newest, e.last_used);
  }
  const std::uint64_t cap = store.options().max_bytes;
  const json j = {
      {"dir", store.dir()},
      {"exists", ::access(store.dir().c_str(), F_OK) == 0},
      {"entries", contents.entries.size()},
      {"bytes", bytes},
      {"max_bytes", cap},
      {"current_entries", current},
      {"current_bytes", current_bytes},
      {"stale_entries", stale},
      {"bad_entries", bad},
      {"lock_files", contents.locks.size()},
      {"temp_files", contents.temps.size()},
      {"oldest_use", oldest},
      {"newest_use", newest},
      {"format_version", jit::kDiskFormatVersion},
      {"nvrtc_version", jit::nvrtc_version()},
      {"sources_hash", jit::SourceSet::current().hash},
  };
  if (a.json) {
    print_json(j);
    return 0;
  }
  fmt::print("directory      {}{}\n", store.dir(), j["exists"].get<bool>() ? "" : " (does not exist yet)");
  fmt::print("entries        {} ({})\n", contents.entries.size(), human_bytes(bytes));
  fmt::print("  current      {} ({})\n", current, human_bytes(current_bytes));
  fmt::print("  stale        {} (other sources or NVRTC)\n", stale);
  fmt::print("  bad          {} (header or metadata unreadable; `verify` checks payloads too)\n", bad);
  fmt::print("size cap       {}\n",
             cap ? fmt::format("{} ({:.1f}% used)", human_bytes(cap), 100.0 * double(bytes) / double(cap))
                 : std::string("none"));
  fmt::print("lock files     {}\ntemp files     {}\n", contents.locks.size(), contents.temps.size());
  fmt::print("last used      {} .. {}\n", local_time(oldest), local_time(newest));
  fmt::print("this build     format v{}, NVRTC {}, sources {}\n", jit::kDiskFormatVersion, jit::nvrtc_version(),
             jit::SourceSet::current().hash);
  return 0;
}

int cmd_clear(const Args& a) {
  const jit::DiskStore store = open_store(a);
  const bool stale_only = a.flag("stale");
  const auto contents = store.scan(stale_only, false);
  std::size_t removed = 0, failed = 0;
  std::uint64_t bytes = 0;
  auto remove = [&](const std::string& path, std::uint64_t size) {
    if (jit::remove_path(path)) {
      ++removed;
      bytes += size;
      return true;
    }
    ++failed;
    if (!a.json) fmt::print(stderr, "pagedjit-cache: cannot remove {}: {}\n", path, std::strerror(errno));
    return false;
  };
  std::size_t entries = 0;
  for (const auto& e : contents.entries)
    if (!stale_only || (e.status == jit::EntryStatus::ok && !is_current(e.key)))
      entries += remove(e.path, e.file_bytes);
  if (!stale_only) {
    for (const auto& p : contents.locks) remove(p, 0);
    for (const auto& p : contents.temps) remove(p, 0);
  }
  if (a.json)
    print_json({{"dir", store.dir()},
                {"entries_removed", entries},
                {"files_removed", removed},
                {"bytes_removed", bytes},
                {"failed", failed}});
  else
    fmt::print("{}: removed {} {}entries ({}), {} files in all{}\n", store.dir(), entries, stale_only ? "stale " : "",
               human_bytes(bytes), removed, failed ? fmt::format(", {} could not be removed", failed) : "");
  return failed ? 1 : 0;
}

int cmd_verify(const Args& a) {
  const jit::DiskStore store = open_store(a);
  const bool dry = a.flag("dry-run");
  const auto contents = store.scan(true, true);
  json bad = json::array();
  std::size_t valid = 0, removed = 0;
  for (const auto& e : contents.entries) {
    if (e.status == jit::EntryStatus::ok) {
      ++valid;
      continue;
    }
    bool gone = false;
    if (!dry) gone = jit::remove_path(e.path);
    removed += gone;
    json j = entry_json(e);
    j["removed"] = gone;
    bad.push_back(j);
    if (!a.json)
      fmt::print("bad: {} ({}: {}){}\n", e.file_name, jit::entry_status_name(e.status), e.detail,
                 gone ? ", removed" : "");
  }
  if (a.json)
    print_json({{"dir", store.dir()},
                {"entries", contents.entries.size()},
                {"valid", valid},
                {"bad", bad},
                {"removed", removed},
                {"lock_files", contents.locks.size()},
                {"temp_files", contents.temps.size()}});
  else
    fmt::print("{}: {} entries, {} valid, {} bad{}\n", store.dir(), contents.entries.size(), valid, bad.size(),
               bad.empty() ? "" : fmt::format(", {} removed", removed));
  return bad.empty() ? 0 : 1;
}

// ---- warm: plan, compile in parallel, check what is left, report ----

// The GPU presets to warm for: one, or every one (the shipped profiles' GPUs).
std::vector<DeviceInfo> warm_gpus(const std::string& name) {
  if (name == "all") return {DeviceInfo::h100_sxm(), DeviceInfo::h200()};
  return {gpu_preset(name)};
}

struct WarmPlan {
  std::vector<DeviceInfo> gpus;
  std::optional<std::string> arch;  // --arch, clamped
  std::size_t shapes = 0;
  std::vector<jit::KernelSpec> specs;  // distinct kernels, in first-seen order
  json plan_errors = json::array();
};

// The decode kernels an Engine would launch for the shapes: planned with the
// GPU's tuned profiles (as EngineOptions::use_profiles, unless --no-profile)
// and its cluster merge (unless --no-cluster).
WarmPlan plan_warm(const Args& a) {
  WarmPlan w;
  w.gpus = warm_gpus(a.get("gpu", "h100"));
  if (a.values.count("arch")) w.arch = jit::clamp_arch(a.get("arch", ""));
  const std::vector<ShapeItem> shapes =
      a.values.count("shapes") ? shapes_from_file(a.get("shapes", "")) : default_matrix();
  w.shapes = shapes.size();
  std::set<jit::KernelSpec> seen;
  for (const DeviceInfo& gpu : w.gpus) {
    const attention::PlanCache planner(
        gpu, a.flag("no-profile") ? tuning::DeviceProfiles() : tuning::ProfileRegistry::global().for_device(gpu, false),
        !a.flag("no-cluster"));
    for (const ShapeItem& item : shapes) {
      try {
        jit::KernelSpec spec = planner.make(item.shape, item.options).decode;
        if (w.arch) spec = retarget(spec, *w.arch);
        if (seen.insert(spec).second) w.specs.push_back(spec);
      } catch (const Error& e) {
        w.plan_errors.push_back({{"shape", item.name}, {"gpu", gpu.name}, {"error", e.what()}});
        if (!a.json) fmt::print(stderr, "pagedjit-cache: {} on {}: not planned: {}\n", item.name, gpu.name, e.what());
      }
    }
  }
  return w;
}

struct WarmResult {
  std::string status = "pending";  // cached, compiled, failed
  double ms = 0;
  std::uint64_t bytes = 0;
  std::string error;
  bool in_cache = false;  // a valid entry once every kernel was done
};

// Loads or compiles one kernel into `store`; other processes warming the
// same directory wait on its lock instead of compiling it too.
WarmResult warm_one(jit::DiskStore& store, const jit::KernelSpec& spec, const std::string& key) {
  WarmResult r;
  const auto t0 = Clock::now();
  try {
    auto hit = store.load(key);
    std::shared_ptr<void> claim;
    if (!hit && (claim = store.claim(key))) hit = store.load(key);
    if (hit) {
      r.status = "cached";
      r.bytes = hit->binary.size();
    } else {
      const jit::CompiledKernel k = jit::compile_kernel(spec, jit::SourceSet::current());
      store.store(k);
      r.status = "compiled";
      r.bytes = k.binary.size();
    }
  } catch (const std::exception& e) {
    r.status = "failed";
    r.error = e.what();
  }
  r.ms = ms_since(t0);
  return r;
}

std::vector<WarmResult> warm_all(const Args& a, jit::DiskStore& store, const std::vector<jit::KernelSpec>& specs,
                                 const std::vector<std::string>& keys, int jobs) {
  std::vector<WarmResult> results(specs.size());
  std::atomic<std::size_t> next{0};
  // Each process starts at its own place in the list, so processes warming
  // the same directory together compile different kernels first.
  const std::size_t offset = specs.empty() ? 0 : std::size_t(::getpid()) % specs.size();
  std::mutex print_mu;
  auto worker = [&] {
    for (std::size_t n; (n = next++) < specs.size();) {
      const std::size_t i = (n + offset) % specs.size();
      const WarmResult& r = results[i] = warm_one(store, specs[i], keys[i]);
      if (a.json) continue;
      std::lock_guard<std::mutex> lock(print_mu);
      fmt::print("{:<9} {:>8.0f} ms  {}\n", r.status, r.ms, specs[i].readable());
      if (!r.error.empty()) fmt::print("          {}\n", r.error);
      std::fflush(stdout);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < std::min<int>(jobs, int(std::max<std::size_t>(1, specs.size()))); ++t)
    threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  // The size cap may have evicted kernels of this very run: a deployment
  // with PAGEDJIT_JIT=off would miss them, so they count as not warmed.
  for (std::size_t i = 0; i < specs.size(); ++i)
    results[i].in_cache =
        results[i].status != "failed" &&
        jit::DiskStore::read_entry(store.entry_path(keys[i]), &keys[i], nullptr, false, store.options().user).status ==
            jit::EntryStatus::ok;
  return results;
}

struct WarmTotals {
  std::size_t compiled = 0, cached = 0, failed = 0, missing = 0;
  std::uint64_t bytes = 0;
  double compile_ms = 0;
};

WarmTotals warm_totals(const std::vector<WarmResult>& results) {
  WarmTotals t;
  for (const WarmResult& r : results) {
    t.compiled += r.status == "compiled";
    t.cached += r.status == "cached";
    t.failed += r.status == "failed";
    t.missing += r.status != "failed" && !r.in_cache;
    t.bytes += r.bytes;
    if (r.status == "compiled") t.compile_ms += r.ms;
  }
  return t;
}

// Why kernels that were compiled or found are not in the cache afterwards.
std::string missing_reason(const jit::DiskStore& store, const WarmTotals& t) {
  if (!store.writable()) return "writing to the directory FAILED (see the warning above)";
  return fmt::format(
      "the size cap (PAGEDJIT_CACHE_MAX_BYTES = {} bytes) is below the warmed kernels' {} bytes: it evicted "
      "some of them again; raise it, or a process with PAGEDJIT_JIT=off will miss them",
      store.options().max_bytes, t.bytes);
}

// One warm run, for its report.
struct WarmRun {
  WarmPlan plan;
  std::vector<std::string> keys;  // of plan.specs
  std::vector<WarmResult> results;
  int jobs = 1;
  double wall_s = 0, total_s = 0;
};

json warm_json(const jit::DiskStore& store, const Args& a, const WarmRun& run, const WarmTotals& t) {
  const WarmPlan& w = run.plan;
  json kernels = json::array();
  for (std::size_t i = 0; i < w.specs.size(); ++i) {
    const WarmResult& r = run.results[i];
    json k = {{"kernel", w.specs[i].readable()},
              {"name", w.specs[i].name_expression()},
              {"file", jit::entry_file_name(run.keys[i])},
              {"status", r.status},
              {"ms", r.ms},
              {"bytes", r.bytes},
              {"in_cache", r.in_cache}};
    if (!r.error.empty()) k["error"] = r.error;
    kernels.push_back(k);
  }
  std::vector<std::string> gpus;
  for (const DeviceInfo& gpu : w.gpus) gpus.push_back(gpu.name);
  json j = {{"dir", store.dir()},
            {"arch", w.arch ? *w.arch : jit::clamp_arch(w.gpus.front().arch())},
            {"gpu", fmt::format("{}", fmt::join(gpus, ", "))},
            {"profiles", !a.flag("no-profile")},
            {"jobs", run.jobs},
            {"shapes", w.shapes},
            {"kernels", w.specs.size()},
            {"compiled", t.compiled},
            {"cached", t.cached},
            {"failed", t.failed},
            {"missing", t.missing},
            {"plan_errors", w.plan_errors},
            {"writable", store.writable()},
            {"wall_s", run.wall_s},
            {"total_s", run.total_s},
            {"compile_ms_sum", t.compile_ms},
            {"compiled_per_s", run.wall_s > 0 ? double(t.compiled) / run.wall_s : 0},
            {"results", kernels}};
  if (t.missing) j["missing_reason"] = missing_reason(store, t);
  return j;
}

int cmd_warm(const Args& a) {
  const auto t_start = Clock::now();
  jit::DiskStore store = open_store(a);
  store.require_usable();  // (the other commands' scan() checks)
  WarmRun run;
  run.plan = plan_warm(a);
  run.jobs = std::max(1, a.get_int("jobs", int(std::max(1u, std::thread::hardware_concurrency()))));
  const std::string source_hash = jit::SourceSet::current().hash, nvrtc = jit::nvrtc_version();
  for (const jit::KernelSpec& spec : run.plan.specs) run.keys.push_back(spec.key(source_hash, nvrtc));
  const auto t0 = Clock::now();
  run.results = warm_all(a, store, run.plan.specs, run.keys, run.jobs);
  run.wall_s = ms_since(t0) / 1000;
  run.total_s = ms_since(t_start) / 1000;
  const WarmTotals t = warm_totals(run.results);
  const json j = warm_json(store, a, run, t);
  if (a.json) {
    print_json(j);
  } else {
    fmt::print(
        "{}: {} shapes on {} -> {} kernels: {} compiled, {} already cached, {} failed in {:.2f} s with {} jobs "
        "({:.2f} kernels/s compiled; {:.0f} ms of compiles){}\n",
        store.dir(), j["shapes"].get<std::size_t>(), j["gpu"].get<std::string>(), run.plan.specs.size(), t.compiled,
        t.cached, t.failed, run.wall_s, run.jobs, j["compiled_per_s"].get<double>(), t.compile_ms,
        t.missing          ? fmt::format("; {} of them NOT in the cache now: {}", t.missing, missing_reason(store, t))
        : store.writable() ? std::string()
                           : std::string("; writing to the directory FAILED (see the warning above)"));
  }
  return t.failed || t.missing || !store.writable() || !run.plan.plan_errors.empty() ? 1 : 0;
}

int cmd_time_load(const Args& a) {
  const auto t_process = Clock::now();
  const jit::KernelSpec spec = spec_from_args(a);
  const int repeat = std::max(0, a.get_int("repeat", 20));
  auto store = std::make_shared<jit::DiskStore>(jit::DiskStoreOptions::from_env(cache_dir(a)));
  const std::string key = spec.key(jit::SourceSet::current().hash, jit::nvrtc_version());
  const std::string path = store->entry_path(key);
  bool filled = false;
  if (::access(path.c_str(), F_OK) != 0) {
    if (!a.flag("fill"))
      throw UsageError(
          fmt::format("{} is not in the cache ({}); pass --fill or run warm first", spec.readable(), path));
    store->store(jit::compile_kernel(spec, jit::SourceSet::current()));
    filled = true;
  }
  if (a.flag("cold")) {  // evict this file's pages, so the first read goes to the disk
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::fdatasync(fd);
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      ::close(fd);
    }
  }
  const double setup_ms = ms_since(t_process);

  // What a fresh engine pays: KernelCache::get from a cold memory cache
  // (key text, file read, checksum, metadata parse, mtime touch).
  jit::KernelCache cache;
  cache.set_store(store);
  const auto t0 = Clock::now();
  const auto k = cache.get(spec);
  const double first_ms = ms_since(t0);
  const bool from_disk = cache.stats().store_hits == 1;

  std::vector<double> loads;
  for (int i = 0; i < repeat; ++i) {
    const auto t1 = Clock::now();
    auto hit = store->load(key);
    loads.push_back(ms_since(t1));
    if (!hit) throw Error(ErrorCode::cache_error, "the entry disappeared while timing");
  }
  std::sort(loads.begin(), loads.end());
  const double median = loads.empty() ? 0 : loads[loads.size() / 2];
  const double best = loads.empty() ? 0 : loads.front();
  if (a.json) {
    print_json({{"kernel", spec.readable()},
                {"file", path},
                {"bytes", k->binary.size()},
                {"filled", filled},
                {"from_disk", from_disk},
                {"first_get_ms", first_ms},
                {"load_median_ms", median},
                {"load_min_ms", best},
                {"repeat", repeat},
                {"setup_ms", setup_ms}});
  } else {
    fmt::print("{} ({}, {}){}\n", spec.readable(), human_bytes(k->binary.size()), path, filled ? ", just filled" : "");
    fmt::print("first KernelCache::get in this process: {:.3f} ms ({})\n", first_ms,
               from_disk ? "from the disk cache" : "NOT from the disk cache");
    fmt::print("DiskStore::load, {} more: median {:.3f} ms, min {:.3f} ms\n", repeat, median, best);
  }
  return from_disk ? 0 : 1;
}

int cmd_time_compile(const Args& a) {
  const jit::KernelSpec spec = spec_from_args(a);
  const int repeat = std::max(1, a.get_int("repeat", 3));
  std::vector<double> ms;
  std::size_t bytes = 0;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = Clock::now();
    const jit::CompiledKernel k = jit::compile_kernel(spec, jit::SourceSet::current());
    ms.push_back(ms_since(t0));
    bytes = k.binary.size();
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  if (a.json) {
    print_json({{"kernel", spec.readable()},
                {"name", spec.name_expression()},
                {"bytes", bytes},
                {"first_ms", ms.front()},
                {"ms", ms},
                {"median_ms", sorted[sorted.size() / 2]},
                {"min_ms", sorted.front()}});
  } else {
    std::vector<std::string> each;
    for (double m : ms) each.push_back(fmt::format("{:.0f} ms", m));
    fmt::print("{} ({}): {}\n", spec.readable(), human_bytes(bytes), fmt::join(each, ", "));
    fmt::print("first (cold process) {:.0f} ms, median {:.0f} ms, min {:.0f} ms\n", ms.front(),
               sorted[sorted.size() / 2], sorted.front());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--version") {
    fmt::print("pagedjit-cache {}\n", kVersion);
    return 0;
  }
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    fmt::print(stderr, "pagedjit-cache: {}\n\n{}", e.what(), kUsage);
    return 2;
  }
  if (args.command.empty()) {
    fmt::print(args.help ? stdout : stderr, "{}", kUsage);
    return args.help ? 0 : 2;
  }
  if (args.help) {
    fmt::print("{}", kCommandHelp.at(args.command));
    return 0;
  }
  try {
    if (args.command == "list") return cmd_list(args);
    if (args.command == "stats") return cmd_stats(args);
    if (args.command == "clear") return cmd_clear(args);
    if (args.command == "verify") return cmd_verify(args);
    if (args.command == "warm") return cmd_warm(args);
    if (args.command == "time-load") return cmd_time_load(args);
    if (args.command == "time-compile") return cmd_time_compile(args);
  } catch (const UsageError& e) {
    fmt::print(stderr, "pagedjit-cache {}: {}\n", args.command, e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "pagedjit-cache {}: {}\n", args.command, e.what());
    return 1;
  }
  return 2;
}
