// One benchmark case on the GPU: problem sets, a correctness check against the
// CPU reference, then the timed calls. The result is one JSON row.
#pragma once
#include <cuda.h>

#include <cstdint>
#include <string>

#include "bandwidth.hpp"
#include "cases.hpp"
#include "json.hpp"
#include "pagedjit/engine.hpp"

namespace pjbench {

enum class L2Mode { automatic, rotate, flush };
const char* l2_mode_name(L2Mode m);

struct RunSettings {
  int reps = 200;   // timed calls per case (at least 100)
  int warmup = 20;  // untimed calls before them (at least one per input set)
  L2Mode l2 = L2Mode::automatic;
  int max_sets = 16;                               // input sets before falling back to flushing
  std::int64_t memory_budget = 36ll * 1000000000;  // GPU bytes all sets of a case may take
};

// How a case keeps its timings out of L2: rotate between `sets` input sets
// whose KV together exceeds 3x L2, or flush L2 with a memset of
// `flush_bytes` before each timing.
struct L2Plan {
  int sets = 1;
  std::int64_t flush_bytes = 0;  // 0: no flush
  std::string text;              // for the table and the JSON
};
L2Plan plan_l2(std::int64_t kv_bytes, std::int64_t alloc_bytes, std::int64_t l2_bytes, const RunSettings& s);

// GPU bytes one DeviceProblem of the case allocates (K, V and small arrays).
std::int64_t problem_alloc_bytes(const BenchCase& c);

// Relative L2 error a passing case stays under.
double tolerance(pagedjit::DType dtype);

// Runs the case; never throws for an engine error (the row gets "error").
Json run_case(pagedjit::Engine& engine, const BenchCase& c, const Bandwidth& bw, const RunSettings& s, CUstream stream);

Json launch_info_json(const pagedjit::LaunchInfo& info);
Json case_config_json(const BenchCase& c);

}  // namespace pjbench
