// Engine::append_kv: validation (append_validate.cpp), the device-data check
// of the validation mode and the launch parameters (append.cpp).
#pragma once
#include <array>
#include <cstdint>

#include "pagedjit/driver.hpp"
#include "pagedjit/ragged_attention.hpp"
#include "pj_params.cuh"

namespace pagedjit::attention {

// A validated append_kv call, without pointers.
struct AppendShape {
  std::int64_t total_tokens = 0;  // rows of keys / values
  int num_seqs = 0;
  int num_kv_heads = 0, head_dim = 0;
  int page_size = 0, num_blocks = 0, max_blocks = 0;
  DType src_dtype = DType::bf16;  // keys and values
  DType kv_dtype = DType::bf16;   // the caches
  CacheLayout layout = CacheLayout::blocks_heads;
};

// Throws InvalidArgument / NotSupported naming the first bad argument.
AppendShape validate_append(const AppendKvArgs& args);

// The kernel's parameters and launch shape for a validated call with at least one row and sequence.
struct AppendLaunch {
  pj::AppendParams params{};
  std::array<unsigned, 2> grid{}, block{};
};
AppendLaunch append_launch(const AppendKvArgs& args, const AppendShape& shape);

// The validation mode: waits for `stream`, reads query_start, context_lens,
// seq_count and the used table entries, and throws DeviceDataError naming
// the first sequence whose new tokens would not all be written.
void check_append_data(const DriverApi& drv, const AppendKvArgs& args, const AppendShape& shape, CUstream stream);

}  // namespace pagedjit::attention
