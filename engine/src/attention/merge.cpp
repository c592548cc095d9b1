#include "attention/merge.hpp"

#include <fmt/format.h>

#include "pagedjit/errors.hpp"

namespace pagedjit::attention {
namespace {

// The stride between consecutive rows when the leading `n` dims of `t`
// collapse into one; throws when they do not.
std::int64_t row_stride(const TensorView& t, int n, const char* name) {
  for (int i = 0; i + 1 < n; ++i)
    if (t.strides[i] != t.strides[i + 1] * t.shape[i + 1])
      throw InvalidArgument(name, "leading dims that flatten into rows (each stride = the next one x its size)",
                            t.describe());
  return n > 0 ? t.strides[n - 1] : 0;
}

bool is_float(DType d) {
  return d == DType::f32 || d == DType::f16 || d == DType::bf16;
}

}  // namespace

MergeShape validate_merge(const MergeStatesArgs& a) {
  const TensorView& oa = a.out_a;
  if (oa.rank < 2) throw InvalidArgument("out_a", "rank >= 2 ([rows..., head_dim])", oa.describe());
  if (!is_float(oa.dtype)) throw InvalidArgument("out_a", "dtype fp32, fp16 or bf16", dtype_name(oa.dtype));
  for (int i = 0; i < oa.rank; ++i)
    if (oa.shape[i] < 0) throw InvalidArgument("out_a", "non-negative sizes", oa.describe());
  MergeShape m;
  const int n = oa.rank - 1;
  if (oa.shape[n] < 4 || oa.shape[n] % 4 != 0 || oa.shape[n] > 4096)
    throw InvalidArgument("out_a", "head_dim a multiple of 4 in [4, 4096]", oa.describe());
  m.head_dim = int(oa.shape[n]);
  m.rows = 1;
  for (int i = 0; i < n; ++i) {
    if (oa.shape[i] > (std::int64_t(1) << 40) / m.rows)
      throw InvalidArgument("out_a", "fewer than 2^40 rows", oa.describe());
    m.rows *= oa.shape[i];
  }
  auto same_shape = [&](const TensorView& t, const char* name, DType want_or_float, bool any_float) {
    if (t.rank != oa.rank) throw InvalidArgument(name, "the shape of out_a " + oa.describe(), t.describe());
    for (int i = 0; i < oa.rank; ++i)
      if (t.shape[i] != oa.shape[i]) throw InvalidArgument(name, "the shape of out_a " + oa.describe(), t.describe());
    if (any_float ? !is_float(t.dtype) : t.dtype != want_or_float)
      throw InvalidArgument(
          name, any_float ? "dtype fp32, fp16 or bf16" : fmt::format("dtype {} (out_a's)", dtype_name(want_or_float)),
          dtype_name(t.dtype));
    if (t.strides[n] != 1) throw InvalidArgument(name, "unit stride on head_dim", t.describe());
    return row_stride(t, n, name);
  };
  m.a_stride = same_shape(oa, "out_a", oa.dtype, false);
  m.b_stride = same_shape(a.out_b, "out_b", oa.dtype, false);
  m.out_stride = same_shape(a.out, "out", oa.dtype, true);
  auto lse_shape = [&](const TensorView& t, const char* name) {
    if (t.rank != n || t.dtype != DType::f32)
      throw InvalidArgument(name, fmt::format("fp32 of rank {} (out_a's leading dims)", n), t.describe());
    for (int i = 0; i < n; ++i)
      if (t.shape[i] != oa.shape[i]) throw InvalidArgument(name, "out_a's leading dims", t.describe());
    return row_stride(t, n, name);
  };
  m.lse_a_stride = lse_shape(a.lse_a, "lse_a");
  m.lse_b_stride = lse_shape(a.lse_b, "lse_b");
  if (a.lse.data) m.lse_stride = lse_shape(a.lse, "lse");
  if (m.rows > 0) {
    for (auto [t, name] :
         {std::pair{&a.out_a, "out_a"}, {&a.out_b, "out_b"}, {&a.out, "out"}, {&a.lse_a, "lse_a"}, {&a.lse_b, "lse_b"}})
      if (!t->data) throw InvalidArgument(name, "a non-null device pointer", "null");
    for (auto [s, name] : {std::pair{m.a_stride, "out_a"}, {m.b_stride, "out_b"}, {m.out_stride, "out"}})
      if (s < 0) throw InvalidArgument(name, "non-negative strides", std::to_string(s));
  }
  return m;
}

}  // namespace pagedjit::attention
