// One benchmark case on the GPU: problem sets, a correctness check against the
// CPU reference, then the timed calls. The result is one JSON row.
#pragma once
#include <cuda.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../common/bandwidth.hpp"
#include "../common/cases.hpp"
#include "../common/helper_kernels.hpp"
#include "../common/json.hpp"
#include "pagedjit/driver.hpp"
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
  bool read_floor = true;                          // the same-size read per case (off: --no-read-floor)
  bool ragged_decode = false;                      // --ragged-decode: decode cases also through ragged_paged_attention
  double gemm_ceiling_tflops = 790;  // --gemm-ceiling: the bf16 dense GEMM rate ragged cases are a fraction of
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

// The case's L2 plan, recorded in row["l2"]; throws InvalidArgument when
// one problem set would not fit the GPU memory budget.
L2Plan plan_case_memory(const BenchCase& c, std::int64_t l2_bytes, const RunSettings& s, Json& row);

// Relative L2 error a passing case stays under.
double tolerance(pagedjit::DType dtype);

// The same-size read floor: pj_bench_read (the read ceiling's kernel) over
// exactly a case's c.bytes(), timed like the case (same warm-up and reps, one
// launch per event pair, L2 kept cold the way the case keeps it). One buffer
// for the whole run, sized for the largest case, freed with this object.
struct ReadFloor {
  const HelperKernels* kernels = nullptr;
  std::vector<ReadGrid> grids;  // read_grid_list(): each timed per case, the best median kept
  pagedjit::DeviceBuffer buf, sink;
  std::string error;  // why there is no buffer ("" when there is one)
};

// Distance between two read regions of a case: c.bytes() rounded up to 256.
std::int64_t read_floor_stride(std::int64_t case_bytes);
// A buffer for the largest of `cases` (one region of c.bytes() per input set
// the case rotates between; one when it flushes L2), when it stays under the
// memory budget and leaves the most memory any case takes free; else none,
// and `error` says why. Never throws for a driver error.
ReadFloor make_read_floor(const HelperKernels& kernels, const pagedjit::DeviceInfo& device,
                          const std::vector<BenchCase>& cases, const RunSettings& s);

// Runs the case; never throws for an engine error (the row gets "error").
// With s.ragged_decode, the row also gets "ragged_decode": the same problem
// sets through ragged_paged_attention (ragged_bench.hpp).
// With `read_floor`, the row also gets the case's same-size read ("read_same_size",
// "read_same_size_ms", "frac_read_same_size" =
// that / the case's median ms).
Json run_case(pagedjit::Engine& engine, const BenchCase& c, const Bandwidth& bw, const RunSettings& s, CUstream stream,
              const ReadFloor* read_floor = nullptr);

Json launch_info_json(const pagedjit::LaunchInfo& info);
Json case_config_json(const BenchCase& c);

}  // namespace pjbench
