// NVRTC compiles every specialization the planner can pick, without a GPU.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "attention/planner.hpp"
#include "jit/kernel_cache.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "jit/source_set.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "shapes.hpp"
#include "tuning/profile.hpp"
#include "tuning/registry.hpp"

using namespace pagedjit;

namespace {
// Under AddressSanitizer (CI's second pass of the CPU suite) the 32-kernel
// NVRTC test below takes half a minute more and checks nothing new: NVRTC is
// not instrumented, and the parser has its own test.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif
#else
constexpr bool kUnderAsan = false;
#endif
ProblemShape shape(DType dt, int head_dim, int heads, int kv_heads) {
  return pjtest::test_shape(4, heads, kv_heads, 1024, head_dim, dt);
}
}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("compile: every dtype and head_dim of the planner, for sm_90a") {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    for (DType dt : {DType::f16, DType::bf16, DType::f32})
      for (int d : {64, 128, 256, 320, 512}) {
        CAPTURE(dtype_name(dt));
        CAPTURE(d);
        const attention::Plan plan = attention::make_plan(shape(dt, d, 8, 2), {}, h100);
        for (const jit::KernelSpec& spec : {plan.decode}) {
          const auto k = jit::KernelCache::global().get(spec);
          CHECK(k->binary.size() > 1000);
          CHECK_FALSE(k->is_ptx);
          CHECK(k->binary.compare(0, 4,
                                  "\x7f"
                                  "ELF") == 0);
          CHECK(k->lowered_name.rfind("_ZN2pj", 0) == 0);
          CHECK(k->key == spec.key(jit::SourceSet::current().hash, jit::nvrtc_version()));
        }
      }
  }

  TEST_CASE("compile: the memory cache compiles a key once") {
    jit::KernelSpec s = attention::make_plan(shape(DType::bf16, 64, 8, 8), {}, DeviceInfo::h100_sxm()).decode;
    const auto a = jit::KernelCache::global().get(s);
    const auto before = jit::KernelCache::global().stats();
    const auto b = jit::KernelCache::global().get(s);
    CHECK(a.get() == b.get());
    CHECK(jit::KernelCache::global().stats().compiles == before.compiles);
  }

  TEST_CASE("compile: fp32 uses the SIMT kernel, fp16/bf16 the tensor-core one") {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    CHECK(attention::make_plan(shape(DType::f32, 128, 8, 8), {}, h100).decode.compute == jit::Compute::simt);
    CHECK(attention::make_plan(shape(DType::f16, 128, 8, 8), {}, h100).decode.compute == jit::Compute::mma);
  }

  TEST_CASE("compile: an arch newer than NVRTC knows falls back to PTX of the newest") {
    const auto archs = jit::nvrtc_supported_archs();
    REQUIRE_FALSE(archs.empty());
    CHECK(jit::clamp_arch("sm_90a") == "sm_90a");
    CHECK(jit::clamp_arch("sm_990") == fmt::format("compute_{}", archs.back()));
    CHECK_THROWS_AS(jit::clamp_arch("sm_10"), InvalidArgument);
  }

  TEST_CASE("compile: a broken template gives a CompileError with log, options and source lines") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / fmt::format("pagedjit-broken-{}", ::getpid());
    fs::create_directories(dir);
    {
      std::ofstream f(dir / "pj_ptx.cuh");
      f << "#pragma once\nnamespace pj {\nthis is not cuda;\n}\n";
    }
    const jit::SourceSet broken = jit::SourceSet::from_directory(dir.string());
    CHECK(broken.hash != jit::SourceSet::embedded().hash);
    jit::KernelSpec s = attention::make_plan(shape(DType::bf16, 64, 8, 8), {}, DeviceInfo::h100_sxm()).decode;
    try {
      jit::compile_kernel(s, broken);
      FAIL("a broken template compiled");
    } catch (const CompileError& e) {
      CHECK(e.code() == ErrorCode::compile_error);
      CHECK(e.log().find("pj_ptx.cuh(3)") != std::string::npos);
      CHECK(e.excerpt().find("this is not cuda") != std::string::npos);
      CHECK(e.options().front() == "--gpu-architecture=sm_90a");
    }
    // The process stays usable: the same kernel from the embedded sources compiles.
    CHECK_FALSE(jit::compile_kernel(s, jit::SourceSet::embedded()).binary.empty());
    fs::remove_all(dir);
  }
}

