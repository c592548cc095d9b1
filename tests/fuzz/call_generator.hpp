// Whole calls made from fuzz input, for the validation fuzz targets: a
// mostly coherent problem (so that many calls pass validation), pointers in
// a region per tensor (null, aligned or not), every option, then a few raw
// mutations of ranks, sizes, strides, dtypes and pointers.
#pragma once
#include <cstdint>

#include "harness.hpp"
#include "pagedjit/paged_attention.hpp"

namespace pjfuzz {

struct Call {
  pagedjit::PagedAttentionArgs args;
  pagedjit::PagedAttentionOptions options;
};

Call random_call(Bytes& in);

// A size or stride: small, a power of two, a boundary of some check, or anything.
std::int64_t any_i64(Bytes& in);

}  // namespace pjfuzz
