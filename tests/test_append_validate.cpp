// append_kv without a GPU: one test per validation rule (the right error,
// naming the argument), the CPU reference on a hand example, the kernel
// spec and NVRTC compiles of every dtype pair.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "append_problem.hpp"
#include "attention/append.hpp"
#include "jit/kernel_cache.hpp"
#include "jit/kernel_spec.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/pagedjit.h"
#include "pagedjit/reference.hpp"

using namespace pagedjit;

namespace {

pjtest::HostAppend& base() {
  static pjtest::HostAppend p([] {
    pjtest::AppendConfig c;
    c.kv = DType::e4m3;  // fp8 with per-head scales: every argument is present
    c.kv_scales = 2;
    return c;
  }());
  return p;
}

AppendKvArgs base_args() {
  AppendKvArgs a = base().host_args();
  static std::int32_t count = 3;
  a.seq_count = TensorView(&count, DType::i32, {1});
  return a;
}

template <class E>
void expect_error(const std::function<void(AppendKvArgs&)>& mutate, const std::string& arg) {
  AppendKvArgs a = base_args();
  mutate(a);
  try {
    attention::validate_append(a);
    FAIL("no error for argument ", arg);
  } catch (const E& e) {
    CHECK(e.argument() == arg);
    CHECK(std::string(e.what()).find(arg) != std::string::npos);
  }
}

pagedjit_tensor to_c(const TensorView& t) {
  pagedjit_tensor r{};
  r.data = t.data;
  r.dtype = int32_t(t.dtype);
  r.rank = t.rank;
  for (int i = 0; i < t.rank; ++i) r.shape[i] = t.shape[i], r.strides[i] = t.strides[i];
  return r;
}

pagedjit_append_args to_c(const AppendKvArgs& a) {
  pagedjit_append_args r{};
  r.keys = to_c(a.keys);
  r.values = to_c(a.values);
  r.query_start = to_c(a.query_start);
  r.context_lens = to_c(a.context_lens);
  r.block_tables = to_c(a.block_tables);
  r.key_cache = to_c(a.key_cache);
  r.value_cache = to_c(a.value_cache);
  r.layout = int32_t(a.layout);
  r.k_scale = to_c(a.k_scale);
  r.v_scale = to_c(a.v_scale);
  r.seq_count = to_c(a.seq_count);
  return r;
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("append validate: the baseline call is valid") {
    const attention::AppendShape s = attention::validate_append(base_args());
    CHECK(s.total_tokens == 8);
    CHECK(s.num_seqs == 3);
    CHECK(s.num_kv_heads == 2);
    CHECK(s.head_dim == 64);
    CHECK(s.page_size == 16);
    CHECK(s.kv_dtype == DType::e4m3);
    CHECK(s.src_dtype == DType::bf16);
    // Every layout and an empty call (no rows, or no sequences) are valid too.
    for (CacheLayout l : {CacheLayout::heads_blocks, CacheLayout::blocks_tokens}) {
      pjtest::AppendConfig c;
      c.layout = l;
      c.pad = 16;
      pjtest::HostAppend h(c);
      CHECK_NOTHROW(attention::validate_append(h.host_args()));
    }
    pjtest::AppendConfig c;
    c.q_lens = {0, 0};
    c.context_lens = {3, 0};
    pjtest::HostAppend empty(c);
    AppendKvArgs a = empty.host_args();
    a.keys.data = a.values.data = nullptr;  // never dereferenced
    CHECK(attention::validate_append(a).total_tokens == 0);
  }

  TEST_CASE("append validate: keys") {
    expect_error<InvalidArgument>([](auto& a) { a.keys.rank = 4; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.dtype = DType::i32; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.dtype = DType::e4m3; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.shape[2] = a.values.shape[2] = 72; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.shape[2] = a.values.shape[2] = 528; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.shape[1] = a.values.shape[1] = 0; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.shape[0] = -1; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.data = nullptr; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.strides[2] = 2; }, "keys");
    expect_error<InvalidArgument>([](auto& a) { a.keys.data = static_cast<char*>(a.keys.data) + 2; },
                                  "keys");  // 16-byte alignment
  }

  TEST_CASE("append validate: values") {
    expect_error<InvalidArgument>([](auto& a) { a.values.shape[0] -= 1; }, "values");
    expect_error<InvalidArgument>([](auto& a) { a.values.dtype = DType::f16; }, "values");
    expect_error<InvalidArgument>([](auto& a) { a.values.data = nullptr; }, "values");
    expect_error<InvalidArgument>([](auto& a) { a.values.strides[1] = 65; }, "values");
  }

  TEST_CASE("append validate: caches") {
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.rank = 3; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.dtype = a.value_cache.dtype = DType::f16; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.value_cache.dtype = DType::e5m2; }, "value_cache");
    expect_error<InvalidArgument>([](auto& a) { a.value_cache.shape[0] -= 1; }, "value_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.shape[1] = a.value_cache.shape[1] = 1; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.shape[2] = a.value_cache.shape[2] = 12; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.shape[2] = a.value_cache.shape[2] = 512; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.shape[3] = a.value_cache.shape[3] = 128; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.shape[0] = a.value_cache.shape[0] = 0; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.data = nullptr; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.value_cache.strides[3] = 2; }, "value_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.data = static_cast<char*>(a.key_cache.data) + 8; },
                                  "key_cache");
    expect_error<NotSupported>([](auto& a) { a.key_cache.strides[0] = std::int64_t(1) << 31; }, "key_cache");
    // Written elements may not share memory with each other or with any input.
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.strides[1] = 16; }, "key_cache");
    expect_error<InvalidArgument>([](auto& a) { a.value_cache.data = a.key_cache.data; }, "value_cache");
    expect_error<InvalidArgument>([](auto& a) { a.key_cache.data = a.keys.data; }, "key_cache");
    // bf16 keys into an fp16 cache: no conversion between float formats.
    pjtest::AppendConfig c;
    c.kv = DType::f16;
    pjtest::HostAppend h(c);
    try {
      attention::validate_append(h.host_args());
      FAIL("an fp16 cache took bf16 keys");
    } catch (const InvalidArgument& e) {
      CHECK(e.argument() == "key_cache");
      CHECK(std::string(e.what()).find("e4m3") != std::string::npos);
    }
  }

  TEST_CASE("append validate: starts, lengths, tables and the sequence count") {
    expect_error<InvalidArgument>([](auto& a) { a.query_start.rank = 2; }, "query_start");
    expect_error<InvalidArgument>([](auto& a) { a.query_start.dtype = DType::f32; }, "query_start");
    expect_error<InvalidArgument>([](auto& a) { a.query_start.shape[0] = 0; }, "query_start");
    expect_error<InvalidArgument>([](auto& a) { a.query_start.strides[0] = 2; }, "query_start");
    expect_error<InvalidArgument>([](auto& a) { a.query_start.data = nullptr; }, "query_start");
    expect_error<InvalidArgument>([](auto& a) { a.query_start.data = static_cast<char*>(a.query_start.data) + 2; },
                                  "query_start");
    expect_error<InvalidArgument>([](auto& a) { a.query_start.shape[0] = 3; }, "context_lens");
    expect_error<InvalidArgument>([](auto& a) { a.context_lens.dtype = DType::f32; }, "context_lens");
    expect_error<InvalidArgument>([](auto& a) { a.context_lens.strides[0] = 2; }, "context_lens");
    expect_error<InvalidArgument>([](auto& a) { a.block_tables.shape[0] = 2; }, "block_tables");
    expect_error<InvalidArgument>([](auto& a) { a.block_tables.dtype = DType::f32; }, "block_tables");
    expect_error<InvalidArgument>([](auto& a) { a.block_tables.shape[1] = 0; }, "block_tables");
    expect_error<InvalidArgument>([](auto& a) { a.block_tables.strides[1] = 2; }, "block_tables");
    expect_error<InvalidArgument>([](auto& a) { a.seq_count.shape[0] = 2; }, "seq_count");
    expect_error<InvalidArgument>([](auto& a) { a.seq_count.dtype = DType::f32; }, "seq_count");
    expect_error<InvalidArgument>([](auto& a) { a.seq_count.data = nullptr; }, "seq_count");
  }

  TEST_CASE("append validate: scales") {
    expect_error<InvalidArgument>([](auto& a) { a.k_scale.shape[0] = 3; }, "k_scale");
    expect_error<InvalidArgument>([](auto& a) { a.v_scale.dtype = DType::f16; }, "v_scale");
    expect_error<InvalidArgument>([](auto& a) { a.v_scale.data = nullptr; }, "v_scale");
    pjtest::HostAppend h{pjtest::AppendConfig{}};  // a bf16 cache takes no scales
    AppendKvArgs a = h.host_args();
    a.k_scale = base_args().k_scale;
    try {
      attention::validate_append(a);
      FAIL("a bf16 cache took a scale");
    } catch (const InvalidArgument& e) {
      CHECK(e.argument() == "k_scale");
    }
  }

  TEST_CASE("append validate: the C API converts the struct and reports the argument") {
    pagedjit_append_args c = to_c(base_args());
    CHECK(pagedjit_validate_append(&c) == PAGEDJIT_OK);
    CHECK(pagedjit_validate_append(nullptr) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
    c.layout = 3;
    CHECK(pagedjit_validate_append(&c) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(pagedjit_last_error()).find("args.layout") != std::string::npos);
    c = to_c(base_args());
    c.reserved0 = 1;
    CHECK(pagedjit_validate_append(&c) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
    c = to_c(base_args());
    c.query_start.dtype = PAGEDJIT_F32;
    CHECK(pagedjit_validate_append(&c) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(pagedjit_last_error()).find("query_start") != std::string::npos);
    CHECK(pagedjit_append_kv(nullptr, &c, nullptr) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
  }

  TEST_CASE("append reference: a hand example") {
    // Two sequences, page_size 2, one KV head of 16 dims. Sequence 0 appends
    // rows 0-1 at positions 1-2 (context 3): page 2 slot 1, page 0 slot 0.
    // Sequence 1 appends row 2 at position 0: page 3 slot 0. Row 3 belongs to
    // no sequence (query_start ends at 3).
    const int D = 16;
    std::vector<float> keys(4 * D), values(4 * D);
    for (int r = 0; r < 4; ++r)
      for (int d = 0; d < D; ++d) keys[std::size_t(r * D + d)] = float(r + 1), values[std::size_t(r * D + d)] = -1000.f;
    std::int32_t starts[] = {0, 2, 3}, lens[] = {3, 1}, table[] = {2, 0, 3, -1};
    auto run = [&](DType kv, float scale) {
      std::vector<std::uint8_t> kc(4 * 2 * D * dtype_size(kv), 0x11), vc(kc);
      AppendKvArgs a;
      a.keys = TensorView(keys.data(), DType::f32, {4, 1, D});
      a.values = TensorView(values.data(), DType::f32, {4, 1, D});
      a.key_cache = TensorView(kc.data(), kv, {4, 1, 2, D});
      a.value_cache = TensorView(vc.data(), kv, {4, 1, 2, D});
      a.query_start = TensorView(starts, DType::i32, {3});
      a.context_lens = TensorView(lens, DType::i32, {2});
      a.block_tables = TensorView(table, DType::i32, {2, 2});
      if (is_fp8(kv)) a.k_scale = a.v_scale = TensorView(&scale, DType::f32, {1});
      reference_append_kv(a);
      return std::pair{kc, vc};
    };
    DType kv = DType::f32;
    auto slot = [&](const std::vector<std::uint8_t>& c, int page, int s) {
      return load_element(c.data(), (page * 2 + s) * D + D - 1, kv);
    };
    auto is_poison = [&](const std::vector<std::uint8_t>& c, int page, int s) {
      const std::size_t row = std::size_t(D) * dtype_size(kv);
      return std::all_of(c.begin() + std::ptrdiff_t((page * 2 + s) * row),
                         c.begin() + std::ptrdiff_t((page * 2 + s + 1) * row),
                         [](std::uint8_t b) { return b == 0x11; });
    };
    {
      auto [kc, vc] = run(kv, 1.f);
      CHECK(slot(kc, 2, 1) == 1.f);
      CHECK(slot(kc, 0, 0) == 2.f);
      CHECK(slot(kc, 3, 0) == 3.f);
      CHECK(slot(vc, 3, 0) == -1000.f);
      for (auto [p, s] : {std::pair{0, 1}, {1, 0}, {1, 1}, {2, 0}, {3, 1}}) {
        CHECK(is_poison(kc, p, s));
        CHECK(is_poison(vc, p, s));
      }
    }
    {
      // e4m3 with scale 2: 1 -> 0.5, 3 -> 1.5, -1000 -> -500, saturated to -448.
      kv = DType::e4m3;
      auto [kc, vc] = run(kv, 2.f);
      CHECK(slot(kc, 2, 1) == 0.5f);
      CHECK(slot(kc, 3, 0) == 1.5f);
      CHECK(slot(vc, 3, 0) == -448.f);
      CHECK(is_poison(kc, 1, 0));
    }
    {
      kv = DType::e5m2;
      auto [kc, vc] = run(kv, 1.f / 128.f);  // -128000 saturates to -57344
      CHECK(slot(vc, 0, 0) == -57344.f);
      CHECK(slot(kc, 0, 0) == 256.f);
      CHECK(is_poison(vc, 1, 1));
    }
  }

  TEST_CASE("append reference: skips what the kernel skips") {
    pjtest::AppendConfig c;
    c.kv = DType::bf16;
    c.q_lens = {4, 2, 3, 1};
    c.context_lens = {4, 1, 40, 5};  // sequence 1: q_len > context_len, its first token has no position
    pjtest::HostAppend h(c);
    const std::vector<std::uint8_t> poison = h.key_cache;
    h.table[std::size_t(2 * h.max_blocks + 2)] = -1;  // sequence 2's positions 37..39 land in a bad page
    h.count = {3};                                    // sequence 3 is not written
    reference_append_kv(h.host_args());
    const std::int64_t row = c.head_dim * 2;  // bytes of one (page, head, slot) row
    std::int64_t changed = 0;
    for (std::size_t i = 0; i < poison.size(); i += std::size_t(row))
      changed += h.key_cache[i] != poison[i] || h.key_cache[i + 1] != poison[i + 1];
    // Rows written: 4 (seq 0) + 1 (seq 1) per KV head; none of seq 2 or 3.
    CHECK(changed == 5 * 2);
  }

  TEST_CASE("append kernel spec: name, readable text and refusals") {
    jit::KernelSpec s;
    s.kind = jit::KernelKind::append;
    s.q_dtype = DType::bf16;
    s.kv_dtype = DType::e4m3;
    s.arch = "sm_90a";
    CHECK(s.name_expression() == "pj::append_kv<pj::bf16, pj::e4m3>");
    CHECK(s.readable() == "append bf16->e4m3 sm_90a");
    CHECK_NOTHROW(s.check());
    jit::KernelSpec t = s;
    t.kv_dtype = DType::bf16;
    CHECK(s.key("H", "13.0") != t.key("H", "13.0"));
    t.kind = jit::KernelKind::merge;
    t.out_dtype = DType::bf16;
    CHECK(s.key("H", "13.0") != t.key("H", "13.0"));
    s.kv_dtype = DType::f16;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s.q_dtype = DType::e5m2;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
    s.q_dtype = DType::i32;
    CHECK_THROWS_AS(s.check(), InvalidArgument);
  }

  TEST_CASE("append kernel spec: NVRTC compiles every dtype pair for sm_90a") {
    for (DType src : {DType::f32, DType::f16, DType::bf16})
      for (DType kv : {src, DType::e4m3, DType::e5m2}) {
        jit::KernelSpec s;
        s.kind = jit::KernelKind::append;
        s.q_dtype = src;
        s.kv_dtype = kv;
        s.arch = "sm_90a";
        CAPTURE(s.readable());
        const auto k = jit::KernelCache::global().get(s);
        CHECK(k->binary.compare(0, 4,
                                "\x7f"
                                "ELF") == 0);
        CHECK(k->lowered_name.find("append_kv") != std::string::npos);
      }
  }
}