TEST_SUITE("cpu") {
  TEST_CASE("compile: ptxas resource reports are read per function, and an incomplete one is an error") {
    // A callee first (ptxas's order is not the source's), then the kernel.
    const std::string log =
        "ptxas info    : 66 bytes gmem\n"
        "ptxas info    : Function properties for _Z6helperv\n"
        "ptxas         .     40 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Compiling entry function '_Z1kv' for 'sm_90a'\n"
        "ptxas info    : Function properties for _Z1kv\n"
        "ptxas         .     24 bytes stack frame, 16 bytes spill stores, 8 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 64 bytes cumulative stack size, 16 bytes smem\n"
        "ptxas info    : Compile time = 300.000 ms\n";
    const jit::ResourceUsage u = jit::parse_resource_usage(log, "_Z1kv");
    CHECK(u.registers == 255);
    CHECK(u.stack_bytes == 64);  // with the callee's
    CHECK(u.spill_store_bytes == 16);
    CHECK(u.spill_load_bytes == 8);
    CHECK(u.uses_local_memory());
    const jit::ResourceUsage clean = jit::parse_resource_usage(
        "Function properties for k\n0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\nUsed 96 "
        "registers, used 1 barriers\n",
        "k");
    CHECK(clean.registers == 96);
    CHECK_FALSE(clean.uses_local_memory());
    CHECK_THROWS_AS(jit::parse_resource_usage(log, "_Z1k"), CompileError);  // a prefix of a name is not the name
    CHECK_THROWS_AS(jit::parse_resource_usage("ptxas info    : 66 bytes gmem", "k"), CompileError);
    CHECK_THROWS_AS(jit::parse_resource_usage("Function properties for k\nUsed 96 registers\n", "k"), CompileError);
  }

  // Issue 6: no spills and no local memory in the kernels of the shipped
  // profiles' entries and of the heuristic for fp16/bf16 queries with
  // fp16/bf16/fp8 caches at head_dim 64, 128 and 256.
  TEST_CASE("compile: the kernels of the shipped profiles and of the heuristic keep everything in registers" *
            doctest::skip(kUnderAsan)) {
    std::set<jit::KernelSpec> specs;
    for (const DeviceInfo& dev : {DeviceInfo::h100_sxm(), DeviceInfo::h200()}) {
      for (const auto& shipped : tuning::shipped_profiles()) {
        const tuning::Profile p = tuning::parse_profile(shipped.text, shipped.name);
        if (p.device.arch != dev.arch()) continue;
        for (const tuning::Entry& e : p.entries) {
          PagedAttentionOptions o;
          o.kernel_config = e.config;
          specs.insert(attention::make_plan(e.bucket.corner(false), o, dev).decode);
        }
      }
      for (DType dt : {DType::bf16, DType::f16})
        for (DType kv : {dt, DType::e4m3, DType::e5m2})
          for (int d : {64, 128, 256})
            for (int seqs : {1, 64}) {
              ProblemShape s = pjtest::test_shape(seqs, 32, 8, 4096, d, dt);
              s.kv_dtype = kv;
              specs.insert(attention::make_plan(s, {}, dev).decode);
            }
    }
    MESSAGE(specs.size() << " distinct kernels");
    CHECK(specs.size() >= 10);
    for (const jit::KernelSpec& spec : specs) {
      CAPTURE(spec.readable());
      const jit::ResourceUsage u = jit::resource_usage(spec, jit::SourceSet::current());
      CAPTURE(u.registers);
      CHECK(u.registers > 0);
      CHECK(u.registers <= 255);
      CHECK(u.stack_bytes == 0);
      CHECK(u.spill_store_bytes == 0);
      CHECK(u.spill_load_bytes == 0);
    }
  }

  // EngineOptions::specialize: kernels with the page shift, the group and
  // the host schedule's split count compiled in compile, and keep
  // everything in registers (four shapes: each compile costs seconds).
  TEST_CASE("compile: specialized decode kernels keep everything in registers" * doctest::skip(kUnderAsan)) {
    const DeviceInfo h100 = DeviceInfo::h100_sxm();
    KernelSpecialization all;
    all.page = all.group = all.splits = true;
    PagedAttentionOptions four, one;
    four.num_splits = 4, one.num_splits = 1;
    ProblemShape fp8 = pjtest::test_shape(1, 64, 8, 4096, 128, DType::bf16);  // group 8
    fp8.kv_dtype = DType::e4m3;
    const attention::Plan plans[] = {
        // the device schedule: page and group only
        attention::make_plan(pjtest::test_shape(64, 32, 8, 4096), {}, h100, nullptr, true, true, all),
        // the host schedule's heuristic split count, merged in global memory
        attention::make_plan(pjtest::test_shape(64, 32, 8, 8192), {}, h100, nullptr, true, false, all),
        // a cluster of 4 with group 7 at d256
        attention::make_plan(pjtest::test_shape(1, 56, 8, 4096, 256), four, h100, nullptr, true, true, all),
        // fp8, unsplit
        attention::make_plan(fp8, one, h100, nullptr, true, true, all),
    };
    CHECK(plans[0].decode.schedule == jit::Schedule::device);
    CHECK(plans[1].decode.merge == jit::Merge::global);
    CHECK(plans[1].decode.splits > 1);
    CHECK(plans[2].decode.merge == jit::Merge::cluster);
    CHECK(plans[2].decode.splits == 4);
    CHECK(plans[2].decode.group == 7);
    CHECK(plans[3].decode.merge == jit::Merge::none);
    CHECK(plans[3].decode.splits == 1);
    for (const attention::Plan& plan : plans) {
      const jit::KernelSpec& spec = plan.decode;
      CAPTURE(spec.readable());
      CHECK(spec.page_shift == 4);
      CHECK(spec.group > 0);
      const jit::ResourceUsage u = jit::resource_usage(spec, jit::SourceSet::current());
      CAPTURE(u.registers);
      CHECK(u.registers > 0);
      CHECK(u.registers <= 255);
      CHECK_FALSE(u.uses_local_memory());
    }
  }
}
