// One test per validation rule: the right error type, naming the argument.
#include <doctest/doctest.h>

#include <functional>
#include <limits>
#include <string>

#include "attention/validate.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/pagedjit.h"
#include "pagedjit/testing.hpp"
#include "small_problem.hpp"

using namespace pagedjit;

namespace {

testing::HostProblem& base() {
  static testing::HostProblem p([] {
    testing::ProblemConfig c = pjtest::small_problem_config();
    c.with_lse = true;
    return c;
  }());
  return p;
}

template <class E>
void expect_error(const std::function<void(PagedAttentionArgs&, PagedAttentionOptions&)>& mutate,
                  const std::string& arg) {
  PagedAttentionArgs a = base().args();
  PagedAttentionOptions o;
  o.return_lse = true;
  mutate(a, o);
  try {
    validate_call(a, o);
    FAIL("no error for argument ", arg);
  } catch (const E& e) {
    CHECK(e.argument() == arg);
    CHECK(std::string(e.what()).find(arg) != std::string::npos);
  }
}

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("validate: the baseline call is valid") {
    PagedAttentionOptions o;
    o.return_lse = true;
    const ProblemShape s = validate_call(base().args(), o);
    CHECK(s.num_seqs == 2);
    CHECK(s.group() == 4);
    CHECK(s.page_size == 16);
    CHECK(s.max_context_len == s.max_blocks * 16);
  }

  TEST_CASE("validate: query rank") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.query.rank = 2; }, "query");
  }
  TEST_CASE("validate: query dtype") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.query.dtype = DType::i32; }, "query");
  }
  TEST_CASE("validate: head_dim not a multiple of 16") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.query.shape[2] = 72; }, "query");
  }
  TEST_CASE("validate: head_dim above 512") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.query.shape[2] = 528; }, "query");
  }
  TEST_CASE("validate: num_heads not a multiple of num_kv_heads") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.query.shape[1] = 7, a.output.shape[1] = 7; }, "query");
  }
  TEST_CASE("validate: cache head_dim differs from the query's") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.key_cache.shape[3] = 128, a.value_cache.shape[3] = 128; },
                                  "key_cache");
  }
  TEST_CASE("validate: key and value caches disagree") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.value_cache.shape[0] -= 1; }, "value_cache");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.value_cache.dtype = DType::f16; }, "value_cache");
  }
  TEST_CASE("validate: cache dtype differs from the query's") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.key_cache.dtype = DType::f32; }, "key_cache");
  }
  TEST_CASE("validate: page_size not a power of two") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.key_cache.shape[2] = 12, a.value_cache.shape[2] = 12; },
                                  "key_cache");
  }
  TEST_CASE("validate: page_size above 256") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.key_cache.shape[2] = 512, a.value_cache.shape[2] = 512; },
                                  "key_cache");
  }
  TEST_CASE("validate: context_lens shape and dtype") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.context_lens.shape[0] = 3; }, "context_lens");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.context_lens.dtype = DType::f32; }, "context_lens");
  }
  TEST_CASE("validate: block_tables shape, dtype and stride") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.block_tables.rank = 1; }, "block_tables");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.block_tables.dtype = DType::f16; }, "block_tables");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.block_tables.strides[1] = 2; }, "block_tables");
  }
  TEST_CASE("validate: output shape and dtype") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.output.shape[1] = 4; }, "output");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.output.dtype = DType::i32; }, "output");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.output.strides[2] = 2; }, "output");
  }
  TEST_CASE("validate: lse shape and dtype when requested") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.lse.shape[1] = 3; }, "lse");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.lse.dtype = DType::f16; }, "lse");
  }
  TEST_CASE("validate: null pointers") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.query.data = nullptr; }, "query");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.value_cache.data = nullptr; }, "value_cache");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.block_tables.data = nullptr; }, "block_tables");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.lse.data = nullptr; }, "lse");
  }
  TEST_CASE("validate: misaligned pointer and strides") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.key_cache.data = static_cast<char*>(a.key_cache.data) + 2; },
                                  "key_cache");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.query.strides[1] += 1; }, "query");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.value_cache.strides[3] = 2; }, "value_cache");
  }
  TEST_CASE("validate: negative num_splits") {
    expect_error<InvalidArgument>([](auto&, auto& o) { o.num_splits = -1; }, "options.num_splits");
  }
  TEST_CASE("validate: soft cap <= 0") {
    expect_error<InvalidArgument>([](auto&, auto& o) { o.attn_logits_soft_cap = 0.f; }, "options.attn_logits_soft_cap");
    expect_error<InvalidArgument>([](auto&, auto& o) { o.attn_logits_soft_cap = -1.f; },
                                  "options.attn_logits_soft_cap");
  }
  TEST_CASE("validate: window <= 0") {
    expect_error<InvalidArgument>([](auto&, auto& o) { o.sliding_window = 0; }, "options.sliding_window");
  }
  TEST_CASE("validate: non-finite scale, NaN mask value") {
    expect_error<InvalidArgument>([](auto&, auto& o) { o.attn_scale = std::numeric_limits<float>::infinity(); },
                                  "options.attn_scale");
    expect_error<InvalidArgument>([](auto&, auto& o) { o.mask_value = std::numeric_limits<float>::quiet_NaN(); },
                                  "options.mask_value");
  }
  TEST_CASE("validate: pages_per_compute_block is validated") {
    expect_error<InvalidArgument>([](auto&, auto& o) { o.pages_per_compute_block = 0; },
                                  "options.pages_per_compute_block");
    PagedAttentionOptions o;
    o.pages_per_compute_block = 2;
    CHECK_NOTHROW(validate_call(base().args(), o));
  }
  TEST_CASE("validate: kernel_config must be complete and consistent") {
    expect_error<InvalidArgument>(
        [](auto&, auto& o) {
          o.kernel_config = KernelConfig{48, 2, 3, 0};
        },
        "options.kernel_config");
    expect_error<InvalidArgument>(
        [](auto&, auto& o) {
          o.kernel_config = KernelConfig{64, 4, 0, 0};
        },
        "options.kernel_config");
    expect_error<InvalidArgument>(
        [](auto&, auto& o) {
          o.kernel_config = KernelConfig{0, 0, 0, -1};
        },
        "options.kernel_config.chunk_tokens");
    expect_error<InvalidArgument>(
        [](auto&, auto& o) {
          o.kernel_config = KernelConfig{0, 0, 0, 0, 40};
        },
        "options.kernel_config.v_dims");
  }
  TEST_CASE("validate: negative max_context_len") {
    expect_error<InvalidArgument>([](auto&, auto& o) { o.max_context_len = -5; }, "options.max_context_len");
  }
  TEST_CASE("validate: megacore_mode and inline_seq_dim=false are NotSupported") {
    expect_error<NotSupported>([](auto&, auto& o) { o.megacore_mode = "parallel"; }, "options.megacore_mode");
    expect_error<NotSupported>([](auto&, auto& o) { o.inline_seq_dim = false; }, "options.inline_seq_dim");
  }
  TEST_CASE("validate: the three layouts read their axes") {
    for (CacheLayout l : {CacheLayout::blocks_heads, CacheLayout::heads_blocks, CacheLayout::blocks_tokens}) {
      testing::ProblemConfig c;
      c.num_heads = 6;
      c.num_kv_heads = 3;
      c.page_size = 8;
      c.layout = l;
      c.context_lens = {9};
      testing::HostProblem p(c);
      const ProblemShape s = validate_call(p.args(), {});
      CHECK(s.num_kv_heads == 3);
      CHECK(s.page_size == 8);
      CHECK(s.num_blocks == p.num_blocks());
    }
  }
}

