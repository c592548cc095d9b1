// Tuned profiles: the profile schema and its errors, bucket
// matching, the lookup order and its fallbacks, device limits, the shipped
// profiles, and the pagedjit-tune tool's --check and --dry-run. CPU only.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../tools/tune/results.hpp"
#include "../tools/tune/search.hpp"
#include "attention/planner.hpp"
#include "gpu.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "run_command.hpp"
#include "temp_files.hpp"
#include "tuning/profile.hpp"
#include "tuning/registry.hpp"

using namespace pagedjit;
using namespace pagedjit::tuning;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const DeviceInfo h100 = DeviceInfo::h100_sxm();
const DeviceInfo h200 = DeviceInfo::h200();

using pjtest::read_file;
using pjtest::write_file;

const std::string kExamplePath = std::string(PAGEDJIT_TEST_DATA) + "/profile-example.json";

const std::string& example_text() {
  static const std::string t = read_file(kExamplePath);
  return t;
}

json example_json() {
  return json::parse(example_text());
}

// A fresh directory under the system temp directory, removed afterwards.
struct TempDir : pjtest::TempDir {
  TempDir() : pjtest::TempDir("pagedjit-profiles") {}
};

// The error message of parsing `text`, "" when it parses. Anything but
// InvalidArgument escaping fails the test.
std::string parse_error(const std::string& text, const std::string& origin = "bad.json") {
  try {
    parse_profile(text, origin);
    return "";
  } catch (const InvalidArgument& e) {
    return e.what();
  }
}

// A problem shape (what validate_call gives) for matching tests.
ProblemShape shape(int seqs, int heads, int kv_heads, std::int64_t ctx, int head_dim = 128, DType dt = DType::bf16,
                   int page = 16, CacheLayout layout = CacheLayout::blocks_heads) {
  ProblemShape s;
  s.num_seqs = seqs;
  s.num_heads = heads;
  s.num_kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.page_size = page;
  s.max_blocks = int((ctx + page - 1) / page);
  s.num_blocks = seqs * s.max_blocks;
  s.dtype = s.kv_dtype = s.out_dtype = dt;
  s.layout = layout;
  s.max_context_len = ctx;
  return s;
}

Entry entry(int group, Range batch, Range context, KernelConfig c, int head_dim = 128) {
  Entry e;
  e.bucket.dtype = e.bucket.kv_dtype = DType::bf16;
  e.bucket.head_dim = head_dim;
  e.bucket.page_size = 16;
  e.bucket.layout = CacheLayout::blocks_heads;
  e.bucket.group = {group, group};
  e.bucket.batch = batch;
  e.bucket.context = context;
  e.config = c;
  e.time_ms = 0.1;
  e.frac_read = 0.9;
  return e;
}

Profile profile(const std::string& origin, const std::string& name, const std::string& arch, bool user,
                std::vector<Entry> entries) {
  Profile p;
  p.device = {name, arch, 132, 85520809984LL};
  p.toolkit = p.driver = "13.0";
  p.engine_version = "0.1.0";
  p.read_GBps = 3000;
  p.entries = std::move(entries);
  p.origin = origin;
  p.user = user;
  return p;
}

#ifdef PAGEDJIT_TUNE_TOOL
using pjtest::RunResult;
// Runs pagedjit-tune through the shell, stdout and stderr together.
RunResult run_tool(const std::string& args) {
  return pjtest::run_command(fmt::format("'{}' {} 2>&1", PAGEDJIT_TUNE_TOOL, args));
}
#endif

