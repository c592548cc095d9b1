#include "pagedjit/tensor.hpp"

#include <fmt/format.h>

#include "pagedjit/errors.hpp"

namespace pagedjit {

std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32:
      return 4;
    case DType::f16:
      return 2;
    case DType::bf16:
      return 2;
    case DType::i32:
      return 4;
    case DType::e4m3:
    case DType::e5m2:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32:
      return "fp32";
    case DType::f16:
      return "fp16";
    case DType::bf16:
      return "bf16";
    case DType::i32:
      return "int32";
    case DType::e4m3:
      return "e4m3";
    case DType::e5m2:
      return "e5m2";
  }
  return "?";
}

DType parse_dtype(const std::string& n) {
  if (n == "fp32" || n == "f32" || n == "float32" || n == "float") return DType::f32;
  if (n == "fp16" || n == "f16" || n == "float16" || n == "half") return DType::f16;
  if (n == "bf16" || n == "bfloat16") return DType::bf16;
  if (n == "int32" || n == "i32") return DType::i32;
  if (n == "e4m3" || n == "fp8_e4m3" || n == "float8_e4m3fn") return DType::e4m3;
  if (n == "e5m2" || n == "fp8_e5m2" || n == "float8_e5m2") return DType::e5m2;
  throw InvalidArgument("dtype", "one of fp32, fp16, bf16, int32, e4m3, e5m2", "'" + n + "'");
}

bool is_fp8(DType d) {
  return d == DType::e4m3 || d == DType::e5m2;
}

const char* layout_name(CacheLayout l) {
  switch (l) {
    case CacheLayout::blocks_heads:
      return "blocks_heads";
    case CacheLayout::heads_blocks:
      return "heads_blocks";
    case CacheLayout::blocks_tokens:
      return "blocks_tokens";
  }
  return "?";
}

CacheLayout parse_layout(const std::string& n) {
  if (n == "blocks_heads") return CacheLayout::blocks_heads;
  if (n == "heads_blocks") return CacheLayout::heads_blocks;
  if (n == "blocks_tokens") return CacheLayout::blocks_tokens;
  throw InvalidArgument("layout", "one of blocks_heads, heads_blocks, blocks_tokens", "'" + n + "'");
}

TensorView::TensorView(void* ptr, DType dt, std::initializer_list<std::int64_t> dims) : data(ptr), dtype(dt) {
  if (dims.size() > kMaxRank) throw InvalidArgument("TensorView", "rank <= 4", std::to_string(dims.size()));
  rank = int(dims.size());
  int i = 0;
  for (auto d : dims) shape[i++] = d;
  // Unsigned: absurd sizes wrap instead of overflowing (validation refuses them).
  std::uint64_t s = 1;
  for (int k = rank - 1; k >= 0; --k) {
    strides[k] = std::int64_t(s);
    s *= std::uint64_t(shape[k]);
  }
}

TensorView::TensorView(void* ptr, DType dt, std::initializer_list<std::int64_t> dims,
                       std::initializer_list<std::int64_t> element_strides)
    : TensorView(ptr, dt, dims) {
  if (element_strides.size() != dims.size())
    throw InvalidArgument("TensorView", fmt::format("{} strides", dims.size()), std::to_string(element_strides.size()));
  int i = 0;
  for (auto s : element_strides) strides[i++] = s;
}

// `rank` is a public field: a value outside [0, kMaxRank] must not index the arrays.
static bool valid_rank(int rank) {
  return rank >= 0 && rank <= kMaxRank;
}

std::int64_t TensorView::numel() const {
  if (!valid_rank(rank)) return 0;
  std::uint64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= std::uint64_t(shape[i]);
  return std::int64_t(n);
}

bool TensorView::is_contiguous() const {
  if (!valid_rank(rank)) return false;
  std::uint64_t s = 1;
  for (int k = rank - 1; k >= 0; --k) {
    if (shape[k] != 1 && strides[k] != std::int64_t(s)) return false;
    s *= std::uint64_t(shape[k]);
  }
  return true;
}

std::string TensorView::describe() const {
  if (!valid_rank(rank)) return fmt::format("{} tensor of invalid rank {}", dtype_name(dtype), rank);
  std::string dims, st;
  for (int i = 0; i < rank; ++i) {
    dims += fmt::format("{}{}", i ? ", " : "", shape[i]);
    st += fmt::format("{}{}", i ? ", " : "", strides[i]);
  }
  return fmt::format("{}[{}] strides [{}]", dtype_name(dtype), dims, st);
}

}  // namespace pagedjit