// Hostile views: each describes memory the kernel would read or write wrongly,
// or out of bounds, and must be refused naming the argument.
TEST_SUITE("cpu") {
  TEST_CASE("validate: output strides under which elements share memory or lose alignment") {
    for (const std::int64_t s0 : {std::int64_t(-512), std::int64_t(0)})
      expect_error<InvalidArgument>([s0](auto& a, auto&) { a.output.strides[0] = s0; }, "output");
    for (const std::int64_t s1 : {0, 32, 3})  // rows of 64 elements: 32 overlaps, 3 overlaps and misaligns
      expect_error<InvalidArgument>([s1](auto& a, auto&) { a.output.strides[1] = s1; }, "output");
    for (const int offset : {1, 2})
      expect_error<InvalidArgument>(
          [offset](auto& a, auto&) { a.output.data = static_cast<char*>(a.output.data) + offset; }, "output");
  }
  TEST_CASE("validate: lse misaligned or with rows sharing memory") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.lse.data = static_cast<char*>(a.lse.data) + 1; }, "lse");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.lse.strides[0] = 0; }, "lse");
  }
  TEST_CASE("validate: a cache head stride past any memory, or whose extent overflows") {
    expect_error<NotSupported>([](auto& a, auto&) { a.key_cache.strides[1] = std::int64_t(1) << 40; }, "key_cache");
    expect_error<InvalidArgument>(
        [](auto& a, auto&) { a.value_cache.strides[1] = std::numeric_limits<std::int64_t>::max() - 7; }, "value_cache");
  }
  TEST_CASE("validate: index tensors: strides the kernel ignores, negative strides, misaligned pointers") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.block_tables.strides[0] = -4; }, "block_tables");
    for (const std::int64_t s : {std::int64_t(-1), std::int64_t(1000000)})
      expect_error<InvalidArgument>([s](auto& a, auto&) { a.context_lens.strides[0] = s; }, "context_lens");
    expect_error<InvalidArgument>(
        [](auto& a, auto&) { a.context_lens.data = static_cast<char*>(a.context_lens.data) + 2; }, "context_lens");
    expect_error<InvalidArgument>(
        [](auto& a, auto&) { a.block_tables.data = static_cast<char*>(a.block_tables.data) + 1; }, "block_tables");
  }
  TEST_CASE("validate: cache sizes of 2^32 + 8 are checked before they are narrowed to int") {
    const std::int64_t big = (std::int64_t(1) << 32) + 8;
    for (const int axis : {1, 2}) {
      CAPTURE(axis);
      expect_error<InvalidArgument>(
          [&](auto& a, auto&) {
            a.key_cache.shape[axis] = big;
            a.value_cache.shape[axis] = big;
          },
          "key_cache");
    }
  }
  TEST_CASE("validate: a mask value of +inf") {
    expect_error<InvalidArgument>([](auto&, auto& o) { o.mask_value = std::numeric_limits<float>::infinity(); },
                                  "options.mask_value");
    PagedAttentionOptions o;
    o.mask_value = -std::numeric_limits<float>::infinity();  // masked positions get zero weight either way
    CHECK_NOTHROW(validate_call(base().args(), o));
  }
  TEST_CASE("validate: a workspace misaligned, of negative size, or overlapping the output") {
    alignas(16) static unsigned char scratch[64];
    expect_error<InvalidArgument>(
        [](auto& a, auto&) {
          a.workspace = scratch + 1;
          a.workspace_bytes = 32;
        },
        "workspace");
    expect_error<InvalidArgument>(
        [](auto& a, auto&) {
          a.workspace = scratch;
          a.workspace_bytes = -16;
        },
        "workspace_bytes");
    expect_error<InvalidArgument>(
        [](auto& a, auto&) {
          a.workspace = a.output.data;
          a.workspace_bytes = 256;
        },
        "output");
  }
  TEST_CASE("validate: what the kernel writes shares no memory with what it reads") {
    expect_error<InvalidArgument>([](auto& a, auto&) { a.output.data = a.query.data; }, "output");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.lse.data = a.output.data; }, "output");
    expect_error<InvalidArgument>([](auto& a, auto&) { a.lse.data = a.block_tables.data; }, "lse");
  }
  TEST_CASE("validate (C API): reserved fields must be zero") {
    const PagedAttentionArgs cpp = base().args();
    pagedjit_args a{};
    const auto to_c = [](const TensorView& t) {
      pagedjit_tensor c{};
      c.data = t.data, c.dtype = int32_t(t.dtype), c.rank = t.rank;
      for (int i = 0; i < t.rank; ++i) c.shape[i] = t.shape[i], c.strides[i] = t.strides[i];
      return c;
    };
    a.query = to_c(cpp.query), a.key_cache = to_c(cpp.key_cache), a.value_cache = to_c(cpp.value_cache);
    a.context_lens = to_c(cpp.context_lens), a.block_tables = to_c(cpp.block_tables), a.output = to_c(cpp.output);
    pagedjit_options o;
    pagedjit_options_init(&o);
    REQUIRE(pagedjit_validate(&a, &o) == PAGEDJIT_OK);
    a.reserved0 = 1;
    CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(pagedjit_last_error()).find("'args.reserved0'") != std::string::npos);
    a.reserved0 = 0;
    o.reserved0 = -1;
    CHECK(pagedjit_validate(&a, &o) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(pagedjit_last_error()).find("'options.reserved0'") != std::string::npos);
  }
  TEST_CASE("validate (C API): pagedjit_tensor_init refuses sizes whose strides overflow") {
    const std::int64_t huge = std::numeric_limits<std::int64_t>::max();
    const std::int64_t shapes[][3] = {{2, huge, huge}, {huge, huge, 1}, {4, -1, 8}};
    for (const auto& shape : shapes) {
      pagedjit_tensor t{};
      CHECK(pagedjit_tensor_init(&t, nullptr, PAGEDJIT_BF16, 3, shape) == PAGEDJIT_ERROR_INVALID_ARGUMENT);
      CHECK(std::string(pagedjit_last_error()).find("'shape'") != std::string::npos);
      CHECK(t.rank == 0);  // left as it was
    }
    const std::int64_t fine[2] = {3, 5};
    pagedjit_tensor t{};
    REQUIRE(pagedjit_tensor_init(&t, nullptr, PAGEDJIT_F32, 2, fine) == PAGEDJIT_OK);
    CHECK((t.strides[0] == 5 && t.strides[1] == 1));
  }
}