// Captures what the calling code writes to stderr.
class StderrCapture {
 public:
  explicit StderrCapture(const std::string& path) : path_(path) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    ::dup2(fd, 2);
    ::close(fd);
  }
  std::string finish() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
    return read_file(path_);
  }
  ~StderrCapture() {
    if (saved_ >= 0) finish();
  }

 private:
  std::string path_;
  int saved_ = -1;
};

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("profiles: the example file parses and serializes back to an equal profile") {
    const Profile p = parse_profile(example_text(), "example.json");
    CHECK(p.schema_version == 1);
    CHECK(p.device.name == "NVIDIA H100 80GB HBM3");
    CHECK(p.device.arch == "sm_90a");
    CHECK(p.device.sm_count == 132);
    CHECK(p.device.memory_bytes == 85520809984LL);
    CHECK(p.toolkit == "13.0");
    CHECK(p.driver == "13.0");
    CHECK(p.engine_version == "0.1.0");
    CHECK(p.read_GBps == doctest::Approx(3130.5));
    REQUIRE(p.entries.size() == 5);
    const Entry& e0 = p.entries[0];
    CHECK(e0.bucket.dtype == DType::bf16);
    CHECK(e0.bucket.group == Range{4, 4});
    CHECK(e0.bucket.batch == Range{49, 96});
    CHECK(e0.bucket.context == Range{3073, 6144});
    CHECK(same_config(e0.config, KernelConfig{64, 4, 4, 0, 0}));
    CHECK(e0.time_ms == doctest::Approx(0.375));
    CHECK(e0.heuristic_ms == doctest::Approx(0.381));
    CHECK(e0.chosen == "tuned");
    // Optional fields: q_len defaults to [1, 1], chunk_tokens and v_dims to 0.
    CHECK(p.entries[2].bucket.q_len == Range{1, 1});
    CHECK(same_config(p.entries[2].config, KernelConfig{128, 8, 2, 0, 0}));
    CHECK(p.entries[3].config.v_dims == 128);
    CHECK(p.entries[4].bucket.layout == CacheLayout::blocks_tokens);

    const std::string text = serialize_profile(p);
    const Profile q = parse_profile(text, "again.json");
    CHECK(serialize_profile(q) == text);
    REQUIRE(q.entries.size() == p.entries.size());
    for (std::size_t i = 0; i < p.entries.size(); ++i) {
      CHECK(q.entries[i].bucket == p.entries[i].bucket);
      CHECK(same_config(q.entries[i].config, p.entries[i].config));
      CHECK(q.entries[i].time_ms == p.entries[i].time_ms);
      CHECK(q.entries[i].frac_read == p.entries[i].frac_read);
      CHECK(q.entries[i].problem == p.entries[i].problem);
    }
    // One entry per line, for readable diffs.
    CHECK(count(text, "\n  {\"bucket\"") == 5);
    // Loading from a file names the file in errors, and reads the same.
    CHECK(load_profile_file(kExamplePath).entries.size() == 5);
    CHECK_THROWS_WITH_AS(load_profile_file("/nonexistent/profile.json"), doctest::Contains("/nonexistent/profile.json"),
                         InvalidArgument);
  }

  TEST_CASE("profiles: malformed files are refused with the file name and the JSON pointer") {
    struct Bad {
      const char* what;
      std::function<void(json&)> mutate;
      const char* pointer;  // expected in the message
      const char* detail;   // expected in the message
    };
    const std::vector<Bad> cases = {
        {"unknown schema version", [](json& j) { j["schema_version"] = 2; }, "#/schema_version", "got 2"},
        {"schema version as a string", [](json& j) { j["schema_version"] = "1"; }, "#/schema_version", "\"1\""},
        {"missing schema version", [](json& j) { j.erase("schema_version"); }, "#/schema_version", "missing"},
        {"missing device", [](json& j) { j.erase("device"); }, "#/device", "missing"},
        {"missing entries", [](json& j) { j.erase("entries"); }, "#/entries", "missing"},
        {"device name a number", [](json& j) { j["device"]["name"] = 5; }, "#/device/name", "string"},
        {"empty device name", [](json& j) { j["device"]["name"] = ""; }, "#/device/name", "non-empty"},
        {"bad arch", [](json& j) { j["device"]["arch"] = "hopper"; }, "#/device/arch", "sm_90a"},
        {"negative SM count", [](json& j) { j["device"]["sm_count"] = -1; }, "#/device/sm_count", "-1"},
        {"negative memory", [](json& j) { j["device"]["memory_bytes"] = -5; }, "#/device/memory_bytes", "-5"},
        {"read bandwidth zero", [](json& j) { j["read_GBps"] = 0; }, "#/read_GBps", "(0"},
        {"read bandwidth a string", [](json& j) { j["read_GBps"] = "fast"; }, "#/read_GBps", "\"fast\""},
        {"entries an object", [](json& j) { j["entries"] = json::object(); }, "#/entries", "array"},
        {"entry a number", [](json& j) { j["entries"][1] = 7; }, "#/entries/1", "an object"},
        {"unknown top-level key", [](json& j) { j["entris"] = json::array(); }, "#/entris", "unknown key"},
        {"unknown config key (typo)", [](json& j) { j["entries"][0]["config"]["warp"] = 4; }, "#/entries/0/config/warp",
         "unknown key"},
        {"missing config", [](json& j) { j["entries"][0].erase("config"); }, "#/entries/0/config", "missing"},
        {"missing warps", [](json& j) { j["entries"][0]["config"].erase("warps"); }, "#/entries/0/config/warps",
         "missing"},
        {"warps 9", [](json& j) { j["entries"][0]["config"]["warps"] = 9; }, "#/entries/0/config/warps", "got 9"},
        {"warps 0", [](json& j) { j["entries"][0]["config"]["warps"] = 0; }, "#/entries/0/config/warps", "got 0"},
        {"warps fractional", [](json& j) { j["entries"][0]["config"]["warps"] = 4.5; }, "#/entries/0/config/warps",
         "4.5"},
        {"warps a string", [](json& j) { j["entries"][0]["config"]["warps"] = "4"; }, "#/entries/0/config/warps",
         "\"4\""},
        {"warps a bool", [](json& j) { j["entries"][0]["config"]["warps"] = true; }, "#/entries/0/config/warps",
         "true"},
        {"tile not a multiple of 16 * warps", [](json& j) { j["entries"][0]["config"]["tile_tokens"] = 48; },
         "#/entries/0/config/tile_tokens", "16 * warps = 64"},
        {"dim split on fp32",
         [](json& j) {
           j["entries"][0]["bucket"]["dtype"] = j["entries"][0]["bucket"]["kv_dtype"] = "fp32";
           j["entries"][0]["config"]["tile_tokens"] = 32;  // 4 warps on 2 slices
         },
         "#/entries/0/config/warps", "a dim split needs fp16/bf16"},
        {"tile huge", [](json& j) { j["entries"][0]["config"]["tile_tokens"] = 1LL << 40; },
         "#/entries/0/config/tile_tokens", "1099511627776"},
        {"tile above int64", [](json& j) { j["entries"][0]["config"]["tile_tokens"] = 18446744073709551615ull; },
         "#/entries/0/config/tile_tokens", "18446744073709551615"},
        {"stages 1", [](json& j) { j["entries"][0]["config"]["stages"] = 1; }, "#/entries/0/config/stages", "got 1"},
        {"negative chunk", [](json& j) { j["entries"][0]["config"]["chunk_tokens"] = -64; },
         "#/entries/0/config/chunk_tokens", "-64"},
        {"chunk not a multiple of the tile", [](json& j) { j["entries"][0]["config"]["chunk_tokens"] = 100; },
         "#/entries/0/config/chunk_tokens", "multiple of tile_tokens = 64"},
        {"v_dims above head_dim", [](json& j) { j["entries"][0]["config"]["v_dims"] = 144; },
         "#/entries/0/config/v_dims", "144"},
        {"v_dims not a multiple of 16", [](json& j) { j["entries"][3]["config"]["v_dims"] = 120; },
         "#/entries/3/config/v_dims", "120"},
        {"work_waves 17", [](json& j) { j["entries"][0]["config"]["work_waves"] = 17; },
         "#/entries/0/config/work_waves", "1..16 in [0, 16], got 17"},
        {"negative work_waves", [](json& j) { j["entries"][0]["config"]["work_waves"] = -1; },
         "#/entries/0/config/work_waves", "got -1"},
        {"work_waves a string", [](json& j) { j["entries"][0]["config"]["work_waves"] = "2"; },
         "#/entries/0/config/work_waves", "\"2\""},
        {"bad dtype", [](json& j) { j["entries"][0]["bucket"]["dtype"] = "bf17"; }, "#/entries/0/bucket/dtype",
         "\"bf17\""},
        {"fp8 query", [](json& j) { j["entries"][0]["bucket"]["dtype"] = "e4m3"; }, "#/entries/0/bucket/dtype", "e4m3"},
        {"KV dtype another float", [](json& j) { j["entries"][0]["bucket"]["kv_dtype"] = "fp16"; },
         "#/entries/0/bucket/kv_dtype", "fp16"},
        {"int32 dtype", [](json& j) { j["entries"][0]["bucket"]["dtype"] = "int32"; }, "#/entries/0/bucket/dtype",
         "int32"},
        {"head_dim 100", [](json& j) { j["entries"][0]["bucket"]["head_dim"] = 100; }, "#/entries/0/bucket/head_dim",
         "100"},
        {"head_dim 1024", [](json& j) { j["entries"][0]["bucket"]["head_dim"] = 1024; }, "#/entries/0/bucket/head_dim",
         "1024"},
        {"page 24", [](json& j) { j["entries"][0]["bucket"]["page_size"] = 24; }, "#/entries/0/bucket/page_size",
         "power of two"},
        {"bad layout", [](json& j) { j["entries"][0]["bucket"]["layout"] = "nhd"; }, "#/entries/0/bucket/layout",
         "\"nhd\""},
        {"range reversed",
         [](json& j) {
           j["entries"][0]["bucket"]["batch"] = {96, 49};
         },
         "#/entries/0/bucket/batch", "lo <= hi"},
        {"range of three",
         [](json& j) {
           j["entries"][0]["bucket"]["batch"] = {1, 2, 3};
         },
         "#/entries/0/bucket/batch", "[1,2,3]"},
        {"range zero",
         [](json& j) {
           j["entries"][0]["bucket"]["context"] = {0, 10};
         },
         "#/entries/0/bucket/context/0", "got 0"},
        {"range a number", [](json& j) { j["entries"][0]["bucket"]["group"] = 4; }, "#/entries/0/bucket/group",
         "got 4"},
        {"range past 2^31",
         [](json& j) {
           j["entries"][0]["bucket"]["context"] = {1, 1LL << 31};
         },
         "#/entries/0/bucket/context/1", "2147483648"},
        {"q_len 9",
         [](json& j) {
           j["entries"][0]["bucket"]["q_len"] = {1, 9};
         },
         "#/entries/0/bucket/q_len/1", "got 9"},
        {"missing bucket field", [](json& j) { j["entries"][0]["bucket"].erase("layout"); },
         "#/entries/0/bucket/layout", "missing"},
        {"negative time", [](json& j) { j["entries"][0]["time_ms"] = -1; }, "#/entries/0/time_ms", "-1"},
        {"zero time", [](json& j) { j["entries"][0]["time_ms"] = 0; }, "#/entries/0/time_ms", "got 0"},
        {"null time", [](json& j) { j["entries"][0]["time_ms"] = nullptr; }, "#/entries/0/time_ms", "null"},
        {"frac huge", [](json& j) { j["entries"][0]["frac_read"] = 1e300; }, "#/entries/0/frac_read", "1e+300"},
        {"bad chosen", [](json& j) { j["entries"][0]["chosen"] = "best"; }, "#/entries/0/chosen", "\"best\""},
        {"overlapping buckets", [](json& j) { j["entries"].push_back(j["entries"][0]); }, "#/entries/5/bucket",
         "overlaps"},
        {"root an array",
         [](json& j) {
           j = json::array({1, 2});
         },
         "bad.json#/", "JSON object"},
        {"root null", [](json& j) { j = nullptr; }, "bad.json#/", "null"},
    };
    for (const Bad& b : cases) {
      CAPTURE(b.what);
      json j = example_json();
      b.mutate(j);
      const std::string msg = parse_error(j.dump());
      CAPTURE(msg);
      CHECK(msg.find("bad.json") != std::string::npos);
      CHECK(msg.find(b.pointer) != std::string::npos);
      CHECK(msg.find(b.detail) != std::string::npos);
    }
  }

  TEST_CASE("profiles: broken text (empty, truncated, garbage, duplicates, deep nesting) is refused, never a crash") {
    CHECK(parse_error("").find("an empty file") != std::string::npos);
    CHECK(parse_error("   \n").find("invalid JSON") != std::string::npos);
    CHECK(parse_error("{\"schema_version\": 1,").find("invalid JSON") != std::string::npos);
    CHECK(parse_error(std::string("\x7f"
                                  "ELF\x02\x01\x01\0\0\0garbage\xff\xfe",
                                  18))
              .find("invalid JSON") != std::string::npos);
    CHECK(parse_error("{\"schema_version\": 1, \"schema_version\": 1}").find("twice") != std::string::npos);
    CHECK(parse_error(std::string(100000, '[')).find("nested") != std::string::npos);
    CHECK(parse_error(std::string(40, '[') + std::string(40, ']')).find("nested") != std::string::npos);
    CHECK(parse_error("{\"a\": 1e400}").find("bad.json") != std::string::npos);
    CHECK(parse_error("{\"name\": \"\xc3\x28\"}").find("invalid JSON") != std::string::npos);  // bad UTF-8
    CHECK(parse_error(std::string(kMaxProfileBytes + 1, ' ')).find("at most") != std::string::npos);

    // Every proper prefix of a valid file is refused with a clean error.
    const std::string text = example_text();
    for (std::size_t n = 0; n < text.size(); n += 1) {
      const std::string prefix = text.substr(0, n);
      const bool only_space = prefix.find_first_not_of(" \n") == std::string::npos;
      if (!only_space && text.substr(n).find_first_not_of(" \n") == std::string::npos) break;  // complete JSON
      CAPTURE(n);
      CHECK(!parse_error(prefix).empty());
    }
    // Random byte changes: a clean error or a valid profile, nothing else.
    std::mt19937 rng(7);
    int refused = 0;
    for (int i = 0; i < 2000; ++i) {
      std::string t = text;
      for (int k = 0; k < 1 + int(rng() % 3); ++k) t[rng() % t.size()] = char(rng() % 256);
      try {
        const Profile p = parse_profile(t, "mutated.json");
        CHECK(parse_profile(serialize_profile(p), "again.json").entries.size() == p.entries.size());
      } catch (const InvalidArgument& e) {
        ++refused;
        CHECK(std::string(e.what()).find("mutated.json") != std::string::npos);
      }
    }
    CHECK(refused > 500);
    CHECK(profile_error_text(InvalidArgument("x.json#/a", "b", "c")) == "'x.json#/a': expected b, got c");
  }

  TEST_CASE("profiles: bucket distance, ladder ranges and nearest-bucket matching on group, batch and context") {
    CHECK(Range{4, 8}.log_distance(4) == 0);
    CHECK(Range{4, 8}.log_distance(8) == 0);
    CHECK(Range{4, 8}.log_distance(2) == doctest::Approx(1));
    CHECK(Range{4, 8}.log_distance(32) == doctest::Approx(2));
    CHECK(Range{4, 8}.log_distance(0) == doctest::Approx(2));  // below 1 counts as 1
    CHECK(Range{1, 1}.log_distance(-5) == 0);

    // The tuner's ladders tile the integers without gaps.
    CHECK(pjtune::ladder_range(1) == Range{1, 1});
    CHECK(pjtune::ladder_range(2) == Range{2, 3});
    CHECK(pjtune::ladder_range(4096) == Range{3073, 6144});
    CHECK(pjtune::ladder_range(131072) == Range{98305, 196608});
    CHECK(pjtune::ladder_range(0x7fffffff).hi == 0x7fffffff);
    for (std::int64_t x = 1; x < 100000; ++x) {
      const Range r = pjtune::ladder_range(x);
      REQUIRE(r.contains(x));
      if (x == r.hi) REQUIRE(pjtune::ladder_range(x + 1).lo == x + 1);
    }

    // Phase 2's partition lengths: the shorter fixed ones, then one partition
    // per sequence (the longest context rounded up to any tile).
    ProblemShape ps4k;
    ps4k.max_context_len = 4096;
    CHECK(pjtune::chunk_candidates(ps4k) == std::vector<int>{512, 1024, 1536, 2048, 4096});
    ps4k.max_context_len = 1000;
    CHECK(pjtune::chunk_candidates(ps4k) == std::vector<int>{512, 1024});
    for (std::int64_t ctx : {1000, 4096, 131072}) {
      ps4k.max_context_len = ctx;
      const int whole = pjtune::chunk_candidates(ps4k).back();
      CHECK(whole >= ctx);
      CHECK(whole % 256 == 0);
      CHECK((ctx + whole - 1) / whole == 1);
    }

    // A stored timing names its plan: the same configuration (chunk 0, "the
    // heuristic's split") on shapes the heuristic splits differently, and an
    // explicit single partition, give different texts.
    const KernelConfig tile{32, 2, 3, 0, 0};
    ProblemShape big = shape(64, 32, 8, 8192), small = shape(1, 32, 8, 8192);
    big.kv_dtype = small.kv_dtype = DType::e4m3;
    const std::string big_plan = pjtune::plan_text(big, tile, h100), small_plan = pjtune::plan_text(small, tile, h100);
    CHECK(big_plan.find("device-schedule waves=1") != std::string::npos);
    CHECK(small_plan.find("cluster=1") != std::string::npos);
    CHECK(big_plan != small_plan);
    KernelConfig whole = tile;
    whole.chunk_tokens = 8192;
    CHECK(pjtune::plan_text(big, whole, h100) == "splits=1 chunk=8192 cluster=1");
    CHECK(pjtune::plan_text(big, std::nullopt, h100) == big_plan);  // the heuristic's tile is that one too
    CHECK(pjtune::plan_text(big, KernelConfig{256, 8, 8, 0, 0}, h100) == "unplannable");  // 590 KB of shared memory

    const KernelConfig a{64, 4, 3, 0, 0}, b{32, 2, 3, 0, 0}, c{16, 1, 2, 0, 0}, d{128, 8, 2, 0, 0};
    Profile p = profile("p.json", h100.name, h100.arch(), false,
                        {entry(4, {49, 96}, {3073, 6144}, a), entry(4, {1, 1}, {98305, 196608}, b),
                         entry(8, {49, 96}, {3073, 6144}, c), entry(1, {2, 3}, {1, 1536}, d)});
    CHECK(nearest_entry(p, shape(64, 32, 8, 4096)) == 0);    // inside
    CHECK(nearest_entry(p, shape(1, 32, 8, 131072)) == 1);   // inside
    CHECK(nearest_entry(p, shape(2, 32, 8, 100000)) == 1);   // batch 1 away, context inside
    CHECK(nearest_entry(p, shape(48, 32, 8, 4096)) == 0);    // just outside entry 0's batch
    CHECK(nearest_entry(p, shape(1024, 32, 8, 2048)) == 0);  // far from every batch: nearest
    CHECK(nearest_entry(p, shape(64, 32, 4, 4096)) == 2);    // group 8: exact
    CHECK(nearest_entry(p, shape(64, 64, 4, 4096)) == 2);    // group 16 -> 8 is nearest
    CHECK(nearest_entry(p, shape(2, 32, 32, 1000)) == 3);    // group 1
    CHECK(nearest_entry(p, shape(2, 64, 32, 1000)) == 3);    // group 2: 1 and 4 tie, 1 away; batch/context decide
    CHECK(nearest_entry(p, shape(64, 96, 32, 4096)) == 0);   // group 3: 4 is nearer than 1 in log terms
    CHECK(nearest_entry(p, shape(4, 32, 8, 40000)) == 1);    // batch 2 + context 1.3 < batch 3.6 + context 2.7

    // q_len comes first: an entry for q_len 4 beats any q_len-1 entry for a q_len-4 call.
    Entry spec = entry(8, {1, 1}, {1, 2}, KernelConfig{16, 1, 3, 0, 0});
    spec.bucket.q_len = {4, 4};
    p.entries.push_back(spec);
    ProblemShape s4 = shape(64, 32, 8, 4096);
    s4.q_len = 4;
    CHECK(nearest_entry(p, s4) == 4);
    CHECK(nearest_entry(p, shape(64, 32, 8, 4096)) == 0);

    // Ties go to the first entry in the file.
    Profile t = profile("t.json", h100.name, h100.arch(), false,
                        {entry(4, {16, 16}, {4096, 4096}, a), entry(4, {64, 64}, {4096, 4096}, b)});
    CHECK(nearest_entry(t, shape(32, 32, 8, 4096)) == 0);
    std::swap(t.entries[0], t.entries[1]);
    CHECK(nearest_entry(t, shape(32, 32, 8, 4096)) == 0);
  }

  TEST_CASE("profiles: dtype, kv_dtype, head_dim, page_size and layout must match exactly") {
    const Profile p = profile("p.json", h100.name, h100.arch(), false,
                              {entry(4, {1, 1000}, {1, 1 << 20}, KernelConfig{64, 4, 3, 0, 0})});
    CHECK(nearest_entry(p, shape(64, 32, 8, 4096)) == 0);
    CHECK(nearest_entry(p, shape(64, 32, 8, 4096, 64)) == -1);
    CHECK(nearest_entry(p, shape(64, 32, 8, 4096, 128, DType::f16)) == -1);
    CHECK(nearest_entry(p, shape(64, 32, 8, 4096, 128, DType::f32)) == -1);
    CHECK(nearest_entry(p, shape(64, 32, 8, 4096, 128, DType::bf16, 64)) == -1);
    CHECK(nearest_entry(p, shape(64, 32, 8, 4096, 128, DType::bf16, 16, CacheLayout::heads_blocks)) == -1);
    ProblemShape fp8 = shape(64, 32, 8, 4096);
    fp8.kv_dtype = DType::e4m3;
    CHECK(nearest_entry(p, fp8) == -1);
    CHECK(!lookup({p}, shape(64, 32, 8, 4096, 64), h100));  // no match anywhere: the heuristic
    // A KV-dtype bucket matches only calls with that cache dtype.
    Profile q = p;
    q.entries[0].bucket.kv_dtype = DType::e4m3;
    CHECK(nearest_entry(q, fp8) == 0);
    CHECK(nearest_entry(q, shape(64, 32, 8, 4096)) == -1);
    // A shape without KV heads (nothing to divide by) matches without crashing.
    ProblemShape none = shape(64, 32, 8, 4096);
    none.num_kv_heads = 0;
    CHECK(nearest_entry(p, none) == 0);
  }

  TEST_CASE("profiles: lookup order is user, exact GPU model, same architecture, then the heuristic") {
    const KernelConfig cu{16, 1, 2, 0, 0}, cua{16, 1, 3, 0, 0}, ce{32, 2, 2, 0, 0}, ca{32, 2, 3, 0, 0},
        co{64, 4, 2, 0, 0};
    const auto one = [](const KernelConfig& c) { return std::vector<Entry>{entry(4, {1, 1000}, {1, 1 << 20}, c)}; };
    std::vector<Profile> all = {
        profile("other-arch.json", "NVIDIA A100-SXM4-80GB", "sm_80", false, one(co)),
        profile("configs/h200.json", h200.name, h200.arch(), false, one(ca)),
        profile("configs/h100.json", h100.name, h100.arch(), false, one(ce)),
        profile("/home/me/h200-mine.json", h200.name, h200.arch(), true, one(cua)),
        profile("/home/me/h100-mine.json", h100.name, h100.arch(), true, one(cu)),
    };
    const ProblemShape s = shape(64, 32, 8, 4096);
    const auto level_and_config = [&](const std::vector<Profile>& ps, const DeviceInfo& d) {
      const std::optional<Choice> c = lookup(ps, s, d);
      return c ? fmt::format("{} {} {}", c->level, c->origin, describe_config(c->config)) : std::string("heuristic");
    };
    CHECK(level_and_config(all, h100) == "user /home/me/h100-mine.json " + describe_config(cu));
    // The vector's order does not matter, only the levels.
    std::vector<Profile> rev(all.rbegin(), all.rend());
    CHECK(level_and_config(rev, h100) == "user /home/me/h100-mine.json " + describe_config(cu));
    // Without the user file for this model, a user file for its architecture.
    all.pop_back();
    CHECK(level_and_config(all, h100) == "user /home/me/h200-mine.json " + describe_config(cua));
    all.pop_back();
    CHECK(level_and_config(all, h100) == "exact configs/h100.json " + describe_config(ce));
    CHECK(level_and_config(all, h200) == "exact configs/h200.json " + describe_config(ca));
    all.erase(all.begin() + 2);
    CHECK(level_and_config(all, h100) == "arch configs/h200.json " + describe_config(ca));
    all.erase(all.begin() + 1);
    CHECK(level_and_config(all, h100) == "heuristic");  // only another architecture's profile is left
    DeviceInfo a100 = h100;
    a100.name = "NVIDIA A100-SXM4-80GB";
    a100.cc_major = 8;
    CHECK(level_and_config(all, a100) == "exact other-arch.json " + describe_config(co));

    // A profile that has no entry for the call falls through to the next level.
    std::vector<Profile> two = {
        profile("configs/h100.json", h100.name, h100.arch(), false, one(ce)),
        profile("/u/d64.json", h100.name, h100.arch(), true, {entry(4, {1, 1000}, {1, 1 << 20}, cu, 64)})};
    CHECK(level_and_config(two, h100) == "exact configs/h100.json " + describe_config(ce));
    const std::optional<Choice> c = lookup(two, shape(64, 32, 8, 4096, 64), h100);
    REQUIRE(c);
    CHECK(c->level == "user");
    CHECK(c->entry == 0);
    CHECK(c->time_ms == doctest::Approx(0.1));
    CHECK(c->describe() == "user /u/d64.json #0 (bf16/bf16 d64 p16 blocks_heads g4 q1 b1-1000 ctx1-1048576)");
    CHECK(profile_level(two[0], h200) == "arch");
    CHECK(profile_level(two[1], h100) == "user");

    PagedAttentionOptions o;
    CHECK(profile_applies(o));
    o.num_splits = 4;
    CHECK(profile_applies(o));  // the tile part still applies
    o.kernel_config = KernelConfig{64, 4, 3, 0, 0};
    CHECK(!profile_applies(o));
    PagedAttentionOptions ppcb;
    ppcb.pages_per_compute_block = 4;
    CHECK(!profile_applies(ppcb));
    PagedAttentionOptions invariant;  // the tile must not depend on the batch's bucket
    invariant.batch_invariant = true;
    CHECK(!profile_applies(invariant));
  }

  TEST_CASE("profiles: a configuration that cannot run on the device is never chosen") {
    const ProblemShape s = shape(64, 32, 8, 4096);
    // Valid in the schema (device-independent) but 285440 bytes of shared memory.
    const KernelConfig too_big{128, 4, 4, 0, 0}, fine{64, 4, 3, 0, 0};
    CHECK(config_smem_bytes(too_big, s) > h100.max_smem_per_block);
    CHECK(config_error(too_big, s, h100).find("shared memory") != std::string::npos);
    CHECK(config_error(fine, s, h100).empty());
    CHECK(config_error(KernelConfig{48, 4, 3, 0, 0}, s, h100).find("multiple of 16 * warps") != std::string::npos);
    // A dim split (4 warps on a 32-token tile): tensor cores only.
    CHECK(config_error(KernelConfig{32, 4, 2, 0, 0}, shape(32, 32, 8, 4096, 256), h100).empty());
    CHECK(config_error(KernelConfig{32, 4, 2, 0, 0}, shape(32, 32, 8, 4096, 256, DType::f32), h100)
              .find("tensor cores") != std::string::npos);
    CHECK(!config_error(KernelConfig{64, 16, 3, 0, 0}, s, h100).empty());  // 512 threads, but warps > 8
    CHECK(!config_error(KernelConfig{64, 4, 1, 0, 0}, s, h100).empty());
    CHECK(!config_error(KernelConfig{64, 4, 3, 100, 0}, s, h100).empty());
    CHECK(!config_error(KernelConfig{64, 4, 3, 0, 144}, s, h100).empty());
    CHECK(!config_error(KernelConfig{512, 8, 2, 0, 0}, s, h100).empty());
    // fp8 KV: one byte per element, so a tile that does not fit in bf16 fits.
    ProblemShape fp8 = s;
    fp8.kv_dtype = DType::e4m3;
    CHECK(config_smem_bytes(too_big, fp8) < config_smem_bytes(too_big, s));
    CHECK(config_error(too_big, fp8, h100).empty());
    // fp32 adds the SIMT path's probability tiles.
    CHECK(config_smem_bytes(fine, shape(64, 32, 8, 4096, 128, DType::f32)) > config_smem_bytes(fine, s));

    std::vector<Profile> ps = {
        profile("/u/mine.json", h100.name, h100.arch(), true, {entry(4, {49, 96}, {3073, 6144}, too_big)}),
        profile("configs/h100.json", h100.name, h100.arch(), false, {entry(4, {49, 96}, {3073, 6144}, fine)}),
    };
    std::vector<std::string> skipped;
    const std::optional<Choice> c = lookup(ps, s, h100, &skipped);
    REQUIRE(c);
    CHECK(c->level == "exact");
    CHECK(same_config(c->config, fine));
    REQUIRE(skipped.size() == 1);
    CHECK(skipped[0].find("/u/mine.json") != std::string::npos);
    CHECK(skipped[0].find("shared memory") != std::string::npos);
    // A smaller device: neither fits, so the heuristic.
    DeviceInfo small = h100;
    small.max_smem_per_block = 48 * 1024;
    CHECK(!lookup(ps, s, small));
    // The tuner prunes the same configurations before timing, with the reason.
    const std::vector<pjtune::Candidate> cands = pjtune::tile_candidates(s, h100);
    int pruned = 0;
    bool saw_too_big = false;
    for (const pjtune::Candidate& k : cands) {
      const std::string which = describe_config(k.config);
      CAPTURE(which);
      CHECK(k.pruned.empty() == config_error(k.config, s, h100).empty());
      pruned += !k.pruned.empty();
      if (same_config(k.config, too_big)) saw_too_big = !k.pruned.empty();
      if (k.pruned.empty()) CHECK(k.smem_bytes <= h100.max_smem_per_block);
    }
    CHECK(saw_too_big);
    CHECK(pruned > 0);
    CHECK(pruned < int(cands.size()));
  }

  TEST_CASE(
      "profiles: an entry's partition length applies only to its batch and context ranges; its tile to the nearest") {
    // Tuned for batches of 49-96: 64/4/2 tiles cut into 1536-token partitions.
    const KernelConfig tuned{64, 4, 2, 1536, 0};
    const std::vector<Profile> ps = {
        profile("configs/h100.json", h100.name, h100.arch(), false, {entry(4, {49, 96}, {6145, 12288}, tuned)})};
    const ProblemShape inside = shape(64, 32, 8, 8192);
    const ProblemShape batch4 = shape(4, 32, 8, 32768);  // nearest entry, but 16x fewer CTAs
    const std::optional<Choice> a = lookup(ps, inside, h100), b = lookup(ps, batch4, h100);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->in_bucket);
    CHECK(!b->in_bucket);
    // (The host schedule: with the device one a batch's partitions follow its lengths.)
    const LaunchInfo pa = attention::make_plan(inside, {}, h100, &*a, true, false).info;
    CHECK(pa.chunk_tokens == 1536);
    CHECK(pa.source == "profile");
    const LaunchInfo pb = attention::make_plan(batch4, {}, h100, &*b, true, false).info;
    CHECK(pb.tile_tokens == 64);  // the tile still comes from the profile
    CHECK(pb.warps == 4);
    CHECK(pb.stages == 2);
    CHECK(pb.source == "profile");
    // The split is the heuristic's for that tile (the same plan without the chunk).
    KernelConfig tile_only = tuned;
    tile_only.chunk_tokens = 0;
    Choice c = *b;
    c.config = tile_only;
    const LaunchInfo ref = attention::make_plan(batch4, {}, h100, &c, true, false).info;
    CHECK(pb.chunk_tokens == ref.chunk_tokens);
    CHECK(pb.num_splits == ref.num_splits);
    CHECK(pb.chunk_tokens != 1536);
    // Another q_len of the same batch and context: the chunk still applies.
    ProblemShape q4 = inside;
    q4.q_len = 4;
    const std::optional<Choice> q = lookup(ps, q4, h100);
    REQUIRE(q);
    CHECK(q->in_bucket);
    CHECK(attention::make_plan(q4, {}, h100, &*q, true, false).info.chunk_tokens == 1536);
  }

  TEST_CASE("profiles: an entry's work_waves round-trips through the tuner's writer and applies to batches") {
    const ProblemShape batch = shape(64, 32, 8, 8192), one = shape(1, 32, 8, 8192);
    // What pagedjit-tune records for a batch it timed with 6 work items per CTA slot.
    const KernelConfig tuned = pjtune::entry_config(batch, KernelConfig{64, 4, 2, 0, 0, 6}, h100);
    CHECK(tuned.work_waves == 6);
    Profile written = profile("configs/h100.json", h100.name, h100.arch(), false,
                              {entry(4, {49, 96}, {6145, 12288}, tuned), entry(4, {1, 1}, {6145, 12288}, tuned)});
    written.entries[1].config.work_waves = 0;
    const std::string text = serialize_profile(written);
    CHECK(count(text, "\"work_waves\":6") == 1);
    CHECK(count(text, "work_waves") == 1);  // only where set: files without it read as before
    const Profile read = parse_profile(text, "again.json");
    REQUIRE(read.entries.size() == 2);
    CHECK(read.entries[0].config.work_waves == 6);
    CHECK(same_config(read.entries[0].config, tuned));
    CHECK(read.entries[1].config.work_waves == 0);
    CHECK(serialize_profile(read) == text);
    CHECK(config_error(read.entries[0].config, batch, h100) == "");

    const std::optional<Choice> c = lookup({read}, batch, h100);
    REQUIRE(c);
    const LaunchInfo info = attention::make_plan(batch, {}, h100, &*c).info;
    CHECK(info.source == "profile");
    CHECK(info.work_items > 0);
    CHECK(info.work_waves == 6);
    CHECK(info.tile_tokens == 64);
    // Nearest, not inside: the waves still apply (the device schedule balances any batch).
    const ProblemShape small = shape(16, 32, 8, 8192);
    const std::optional<Choice> near = lookup({read}, small, h100);
    REQUIRE(near);
    CHECK(!near->in_bucket);
    CHECK(attention::make_plan(small, {}, h100, &*near).info.work_waves == 6);
    // Without the device schedule the knob has nothing to say.
    CHECK(attention::make_plan(batch, {}, h100, &*c, true, false).info.work_items == 0);
    // An entry without waves: the engine's default.
    const std::optional<Choice> single = lookup({read}, one, h100);
    REQUIRE(single);
    CHECK(single->entry == 1);
    CHECK(attention::make_plan(one, {}, h100, &*single).info.work_items == 0);

    // Outside 0..16: the device check refuses it with a message, and so does the parser.
    KernelConfig bad = tuned;
    bad.work_waves = 17;
    CHECK(config_error(bad, batch, h100) == "work_waves 17 outside 0..16");
    bad.work_waves = -1;
    CHECK(config_error(bad, batch, h100) == "work_waves -1 outside 0..16");
    written.entries[0].config.work_waves = 17;
    const std::string refused = parse_error(serialize_profile(written));
    CAPTURE(refused);
    CHECK(refused.find("bad.json#/entries/0/config/work_waves") != std::string::npos);
    CHECK(refused.find("got 17") != std::string::npos);
  }

  TEST_CASE("profiles: a kernel_config that sets only work_waves keeps the profile's tile and sets the waves") {
    const ProblemShape batch = shape(64, 32, 8, 8192);
    const KernelConfig tile{64, 4, 2, 0, 0, 6};
    const std::vector<Profile> ps = {
        profile("configs/h100.json", h100.name, h100.arch(), false, {entry(4, {49, 96}, {6145, 12288}, tile)})};
    const std::optional<Choice> c = lookup(ps, batch, h100);
    REQUIRE(c);
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{};
    o.kernel_config->work_waves = 3;
    CHECK(profile_applies(o));
    const LaunchInfo info = attention::make_plan(batch, o, h100, &*c).info;
    CHECK(info.source == "profile");
    CHECK(info.tile_tokens == 64);
    CHECK(info.warps == 4);
    CHECK(info.stages == 2);
    CHECK(info.work_waves == 3);  // the options' waves over the entry's
    // A kernel_config that sets a tile too bypasses the profile.
    o.kernel_config = KernelConfig{32, 2, 3, 0, 0, 3};
    CHECK(!profile_applies(o));
    const LaunchInfo user = attention::make_plan(batch, o, h100, &*c).info;
    CHECK(user.source != "profile");
    CHECK(user.tile_tokens == 32);
    CHECK(user.work_waves == 3);
  }

  TEST_CASE("pagedjit-tune: phase 2 searches work_waves for a batch on the device schedule, chunks for one sequence") {
    const ProblemShape batch = shape(64, 32, 8, 8192), one = shape(1, 32, 8, 32768);
    const KernelConfig tile{64, 4, 3, 0, 0};
    REQUIRE(pjtune::device_scheduled(batch, std::nullopt, h100));
    REQUIRE(pjtune::device_scheduled(batch, tile, h100));
    CHECK(!pjtune::device_scheduled(one, tile, h100));
    CHECK(pjtune::waves_candidates() == std::vector<int>{1, 2, 3, 4, 6, 8});

    // The batch: each candidate but the default, which phase 1 already timed.
    const std::vector<KernelConfig> waves = pjtune::phase2_configs(batch, tile, h100);
    std::vector<int> got;
    std::vector<std::string> plans;
    for (const KernelConfig& c : waves) {
      CAPTURE(describe_config(c));
      CHECK(c.tile_tokens == 64);
      CHECK(c.warps == 4);
      CHECK(c.stages == 3);
      CHECK(c.chunk_tokens == 0);
      got.push_back(c.work_waves);
      const std::string plan = pjtune::plan_text(batch, c, h100);
      CHECK(plan == fmt::format("device-schedule waves={}", c.work_waves));
      plans.push_back(describe_config(c) + "|" + plan);
      PagedAttentionOptions o;  // as the tuner times it
      o.kernel_config = c;
      CHECK(attention::make_plan(batch, o, h100).info.work_waves == c.work_waves);
    }
    CHECK(got == std::vector<int>{2, 3, 4, 6, 8});
    CHECK(attention::kDefaultWorkWaves == 1);
    CHECK(pjtune::plan_text(batch, tile, h100) == "device-schedule waves=1");
    // Distinct result keys: each configuration's own line in the results file.
    plans.push_back(describe_config(tile) + "|" + pjtune::plan_text(batch, tile, h100));
    std::sort(plans.begin(), plans.end());
    CHECK(std::unique(plans.begin(), plans.end()) == plans.end());
    CHECK(describe_config(waves[0]) == "tile=64 warps=4 stages=3 chunk=0 dv=0 waves=2");
    CHECK(describe_config(tile) == "tile=64 warps=4 stages=3 chunk=0 dv=0");  // keys stored before waves unchanged

    // One sequence: partition lengths, as before.
    const std::vector<KernelConfig> chunks = pjtune::phase2_configs(one, tile, h100);
    const std::vector<int> lengths = pjtune::chunk_candidates(one);
    REQUIRE(chunks.size() == lengths.size());
    REQUIRE(!chunks.empty());
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      CHECK(chunks[i].chunk_tokens == lengths[i]);
      CHECK(chunks[i].work_waves == 0);
      CHECK(chunks[i].tile_tokens == 64);
    }

    // The entry states the waves its plan used; one sequence records none.
    CHECK(pjtune::entry_config(batch, tile, h100).work_waves == attention::kDefaultWorkWaves);
    CHECK(pjtune::entry_config(batch, KernelConfig{64, 4, 3, 0, 0, 8}, h100).work_waves == 8);
    CHECK(pjtune::entry_config(one, tile, h100).work_waves == 0);
    CHECK(pjtune::entry_config(one, KernelConfig{64, 4, 3, 1024, 0, 8}, h100).work_waves == 0);
    // A fixed partition length takes the host schedule, so its entry has no waves either.
    CHECK(pjtune::entry_config(batch, KernelConfig{64, 4, 3, 1024, 0}, h100).work_waves == 0);

    // A problem that forces the waves is not a tuning problem.
    pjbench::BenchCase forced;
    CHECK(pjtune::tuning_problem_error(forced) == "");
    forced.config.work_waves = 3;
    CHECK(pjtune::tuning_problem_error(forced).find("waves") != std::string::npos);
  }

  TEST_CASE("profiles: PAGEDJIT_PROFILE_PATH files and directories; a malformed user file is skipped with a message") {
    TempDir dir;
    fs::create_directories(dir.path / "more");
    json good = example_json();
    write_file(dir / "mine.json", good.dump());
    good["device"]["name"] = "NVIDIA H200";
    good["entries"][0]["config"]["stages"] = 2;
    write_file(dir / "more/b-h200.json", good.dump());
    json bad = example_json();
    bad["entries"][1]["config"]["warps"] = 9;
    write_file(dir / "more/a-bad.json", bad.dump());
    write_file(dir / "more/notes.txt", "not a profile");
    write_file(dir / "more/empty.json", "");

    const ProfileRegistry r =
        ProfileRegistry::load(fmt::format("{}::{}:{}", dir / "mine.json", dir / "more", dir / "missing.json"), false);
    REQUIRE(r.profiles().size() == 2);
    CHECK(r.profiles()[0]->origin == dir / "mine.json");
    CHECK(r.profiles()[1]->origin == dir / "more/b-h200.json");
    CHECK(r.profiles()[0]->user);
    CHECK(r.warnings().size() == 3);
    std::string warnings;
    for (const std::string& w : r.warnings()) warnings += w + "\n";
    CAPTURE(warnings);
    CHECK(count(warnings, "'" + (dir / "more/a-bad.json") +
                              "#/entries/1/config/warps': expected an integer in [1, 8], got 9") == 1);
    CHECK(count(warnings, (dir / "more/empty.json") + "#/': expected a JSON profile, got an empty file") == 1);
    CHECK(count(warnings, (dir / "missing.json") + ": no such file") == 1);

    const ProblemShape s = shape(64, 32, 8, 4096);
    const std::optional<Choice> c = r.for_device(h100, false).choose(s);
    REQUIRE(c);
    CHECK(c->level == "user");
    CHECK(c->origin == dir / "mine.json");
    CHECK(c->config.stages == 4);
    const std::optional<Choice> c200 = r.for_device(h200, false).choose(s);
    REQUIRE(c200);
    CHECK(c200->origin == dir / "more/b-h200.json");  // exact model before the same-arch user file
    CHECK(c200->config.stages == 2);
    CHECK(r.for_device(h100, false).describe().find("2 profiles") != std::string::npos);
    CHECK(DeviceProfiles().describe() == "no profile (heuristic)");
    CHECK(!DeviceProfiles().choose(s));
  }

  TEST_CASE("profiles: the level is logged once per process and profile, and the heuristic fallback once") {
    TempDir dir;
    // A device name of its own: the messages are logged once per process,
    // and other tests (GPU ones on an H100) may have logged the real name's.
    DeviceInfo dev = h100;
    dev.name += " (log test)";
    const ProfileRegistry r(
        std::vector<Profile>{profile("configs/h100.json", dev.name, dev.arch(), false,
                                     {entry(4, {1, 1000}, {1, 1 << 20}, KernelConfig{64, 4, 3, 0, 0}),
                                      entry(2, {1, 1000}, {1, 1 << 20}, KernelConfig{128, 4, 4, 0, 0})}),
                             profile("/u/other.json", "NVIDIA A100-SXM4-80GB", "sm_80", true, {})});
    ::unsetenv("PAGEDJIT_PROFILE_LOG");
    StderrCapture cap(dir / "err.txt");
    // A second engine's profiles (same process, same device) say nothing new.
    for (int engine = 0; engine < 2; ++engine) {
      const DeviceProfiles dp = r.for_device(dev);
      for (int i = 0; i < 5; ++i) {
        CHECK(dp.choose(shape(64, 32, 8, 4096)));
        CHECK(!dp.choose(shape(64, 32, 8, 4096, 64)));
        CHECK(!dp.choose(shape(64, 16, 8, 4096)));  // group 2: its entry does not fit; nothing else matches
      }
    }
    const std::string err = cap.finish();
    CAPTURE(err);
    CHECK(count(err, "pagedjit: ") == 4);
    CHECK(count(err, "from the exact profile configs/h100.json") == 1);
    CHECK(count(err, "built-in heuristic") == 1);
    CHECK(count(err, "shared memory") == 1);
    CHECK(count(err, "/u/other.json: a profile for NVIDIA A100-SXM4-80GB (sm_80)") == 1);
  }

  TEST_CASE("profiles: every shipped profile is embedded, valid, and fits its GPU") {
    std::vector<std::string> on_disk;
    for (const auto& e : fs::directory_iterator(PAGEDJIT_CONFIGS_DIR)) {
      const std::string name = e.path().filename().string();
      if (e.path().extension() == ".json" && name.rfind("tune-", 0) != 0) on_disk.push_back("configs/" + name);
    }
    std::sort(on_disk.begin(), on_disk.end());
    std::vector<std::string> embedded;
    for (const ShippedProfile& s : shipped_profiles()) {
      embedded.push_back(s.name);
      CAPTURE(s.name);
      Profile p;
      REQUIRE_NOTHROW(p = parse_profile(s.text, s.name));
      CHECK(s.text == read_file(std::string(PAGEDJIT_CONFIGS_DIR) + "/" + s.name.substr(8)));  // rebuilt since edited
      for (const DeviceInfo& d : {h100, h200})
        if (p.device.name == d.name)
          for (std::size_t i = 0; i < p.entries.size(); ++i) {
            ProblemShape sh =
                shape(int(p.entries[i].bucket.batch.lo), int(p.entries[i].bucket.group.lo), 1,
                      p.entries[i].bucket.context.lo, p.entries[i].bucket.head_dim, p.entries[i].bucket.dtype,
                      p.entries[i].bucket.page_size, p.entries[i].bucket.layout);
            sh.kv_dtype = p.entries[i].bucket.kv_dtype;
            CAPTURE(i);
            CHECK(config_error(p.entries[i].config, sh, d) == "");
          }
    }
    CHECK(embedded == on_disk);
    CHECK(ProfileRegistry::load("", true).warnings().empty());
    // The tuner's problems parse, each in a bucket of its own, none forcing what the tuner chooses.
    const std::vector<pjbench::BenchCase> cases =
        pjbench::load_cases_file(std::string(PAGEDJIT_CONFIGS_DIR) + "/tune-problems.json");
    CHECK(cases.size() >= 16);
    std::vector<Bucket> buckets;
    for (const pjbench::BenchCase& c : cases) {
      CAPTURE(c.name);
      CHECK(pjtune::tuning_problem_error(c) == "");
      const Bucket b = pjtune::bucket_of(pjtune::shape_of(c));
      CHECK(std::find(buckets.begin(), buckets.end(), b) == buckets.end());
      buckets.push_back(b);
    }
    for (const char* name : {"l8b_b64_c4k", "l8b_b4_c32k", "mha_b32_c2k", "mqa_b128_c4k", "d256_b32_c4k", "var_b64_8k",
                             "l8b_b64_c4k_p64", "l8b_b1_c128k"})
      CHECK(std::any_of(cases.begin(), cases.end(), [&](const pjbench::BenchCase& c) { return c.name == name; }));
  }

  TEST_CASE(
      "pagedjit-tune's results file: appended at once, reloaded, the last line of a key wins, torn lines ignored") {
    TempDir dir;
    const std::string path = dir / "sub/results.jsonl";
    {
      pjtune::ResultStore store(path);
      CHECK(store.loaded() == 0);
      CHECK(store.find("a") == nullptr);
      store.add(pjtune::Json{{"key", "a"}, {"ok", true}, {"time_ms", 0.5}});
      store.add(pjtune::Json{{"key", "b"}, {"ok", false}, {"error", "compile_error: boom"}});
      REQUIRE(store.find("a"));
      CHECK(store.find("a")->time_ms == 0.5);
      CHECK(read_file(path).size() > 0);  // on disk already, before the store goes away
    }
    {
      std::ofstream f(path, std::ios::app);
      f << "{\"key\": \"a\", \"ok\": true, \"time_ms\": 0.25}\n";
      f << "{\"key\": \"c\", \"ok\": tr";  // a run killed mid-line
    }
    pjtune::ResultStore again(path);
    CHECK(again.loaded() == 3);
    CHECK(again.bad_lines() == 1);
    REQUIRE(again.find("a"));
    CHECK(again.find("a")->time_ms == 0.25);
    REQUIRE(again.find("b"));
    CHECK(!again.find("b")->ok);
    CHECK(again.find("b")->error == "compile_error: boom");
    CHECK(again.find("c") == nullptr);
    again.add(pjtune::Json{{"key", "d"}, {"ok", true}, {"time_ms", 1.0}});  // after the torn line, on a line of its own
    CHECK(pjtune::ResultStore(path).find("d") != nullptr);
    CHECK_THROWS_AS(pjtune::ResultStore("/proc/no-such-dir/results.jsonl"), std::runtime_error);
  }

  TEST_CASE("scripts/merge_profile.py replaces same-bucket entries, appends new ones, keeps one entry a line") {
    TempDir dir;
    const std::string shipped = std::string(PAGEDJIT_CONFIGS_DIR) + "/nvidia-h100-80gb-hbm3.json";
    const Profile before = parse_profile(read_file(shipped), shipped);
    REQUIRE(before.entries.size() > 3);
    write_file(dir / "ship.json", read_file(shipped));
    json whole = json::parse(read_file(shipped));
    json changed = whole["entries"][2], added = whole["entries"][0];
    changed["time_ms"] = 0.1234;
    changed["config"]["stages"] = 3;
    changed["config"]["work_waves"] = 4;  // the device schedule's knob travels with its entry
    added["bucket"]["page_size"] = 128;   // a bucket the profile does not have
    write_file(dir / "partial.json", json{{"entries", json::array({changed, added})}}.dump());

    const pjtest::RunResult r =
        pjtest::run_command(fmt::format("python3 '{}/../scripts/merge_profile.py' '{}' '{}' 'merged in a test' 2>&1",
                                        PAGEDJIT_CONFIGS_DIR, dir / "ship.json", dir / "partial.json"));
    INFO(r.out);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("1 entries replaced, 1 added") != std::string::npos);
    const std::string text = read_file(dir / "ship.json");
    const Profile after = parse_profile(text, "merged");
    REQUIRE(after.entries.size() == before.entries.size() + 1);
    for (std::size_t i = 0; i < before.entries.size(); ++i) {
      CAPTURE(i);
      CHECK(same_config(
          after.entries[i].config,
          i == 2 ? KernelConfig{changed["config"]["tile_tokens"].get<int>(), changed["config"]["warps"].get<int>(), 3,
                                changed["config"]["chunk_tokens"].get<int>(), changed["config"]["v_dims"].get<int>(), 4}
                 : before.entries[i].config));
      CHECK(after.entries[i].time_ms == (i == 2 ? 0.1234 : before.entries[i].time_ms));
    }
    CHECK(after.entries.back().bucket.page_size == 128);
    CHECK(after.about.size() > before.about.size());
    CHECK(after.about.find("merged in a test") != std::string::npos);
    std::size_t lines = 0;  // one entry a line, as pagedjit-tune writes them
    for (std::size_t at = 0; (at = text.find("\n  {\"bucket\":", at)) != std::string::npos; ++at) ++lines;
    CHECK(lines == after.entries.size());
  }

