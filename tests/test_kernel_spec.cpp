// KernelSpec: one struct gives the name expression and the key.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "jit/kernel_spec.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/version.hpp"
#include "pj_params.cuh"

using namespace pagedjit;
using jit::KernelSpec;

namespace {
KernelSpec decode_spec() {
  KernelSpec s;
  s.q_dtype = DType::bf16;
  s.kv_dtype = DType::bf16;
  s.out_dtype = DType::f16;
  s.head_dim = 128;
  s.v_dims = 128;
  s.tile_tokens = 64;
  s.warps = 4;
  s.stages = 3;
  s.compute = jit::Compute::mma;
  s.arch = "sm_90a";
  return s;
}
}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("kernel spec: name expression carries every template parameter") {
    CHECK(
        decode_spec().name_expression() ==
        "pj::paged_decode<pj::bf16, pj::bf16, pj::f16, 128, 128, 64, 4, 3, true, pj::Merge::none, pj::Schedule::host, "
        "-1, 0, 0>");
    KernelSpec s = decode_spec();
    s.kv_dtype = DType::e4m3;
    s.merge = jit::Merge::global;
    CHECK(s.name_expression() ==
          "pj::paged_decode<pj::bf16, pj::e4m3, pj::f16, 128, 128, 64, 4, 3, true, pj::Merge::global, "
          "pj::Schedule::host, -1, 0, 0>");
    s.merge = jit::Merge::cluster;
    CHECK(s.name_expression().find(", true, pj::Merge::cluster, pj::Schedule::host, -1, 0, 0>") != std::string::npos);
    // Compiled-in launch values (pj::DecodeConsts): page shift, group, splits.
    s.page_shift = 4, s.group = 7, s.splits = 3;
    CHECK(s.name_expression().find(", pj::Merge::cluster, pj::Schedule::host, 4, 7, 3>") != std::string::npos);
  }

  TEST_CASE("kernel spec: every field that changes the binary changes the key") {
    std::set<std::string> keys;
    const KernelSpec b = decode_spec();
    keys.insert(b.key("H", "13.0"));
    auto add = [&](KernelSpec s) { CHECK(keys.insert(s.key("H", "13.0")).second); };
    KernelSpec s = b;
    s.q_dtype = s.kv_dtype = DType::f16, add(s);
    s = b, s.kv_dtype = DType::e4m3, add(s);
    s = b, s.kv_dtype = DType::e5m2, add(s);
    s = b, s.out_dtype = DType::f32, add(s);
    s = b, s.head_dim = 64, add(s);
    s = b, s.tile_tokens = 32, add(s);
    s = b, s.v_dims = 64, add(s);
    s = b, s.warps = 2, s.tile_tokens = 64, add(s);
    s = b, s.stages = 2, add(s);
    s = b, s.compute = jit::Compute::simt, add(s);
    s = b, s.merge = jit::Merge::global, add(s);
    s = b, s.merge = jit::Merge::cluster, add(s);
    s = b, s.merge = jit::Merge::global, s.schedule = jit::Schedule::device, add(s);
    s = b, s.arch = "sm_80", add(s);
    s = b, s.page_shift = 4, add(s);
    s = b, s.page_shift = 5, add(s);
    s = b, s.group = 4, add(s);
    s = b, s.group = 7, add(s);
    s = b, s.splits = 1, add(s);
    s = b, s.merge = jit::Merge::global, s.splits = 2, add(s);
    s = b, s.merge = jit::Merge::global, s.splits = 3, add(s);
    CHECK(keys.insert(b.key("other-sources", "13.0")).second);
    CHECK(keys.insert(b.key("H", "13.1")).second);
  }

  TEST_CASE("kernel spec: key text holds versions, arch, options, sources and NVRTC version") {
    const std::string k = decode_spec().key("abc123", "13.0");
    CHECK(k.find("pagedjit-cache-v") == 0);
    CHECK(k.find(std::string("|pagedjit=") + kVersion + "|") != std::string::npos);
    CHECK(k.find("arch=sm_90a") != std::string::npos);
    CHECK(k.find("--gpu-architecture=sm_90a") != std::string::npos);
    CHECK(k.find("sources=abc123") != std::string::npos);
    CHECK(k.find("nvrtc=13.0") != std::string::npos);
    CHECK(k.find(decode_spec().name_expression()) != std::string::npos);
  }

  TEST_CASE("kernel spec: equal specs compare equal, different ones order") {
    KernelSpec a = decode_spec(), b = decode_spec();
    CHECK(a == b);
    b.stages = 2;
    CHECK_FALSE(a == b);
    CHECK((a < b) != (b < a));
    for (auto set : {+[](KernelSpec& k) { k.page_shift = 4; }, +[](KernelSpec& k) { k.group = 4; },
                     +[](KernelSpec& k) { k.splits = 1; }}) {
      b = decode_spec();
      set(b);
      CHECK_FALSE(a == b);
      CHECK((a < b) != (b < a));
    }
  }

  TEST_CASE("kernel spec: compiled-in launch values: the default is none, readable() names them") {
    const KernelSpec d = decode_spec();
    CHECK(d.page_shift == pj::kUnsetPageShift);
    CHECK(d.group == pj::kUnsetGroup);
    CHECK(d.splits == pj::kUnsetSplits);
    CHECK(d.readable() == "decode bf16->fp16 d128/128 tile64 w4 s3 mma merge-none sm_90a");
    KernelSpec s = d;
    s.page_shift = 4, s.group = 8, s.splits = 1;
    CHECK(s.readable() == "decode bf16->fp16 d128/128 tile64 w4 s3 mma merge-none fixed: page16 group8 splits1 sm_90a");
    s = d, s.group = 7;
    CHECK(s.readable() == "decode bf16->fp16 d128/128 tile64 w4 s3 mma merge-none fixed: group7 sm_90a");
  }

  TEST_CASE("kernel spec: check() refuses compiled-in launch values the template cannot take") {
    KernelSpec s = decode_spec();
    s.page_shift = 0, s.group = 1, s.splits = 1;
    CHECK_NOTHROW(s.check());
    s.page_shift = 30;
    CHECK_NOTHROW(s.check());
    s.page_shift = 31;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.page_shift = -2;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.group = -1;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.splits = -1;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    // One partition exactly when unmerged.
    s = decode_spec(), s.splits = 2;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    for (jit::Merge m : {jit::Merge::global, jit::Merge::cluster}) {
      s.merge = m, s.splits = 1;
      CHECK_THROWS_AS(s.check(), InvalidArgument);
      s.splits = 5;
      CHECK_NOTHROW(s.check());
    }
    // The device schedule plans its partitions in the kernel: no fixed count.
    s = decode_spec(), s.merge = jit::Merge::global, s.schedule = jit::Schedule::device;
    s.page_shift = 4, s.group = 4;
    CHECK_NOTHROW(s.check());
    s.splits = 2;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    // Only the decode kernel has them.
    for (jit::KernelKind kind : {jit::KernelKind::merge, jit::KernelKind::append, jit::KernelKind::prefill}) {
      s = decode_spec(), s.kind = kind;
      if (kind == jit::KernelKind::prefill) s.tile_tokens = 64, s.warps = 4, s.stages = 2;
      CHECK_NOTHROW(s.check());
      s.group = 4;
      CHECK_THROWS_AS(s.check(), InvalidArgument);
    }
  }

  TEST_CASE("kernel spec: check() refuses what the template cannot instantiate") {
    KernelSpec s = decode_spec();
    s.head_dim = 72;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.tile_tokens = 48;  // not a multiple of 16 * 4 warps
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.v_dims = 136;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.tile_tokens = 32;  // 4 warps on 2 slices: warp pairs split the 128 dims
    CHECK_NOTHROW(s.check());
    s.v_dims = 80;  // 40 dims a warp: not whole 16-dim steps
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.tile_tokens = 32, s.q_dtype = s.kv_dtype = DType::f32, s.compute = jit::Compute::simt;
    CHECK_THROWS_AS(s.check(), InvalidArgument);  // no dim split on the simt path
    s.warps = 2;
    CHECK_NOTHROW(s.check());
    s = decode_spec(), s.stages = 1;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.kv_dtype = DType::f32;  // kv must match the query (or be fp8)
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s.q_dtype = DType::f32;  // mma has no fp32 path
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s.compute = jit::Compute::simt;
    CHECK_NOTHROW(s.check());
    s = decode_spec(), s.kv_dtype = DType::e4m3;
    CHECK_NOTHROW(s.check());
    s.compute = jit::Compute::simt;  // fp8 needs the MMA path
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.q_dtype = DType::f32, s.kv_dtype = DType::e5m2, s.compute = jit::Compute::simt;
    CHECK_THROWS_AS(s.check(), InvalidArgument);  // fp8 needs an fp16/bf16 query
    s = decode_spec(), s.q_dtype = DType::e4m3, s.kv_dtype = DType::e4m3;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s = decode_spec(), s.merge = jit::Merge::cluster;  // clusters: sm_90 and newer
    CHECK_NOTHROW(s.check());
    s.arch = "sm_100a";
    CHECK_NOTHROW(s.check());
    s.arch = "sm_89";
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s.merge = jit::Merge::global;
    CHECK_NOTHROW(s.check());
  }
}
