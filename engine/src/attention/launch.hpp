// Fills the kernel's parameter struct from a validated call and its plan.
#pragma once
#include <cuda.h>

#include "attention/planner.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/ragged_attention.hpp"
#include "pj_params.cuh"

namespace pagedjit::attention {

pj::DecodeParams decode_params(const PagedAttentionArgs& args, const PagedAttentionOptions& options,
                               const ProblemShape& shape, const Plan& plan, CUdeviceptr counters, CUdeviceptr partials);

// Turns decode_params(paged_view(args), ...) into a ragged call's: packed
// rows found through query_start.
void apply_ragged(pj::DecodeParams& p, const RaggedAttentionArgs& args, const PagedAttentionOptions& options,
                  const ProblemShape& shape);

}  // namespace pagedjit::attention
