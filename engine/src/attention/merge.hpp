// Validation and kernel parameters of Engine::merge_attention_states.
#pragma once
#include "pagedjit/paged_attention.hpp"
#include "pj_params.cuh"

namespace pagedjit::attention {

struct MergeShape {
  std::int64_t rows = 0;  // flattened leading dims
  int head_dim = 0;
  std::int64_t a_stride = 0, b_stride = 0, out_stride = 0;  // elements between rows
  std::int64_t lse_a_stride = 0, lse_b_stride = 0, lse_stride = 0;
};

// Throws InvalidArgument naming the first bad argument.
MergeShape validate_merge(const MergeStatesArgs& args);

}  // namespace pagedjit::attention
