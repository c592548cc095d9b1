// The rules a call must satisfy before anything is launched (validate.cpp).
#pragma once
#include "pagedjit/paged_attention.hpp"

namespace pagedjit {

// Validates a call's arguments (shapes, dtypes, strides, alignment, options)
// and returns its pointer-free description. Throws InvalidArgument or NotSupported.
ProblemShape validate_call(const PagedAttentionArgs& args, const PagedAttentionOptions& options);

}  // namespace pagedjit
