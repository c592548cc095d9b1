// The small valid call the CPU validation tests start from, kept in one place so they agree on it.
#pragma once
#include "pagedjit/testing.hpp"

namespace pjtest {

// Two sequences of 5 and 17 tokens, 8 query heads over 2 KV heads, head_dim 64.
inline pagedjit::testing::ProblemConfig small_problem_config() {
  pagedjit::testing::ProblemConfig c;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.context_lens = {5, 17};
  return c;
}

}  // namespace pjtest
