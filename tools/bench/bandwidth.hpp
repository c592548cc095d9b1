// The two ceilings every case is measured against, in the same run:
// device-to-device copy (bytes read + written) and a read-only reduction
// (the best of a few grids).
#pragma once
#include <cuda.h>

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

// Allocates up to 4 GiB (less when the GPU has little free memory), frees it
// before returning. `reps` timings per measurement; medians are compared.
Bandwidth measure_bandwidth(const HelperKernels& kernels, const pagedjit::DeviceInfo& device, CUstream stream,
                            int reps = 10);

Json bandwidth_json(const Bandwidth& bw);

}  // namespace pjbench