#ifdef PAGEDJIT_TUNE_TOOL
  TEST_CASE("pagedjit-tune --check validates profiles without a GPU") {
    TempDir dir;
    const RunResult ok = run_tool("--check '" + kExamplePath + "'");
    CAPTURE(ok.out);
    CHECK(ok.status == 0);
    CHECK(ok.out.find("ok: schema 1, 5 entries for NVIDIA H100 80GB HBM3") != std::string::npos);
    CHECK(ok.out.find("within the limits of NVIDIA H100 80GB HBM3") != std::string::npos);

    json bad = example_json();
    bad["entries"][2]["bucket"]["page_size"] = 3;
    write_file(dir / "bad.json", bad.dump());
    json big = example_json();
    big["entries"][1]["config"] = {{"tile_tokens", 256}, {"warps", 8}, {"stages", 8}};  // valid schema, too big
    write_file(dir / "big.json", big.dump());
    write_file(dir / "trunc.json", example_text().substr(0, 300));
    const RunResult r = run_tool(fmt::format("--check '{}' '{}' '{}' '{}' '{}'", kExamplePath, dir / "bad.json",
                                             dir / "big.json", dir / "trunc.json", dir / "nope.json"));
    CAPTURE(r.out);
    CHECK(r.status == 1);
    CHECK(count(r.out, ": ok: ") == 1);
    CHECK(count(r.out, "INVALID") == 4);
    CHECK(r.out.find((dir / "bad.json") + "#/entries/2/bucket/page_size': expected a power of two") !=
          std::string::npos);
    CHECK(r.out.find((dir / "big.json") + "#/entries/1/config': tile=256 warps=8 stages=8") != std::string::npos);
    CHECK(r.out.find("shared memory") != std::string::npos);
    CHECK(r.out.find("invalid JSON") != std::string::npos);
    CHECK(r.out.find("nope.json': expected a readable profile file") != std::string::npos);
    CHECK(run_tool("--check").status == 2);
  }

  TEST_CASE("pagedjit-tune --dry-run lists buckets, candidates and pruned configurations without a GPU") {
    const RunResult r = run_tool("--dry-run --only l8b_b64_c4k,d256_b32_c4k,l8b_b1_c128k");
    CAPTURE(r.out);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("for NVIDIA H100 80GB HBM3 (sm_90a") != std::string::npos);
    CHECK(r.out.find("bucket     bf16/bf16 d128 p16 blocks_heads g4 q1 b49-96 ctx3073-6144") != std::string::npos);
    CHECK(r.out.find("bucket     bf16/bf16 d128 p16 blocks_heads g4 q1 b1 ctx98305-196608") != std::string::npos);
    CHECK(r.out.find("PRUNED tile=128 warps=4 stages=4 chunk=0 dv=0: needs 285952 bytes of shared memory") !=
          std::string::npos);
    CHECK(r.out.find("64/4/3") != std::string::npos);
    CHECK(r.out.find("128/2/2 dv128") != std::string::npos);                       // half the output dims for d256
    CHECK(r.out.find("512 1024 1536 2048 4096 8192 16384") != std::string::npos);  // 128k context
    // The batches take the device schedule: their phase 2 varies its waves.
    CHECK(count(r.out, "3 fastest x 5 work_waves (device schedule): 2 3 4 6 8") == 2);
    CHECK(count(r.out, "partition lengths") == 1);
    CHECK(r.out.find("total: 3 problems in 3 buckets") != std::string::npos);
    const RunResult h200r = run_tool("--dry-run --gpu h200 --only mha_b32_c2k");
    CHECK(h200r.status == 0);
    CHECK(h200r.out.find("for NVIDIA H200 (sm_90a") != std::string::npos);

    TempDir dir;
    write_file(dir / "dup.json",
               R"({"cases": [{"name": "a", "batch": 64, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "ctx": 4096},
                             {"name": "b", "batch": 60, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "ctx": 5000}]})");
    const RunResult dup = run_tool("--dry-run --problems '" + dir / "dup.json" + "'");
    CHECK(dup.status == 2);
    CHECK(dup.out.find("same bucket") != std::string::npos);
    write_file(dir / "forced.json",
               R"({"cases": [{"name": "a", "batch": 64, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "ctx": 4096,
                              "tile": 64, "warps": 4, "stages": 3}]})");
    const RunResult forced = run_tool("--dry-run --problems '" + dir / "forced.json" + "'");
    CHECK(forced.status == 2);
    CHECK(forced.out.find("what the tuner chooses") != std::string::npos);
    CHECK(run_tool("--bogus").status == 2);
    if (!pjtest::has_gpu()) {
      const RunResult none = run_tool("--problems '" + dir / "forced.json" + "'");
      CHECK(none.status == 2);
      CHECK(none.out.find("no GPU") != std::string::npos);
    }
  }
#endif
}
