// NVRTC compiles every specialization the planner can pick, without a GPU.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "attention/planner.hpp"
#include "jit/kernel_cache.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "jit/source_set.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "shapes.hpp"

using namespace pagedjit;

namespace {
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
