// The two ceilings every case is measured against, in the same run:
// device-to-device copy (bytes read + written) and a read-only reduction
// (the best of a few grids).
#pragma once
#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "helper_kernels.hpp"
#include "json.hpp"
#include "pagedjit/device.hpp"
#include "timing.hpp"

namespace pjbench {

struct ReadGrid {
  int blocks = 0, threads = 0;
  double ms = 0, GBps = 0;  // median
};

struct Bandwidth {
  double copy_GBps = 0, read_GBps = 0;
  std::int64_t copy_bytes = 0;  // read + written by one copy
  std::int64_t read_bytes = 0;  // read by one reduction
  Stats copy_ms;
  ReadGrid best_read;
  std::vector<ReadGrid> read_grids;
  int reps = 0;
};

// The grids the read ceiling tries: 1, 2, 4 and 8 CTAs per SM x 256, 512 and
// 1024 threads (ms and GBps zero).
std::vector<ReadGrid> read_grid_list(int sm_count);
// Bytes of the sink pj_bench_read needs for any grid of read_grid_list().
std::size_t read_sink_bytes(int sm_count);
// Fills `bytes` (a multiple of 4) at `ptr` with a pattern whose every word is
// non-zero: what the read ceiling reads.
void fill_read_pattern(CUdeviceptr ptr, std::size_t bytes);
// One launch of pj_bench_read on `stream`: every 16-byte vector of the
// `bytes` at `src` (rounded down to a multiple of 16), on the grid `g`.
void launch_read(const HelperKernels& kernels, const ReadGrid& g, CUdeviceptr src, std::size_t bytes, CUdeviceptr sink,
                 CUstream stream);

// Allocates up to 4 GiB (less when the GPU has little free memory), frees it
// before returning. `reps` timings per measurement; medians are compared.
Bandwidth measure_bandwidth(const HelperKernels& kernels, const pagedjit::DeviceInfo& device, CUstream stream,
                            int reps = 10);

Json bandwidth_json(const Bandwidth& bw);

}  // namespace pjbench
