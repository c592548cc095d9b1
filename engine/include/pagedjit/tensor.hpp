// Non-owning views of device (or host) arrays: pointer, dtype, shape, strides.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace pagedjit {

// e4m3 / e5m2: 8-bit float KV caches (OCP FP8), dequantized with k_scale / v_scale.
enum class DType : std::uint8_t { f32, f16, bf16, i32, e4m3, e5m2 };

std::size_t dtype_size(DType d);
const char* dtype_name(DType d);
DType parse_dtype(const std::string& name);  // "fp32"/"f32"/"float32", "fp16", "bf16", "int32", "e4m3", "e5m2"
bool is_fp8(DType d);

// Layout of a paged KV cache. All three describe the same logical data; only
// the order of the first three axes differs (head_dim is always last, unit stride).
enum class CacheLayout : std::uint8_t {
  blocks_heads,   // [num_blocks, num_kv_heads, page_size, head_dim] (vLLM; default)
  heads_blocks,   // [num_kv_heads, num_blocks, page_size, head_dim] (JAX Pallas)
  blocks_tokens,  // [num_blocks, page_size, num_kv_heads, head_dim] (FlashInfer NHD)
};

const char* layout_name(CacheLayout l);
CacheLayout parse_layout(const std::string& name);

constexpr int kMaxRank = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::array<std::int64_t, kMaxRank> strides{};  // in elements

  TensorView() = default;
  // Contiguous (row-major) view.
  TensorView(void* ptr, DType dt, std::initializer_list<std::int64_t> dims);
  // Explicit strides, in elements.
  TensorView(void* ptr, DType dt, std::initializer_list<std::int64_t> dims,
             std::initializer_list<std::int64_t> element_strides);

  std::int64_t numel() const;
  bool is_contiguous() const;
  std::string describe() const;  // "bf16[4, 8, 64] strides [512, 64, 1]"
};

}  // namespace pagedjit
