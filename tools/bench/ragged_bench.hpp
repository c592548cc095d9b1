// Engine::ragged_paged_attention in the bench (docs/performance.md, "v0.12
// ragged: how to measure"):
//  - ragged cases (bench/cases-ragged.json, fields q and cached): packed
//    queries over a paged cache, timed like the decode cases, in TFLOP/s of
//    causal work and as a fraction of a bf16 GEMM ceiling (--gemm-ceiling);
//    a case of several groups (a prefill chunk + decodes) is also timed as
//    one call per group, and the ratio one call / the sum is reported;
//  - --ragged-decode: every decode case's own problem sets also through the
//    ragged entry point (the query viewed as packed rows), ratio to
//    paged_attention's time.
// Every call is checked against reference_ragged_attention (float64) on a
// few rows of a few sequences, and its whole output for unwritten rows.
#pragma once
#include <cuda.h>

#include <functional>
#include <memory>
#include <vector>

#include "../common/bandwidth.hpp"
#include "../common/cases.hpp"
#include "../common/json.hpp"
#include "case_runner.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/ragged_attention.hpp"
#include "pagedjit/testing.hpp"

namespace pjbench {

// A decode call's arguments as a ragged call: query and output
// [batch * q_len, heads, head_dim] over the same memory, query_start
// 0, q_len, 2 q_len, ... (`query_start`, device), the rest as they are.
pagedjit::RaggedAttentionArgs decode_as_ragged(const pagedjit::PagedAttentionArgs& a, int batch, int q_len,
                                               void* query_start);

// --ragged-decode for one decode case: the case's problem sets (`sets`,
// rotated or flushed by `between` as the case's timing was) through
// ragged_paged_attention, checked on `seqs` like the case, timed with the
// same warm-up and reps. "ratio" = ragged ms / `paged_ms`. Never throws for
// an engine error ("error").
Json time_decode_as_ragged(pagedjit::Engine& engine, const BenchCase& c,
                           const std::vector<std::unique_ptr<pagedjit::testing::DeviceProblem>>& sets,
                           const pagedjit::PagedAttentionOptions& opts, const std::vector<int>& seqs, double paged_ms,
                           int warmup, int reps, const std::function<void(int)>& between, CUstream stream);

// One ragged case (c.ragged()). The row: time_ms, TFLOPs (causal work),
// frac_gemm (of s.gemm_ceiling_tflops), GBps / frac_read, check, launch and,
// with several groups, "split" (one call per group: their ms, sum_ms and
// ratio = time_ms / sum_ms). Never throws for an engine error ("error").
Json run_ragged_case(pagedjit::Engine& engine, const BenchCase& c, const Bandwidth& bw, const RunSettings& s,
                     CUstream stream);

}  // namespace pjbench
