// What the fuzz targets (tests/fuzz/) found, one test per bug, and
// a replay of their corpora (the seeds plus every input that once broke
// something) through the same bodies the fuzzers run. Built with sanitizers
// (scripts/sanitize.sh), a regression here aborts with the sanitizer's report.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../tools/common/cases.hpp"
#include "append_problem.hpp"
#include "attention/append.hpp"
#include "attention/planner.hpp"
#include "attention/validate.hpp"
#include "disk_entry.hpp"
#include "fuzz/harness.hpp"
#include "jit/disk_store.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/testing.hpp"
#include "small_problem.hpp"
#include "temp_files.hpp"

using namespace pagedjit;
namespace fs = std::filesystem;

namespace {

constexpr std::int64_t kI32Max = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();

std::vector<fs::path> corpus(const std::string& target) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(PAGEDJIT_FUZZ_CORPUS) / target))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

template <class F>
void replay(const std::string& target, F&& run) {
  const auto files = corpus(target);
  CHECK(files.size() >= 5);
  for (const auto& path : files) {
    CAPTURE(path.string());
    const std::string bytes = pjtest::read_file(path);
    CHECK_NOTHROW(run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
  }
}

// A valid call on host memory (validation never dereferences the pointers).
testing::HostProblem& problem() {
  static testing::HostProblem p(pjtest::small_problem_config());
  return p;
}

// A made-up shape for the planner, as validate_call would pass it.
ProblemShape shape(int seqs, int heads, int kv_heads, int head_dim) {
  ProblemShape s;
  s.num_seqs = seqs;
  s.num_heads = heads;
  s.num_kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.page_size = 16;
  s.max_blocks = 64;
  s.num_blocks = 1024;
  s.max_context_len = 1024;
  return s;
}

// What the planner owes a shape: a plan with sane sizes (a refusal fails the
// test). Under UBSan the bugs below abort inside make_plan instead.
void expect_plan(const ProblemShape& s, const PagedAttentionOptions& o) {
  const LaunchInfo plan = plan_problem(s, o, DeviceInfo::h100_sxm());
  CHECK(plan.num_splits >= 1);
  CHECK(plan.grid[0] >= 1);
  CHECK(plan.workspace_bytes >= 0);
  CHECK(std::int64_t(plan.heads_per_cta) * plan.head_chunks >= s.group());
}

// Or, past what one launch can hold, NotSupported naming the argument at
// fault and saying why (not a plan computed from overflowed sizes).
void expect_not_supported(const ProblemShape& s, const PagedAttentionOptions& o, const std::string& argument,
                          const std::string& why) {
  try {
    plan_problem(s, o, DeviceInfo::h100_sxm());
    FAIL("planned");
  } catch (const NotSupported& e) {
    CHECK(e.argument() == argument);
    CHECK(std::string(e.what()).find(why) != std::string::npos);
  }
}

jit::DiskStoreOptions quiet(const std::string& dir) {
  jit::DiskStoreOptions o;
  o.dir = dir;
  o.warnings = false;
  o.use_locks = false;
  return o;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("fuzz: the corpora replay cleanly through the fuzz targets' bodies") {
    SUBCASE("validate") {
      replay("fuzz_validate", pjfuzz::validate_one);
    }
    SUBCASE("views through the C API") {
      replay("fuzz_views", pjfuzz::views_one);
    }
    SUBCASE("disk cache") {
      replay("fuzz_disk_cache", pjfuzz::disk_cache_one);
    }
    SUBCASE("case string") {
      replay("fuzz_case_string", pjfuzz::case_string_one);
    }
    SUBCASE("profile") {
      replay("fuzz_profile", pjfuzz::profile_one);
    }
    SUBCASE("ragged step and append through the C API") {
      replay("fuzz_ragged", pjfuzz::ragged_one);
    }
  }

  TEST_CASE("fuzz regression: a TensorView rank outside [0, 4] is refused, not read past the arrays") {
    // validate_call described the tensor in its error message, and describe()
    // walked `rank` entries of 4-element arrays.
    for (const int rank : {5, 7, 100, std::numeric_limits<int>::max(), -1, std::numeric_limits<int>::min()}) {
      CAPTURE(rank);
      PagedAttentionArgs a = problem().args();
      a.query.rank = rank;
      CHECK_THROWS_AS(validate_call(a, {}), InvalidArgument);
      a = problem().args();
      a.block_tables.rank = rank;
      CHECK_THROWS_AS(validate_call(a, {}), InvalidArgument);
      PagedAttentionOptions o;
      o.return_lse = true;
      a = problem().args();
      a.lse.rank = rank;
      CHECK_THROWS_AS(validate_call(a, o), InvalidArgument);

      TensorView t = a.query;
      t.rank = rank;
      CHECK(t.describe().find("invalid rank") != std::string::npos);
      CHECK(t.numel() == 0);
      CHECK_FALSE(t.is_contiguous());
    }
  }

  TEST_CASE("fuzz regression: TensorView's constructor and numel() with sizes whose product overflows") {
    // The row-major strides were computed with signed multiplication.
    const std::int64_t big = std::int64_t(1) << 40;
    TensorView q(problem().args().query.data, DType::bf16, {big, big, 64});
    CHECK(q.strides[2] == 1);
    CHECK(q.strides[1] == 64);
    (void)q.numel();
    (void)q.is_contiguous();
    PagedAttentionArgs a = problem().args();
    a.query = q;
    CHECK_THROWS_AS(validate_call(a, {}), InvalidArgument);  // num_seqs > 65535
  }

  TEST_CASE("fuzz regression: strides near 2^63 are checked for 16-byte alignment without overflowing") {
    // stride * sizeof(element) overflowed int64 before the sign check.
    for (const std::int64_t stride : {kI64Max, kI64Max / 2 + 1, kI64Max - 7, std::int64_t(7156051642463848288)}) {
      CAPTURE(stride);
      PagedAttentionArgs a = problem().args();
      a.key_cache.strides[1] = stride;
      a.value_cache.strides[1] = stride;
      try {
        validate_call(a, {});  // misaligned, or (a multiple of 8 bf16 elements) an extent past 64 bits
        FAIL("accepted a head stride of ", stride);
      } catch (const InvalidArgument& e) {
        CHECK(e.argument() == "key_cache");
      }
    }
  }

  TEST_CASE("fuzz regression: cache metadata numbers out of an integer's range are malformed, not converted") {
    // "created": 1e300 was converted to int64 (undefined behaviour in nlohmann::json's get<>).
    char tmpl[] = "/tmp/pagedjit-fuzz-regress-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    jit::DiskStore store(quiet(dir));
    const std::string key = "fuzz regression key";
    struct Case {
      const char* meta;
      bool ok;
    };
    for (const Case& c : {
             Case{R"({"lowered_name": "_Z1fv", "is_ptx": false, "created": 1e300})", false},
             Case{R"({"lowered_name": "_Z1fv", "is_ptx": false, "created": -1e300})", false},
             Case{R"({"lowered_name": "_Z1fv", "is_ptx": false, "created": 9223372036854775808.0})", false},
             Case{R"({"lowered_name": "_Z1fv", "is_ptx": false, "nvrtc_log_bytes": -1.5})", false},
             Case{R"({"lowered_name": "_Z1fv", "is_ptx": false, "nvrtc_log_bytes": 1.8446744073709552e19})", false},
             Case{R"({"lowered_name": "_Z1fv", "is_ptx": false, "created": 1735689600.0, "nvrtc_log_bytes": 12.0})",
                  true},
             Case{R"({"lowered_name": "_Z1fv", "is_ptx": false, "created": -5, "nvrtc_log_bytes": 0})", true},
         }) {
      CAPTURE(c.meta);
      const std::string path = store.entry_path(key);
      {
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        const std::string bytes = pjtest::craft_entry(key, c.meta, "payload");
        f.write(bytes.data(), std::streamsize(bytes.size()));
      }
      const auto hit = store.load(key);
      CHECK(hit.has_value() == c.ok);
      const jit::EntryInfo info = jit::DiskStore::read_entry(path, &key, nullptr, true);
      CHECK(info.status == (c.ok ? jit::EntryStatus::ok : jit::EntryStatus::bad_metadata));
      if (c.ok) CHECK(hit->binary == "payload");
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  // ---- bugs fuzz_ragged found in append_kv, fixed ----

  TEST_CASE("fuzz: fixed validation bug: append caches at different addresses sharing elements were accepted") {
    // append_validate.cpp refused only key_cache.data == value_cache.data, so two caches interleaved wrongly in
    // one buffer (another page stride, or a value cache a row off) had both writes land on the same elements.
    // Corpus: regress-append-caches-sharing-elements (page strides 64644 and 65536, 131072 bytes apart).
    pjtest::HostAppend h(pjtest::AppendConfig{});  // bf16 [blocks, 2 heads, 16 slots, 64] caches
    const AppendKvArgs base = h.host_args();
    const std::int64_t block = base.key_cache.strides[0], blocks = base.key_cache.shape[0];
    std::vector<std::uint16_t> buffer(std::size_t(2 * block * blocks + 4096));
    // The value cache `offset` elements after the key cache, with page strides of two blocks (+ `v_extra`).
    const auto interleaved = [&](std::int64_t offset, std::int64_t v_extra) {
      AppendKvArgs a = base;
      a.key_cache.data = buffer.data();
      a.value_cache.data = buffer.data() + offset;
      a.key_cache.strides[0] = 2 * block;
      a.value_cache.strides[0] = 2 * block + v_extra;
      return a;
    };
    CHECK_NOTHROW(attention::validate_append(interleaved(block, 0)));  // [blocks, 2, heads, slots, dim]: fine
    for (const auto& [offset, v_extra] : {std::pair<std::int64_t, std::int64_t>{64, 0},  // one slot off
                                          {8, 0},                                        // 16 bytes off
                                          {block + 64, 0},
                                          {block, -8},  // the value cache's pages drift into the key cache's
                                          {block / 2, block / 2}}) {
      CAPTURE(offset);
      CAPTURE(v_extra);
      try {
        attention::validate_append(interleaved(offset, v_extra));
        FAIL("accepted caches sharing elements");
      } catch (const InvalidArgument& e) {
        CHECK(e.argument() == "value_cache");
        CHECK(std::string(e.what()).find("sharing no element with key_cache") != std::string::npos);
      }
    }
  }

  TEST_CASE("fuzz: fixed validation bug: append checked the caches' self-overlap before their extent") {
    // append_validate.cpp memory(): expect_no_self_overlap ran before view_bytes, multiplying a head stride of
    // 2^62 by 7 (8 KV heads) in int64 (UBSan: signed overflow). Corpus: regress-append-cache-stride-overflow.
    pjtest::AppendConfig c;
    c.num_kv_heads = 8;
    pjtest::HostAppend h(c);
    for (const std::int64_t stride : {std::int64_t(1) << 62, std::int64_t(1) << 61, kI64Max / 8 * 8}) {
      CAPTURE(stride);
      AppendKvArgs a = h.host_args();
      a.key_cache.strides[1] = a.value_cache.strides[1] = stride;
      try {
        attention::validate_append(a);
        FAIL("accepted a cache extent past 64 bits");
      } catch (const InvalidArgument& e) {
        CHECK(e.argument() == "key_cache");
        CHECK(std::string(e.what()).find("extent fits in 64 bits") != std::string::npos);
      }
    }
  }

  TEST_CASE("fuzz: fixed launch bug: append's int row index passed 2^31 near 2^31 tokens") {
    // append.cpp append_launch: rows per CTA = 256 / (head_dim * size / 16), 21 for bf16 head_dim 96; with
    // 2^31 - 1 tokens the last CTA's blockIdx.x * 21 + threadIdx.y reached 2147483666 in the kernel's int (a
    // negative row read keys before their start). Corpus: regress-append-row-index-past-int.
    pjtest::HostAppend h(pjtest::AppendConfig{});
    const AppendKvArgs a = h.host_args();
    for (const int head_dim : {96, 48, 80, 112, 208, 512, 16}) {
      for (const std::int64_t tokens :
           {kI32Max, kI32Max - 20, kI32Max - 255, std::int64_t(1) << 30, std::int64_t(1000), std::int64_t(1)}) {
        CAPTURE(head_dim);
        CAPTURE(tokens);
        attention::AppendShape s;
        s.total_tokens = tokens;
        s.num_seqs = 3, s.num_kv_heads = 2, s.head_dim = head_dim;
        s.page_size = 16, s.num_blocks = 8, s.max_blocks = 4;
        const attention::AppendLaunch l = attention::append_launch(a, s);
        const std::int64_t rows = l.block[1];
        CHECK(std::int64_t(l.block[0]) * 16 == std::int64_t(head_dim) * 2);  // a thread per 16 bytes of a row
        CHECK(std::int64_t(l.grid[0]) * rows >= tokens);                     // every row
        CHECK(std::int64_t(l.grid[0]) * rows - 1 <= kI32Max);                // in int
        if (tokens == 1000) CHECK(rows == 256 / (head_dim / 8));             // as before away from 2^31
      }
    }
  }

  // ---- bugs found in the planner and the bench parser, fixed ----

  TEST_CASE("fuzz: fixed planner bug: kernel_config.chunk_tokens near 2^31 overflows rounding to the tile") {
    // planner.cpp use_chunk: (chunk + cfg.tile - 1) in int. Validation accepts any chunk_tokens >= 0.
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{};
    o.kernel_config->chunk_tokens = int(kI32Max);
    PagedAttentionArgs a = problem().args();
    expect_plan(validate_call(a, o), o);
  }

  TEST_CASE("fuzz: fixed validation bug: the message refusing warps near 2^31 computed 16 * warps in int") {
    // kernel_spec.cpp tile_shape_rule: 16 * 2107892605 seen; it described the rejected value.
    for (const int warps : {2107892605, int(kI32Max), std::numeric_limits<int>::min(), -1, 0, 9}) {
      CAPTURE(warps);
      PagedAttentionOptions o;
      o.kernel_config = KernelConfig{};
      o.kernel_config->tile_tokens = 16;
      o.kernel_config->warps = warps;
      o.kernel_config->stages = 2;
      PagedAttentionArgs a = problem().args();
      try {
        validate_call(a, o);
        FAIL("validate_call accepted warps ", warps);
      } catch (const InvalidArgument& e) {
        const std::string msg = e.what();
        CHECK(msg.find("warps in 1..8") != std::string::npos);
        CHECK(msg.find("16 * warps = ") == std::string::npos);  // no product of a rejected warps
      }
    }
  }

  TEST_CASE("fuzz: fixed planner bug: num_heads near 2^31 with one KV head overflows the head chunking") {
    // planner.cpp: group + kTileRows - 1 and group + head_chunks - 1 in int (2107892605 + 131743288 seen).
    expect_plan(shape(1, int(kI32Max), 1, 64), {});
    expect_plan(shape(1, 2107892605, 1, 64), {});
  }

  TEST_CASE("fuzz: fixed planner bug: grid[0] = num_kv_heads * head_chunks * dv_chunks overflows int") {
    expect_not_supported(shape(1, 1 << 30, 1 << 30, 512), {}, "query", "more CTAs than a grid holds");  // dv_chunks 2
    PagedAttentionOptions o;
    o.kernel_config = KernelConfig{};
    o.kernel_config->v_dims = 16;  // dv_chunks 32
    expect_not_supported(shape(1, 1 << 27, 1 << 27, 512), o, "query", "more CTAs than a grid holds");
  }

  TEST_CASE("fuzz: fixed planner bug: the workspace size overflows int64 for huge split problems") {
    // rows * head_dim * 4 with rows = num_seqs * num_heads * num_splits.
    PagedAttentionOptions o;
    o.num_splits = 65535;
    expect_not_supported(shape(65535, 1 << 24, 1 << 20, 512), o, "options.num_splits", "workspace");
  }

  TEST_CASE("fuzz: fixed bench bug: a k suffix on 16-18 digits overflows parse_int") {
    // tools/common/cases.cpp parse_int: std::stoll(digits) * 1024 before the range check.
    try {
      pjbench::parse_case_string("batch=88888888888888888K,q_heads=8,kv_heads=2,head_dim=64,ctx=100");
      FAIL("accepted");
    } catch (const pjbench::CaseError& e) {
      CHECK(e.field() == "batch");
    }
    CHECK_THROWS_AS(pjbench::parse_case_string("batch=1,q_heads=8,kv_heads=2,head_dim=64,ctx=999999999999999999k"),
                    pjbench::CaseError);
  }
}
