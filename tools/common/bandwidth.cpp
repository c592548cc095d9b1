#include "bandwidth.hpp"

#include <algorithm>

#include "pagedjit/driver.hpp"

namespace pjbench {

std::vector<ReadGrid> read_grid_list(int sm_count) {
  std::vector<ReadGrid> grids;
  for (int per_sm : {1, 2, 4, 8})
    for (int threads : {256, 512, 1024}) {
      ReadGrid g;
      g.blocks = sm_count * per_sm;
      g.threads = threads;
      grids.push_back(g);
    }
  return grids;
}

std::size_t read_sink_bytes(int sm_count) {
  return std::size_t(sm_count) * 8 * 4 + 256;
}

void fill_read_pattern(CUdeviceptr ptr, std::size_t bytes) {
  pagedjit::check(pagedjit::driver().cuMemsetD32(ptr, 0x3f800001u, bytes / 4), "cuMemsetD32");
}

void launch_read(const HelperKernels& kernels, const ReadGrid& g, CUdeviceptr src, std::size_t bytes, CUdeviceptr sink,
                 CUstream stream) {
  unsigned long long n16 = bytes / 16;
  void* params[] = {&src, &n16, &sink};
  pagedjit::check(pagedjit::driver().cuLaunchKernel(kernels.read(), unsigned(g.blocks), 1, 1, unsigned(g.threads), 1, 1,
                                                    0, stream, params, nullptr),
                  "cuLaunchKernel(pj_bench_read)");
}

Bandwidth measure_bandwidth(const HelperKernels& kernels, const pagedjit::DeviceInfo& device, CUstream stream,
                            int reps) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  std::size_t free_b = 0, total_b = 0;
  pagedjit::check(d.cuMemGetInfo(&free_b, &total_b), "cuMemGetInfo");
  constexpr std::size_t kGiB = std::size_t(1) << 30, kUnit = std::size_t(64) << 20;
  const std::size_t bytes = std::max(kUnit, std::min(4 * kGiB, free_b / 3) / kUnit * kUnit);
  pagedjit::DeviceBuffer buf(bytes);
  pagedjit::DeviceBuffer sink(read_sink_bytes(device.sm_count));
  fill_read_pattern(buf.ptr(), bytes);

  Bandwidth bw;
  bw.reps = reps;
  // Copy: the first half onto the second half.
  const std::size_t half = bytes / 2;
  const CUdeviceptr src = buf.ptr(), dst = buf.ptr() + half;
  const auto copy_ms =
      time_calls(stream, 2, reps, [&](int) { pagedjit::check(d.cuMemcpyDtoD(dst, src, half), "cuMemcpyDtoD"); });
  bw.copy_ms = summarize(copy_ms);
  bw.copy_bytes = std::int64_t(2 * half);
  bw.copy_GBps = double(bw.copy_bytes) / (bw.copy_ms.median * 1e-3) / 1e9;

  // Read: the whole buffer, over a few grid shapes; the best median wins.
  bw.read_bytes = std::int64_t(bytes);
  for (ReadGrid g : read_grid_list(device.sm_count)) {
    const auto ms =
        time_calls(stream, 2, reps, [&](int) { launch_read(kernels, g, buf.ptr(), bytes, sink.ptr(), stream); });
    g.ms = summarize(ms).median;
    g.GBps = double(bw.read_bytes) / (g.ms * 1e-3) / 1e9;
    bw.read_grids.push_back(g);
    if (g.GBps > bw.best_read.GBps) bw.best_read = g;
  }
  bw.read_GBps = bw.best_read.GBps;
  pagedjit::check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
  return bw;
}

Json bandwidth_json(const Bandwidth& bw) {
  Json grids = Json::array();
  for (const ReadGrid& g : bw.read_grids)
    grids.push_back(Json{{"blocks", g.blocks}, {"threads", g.threads}, {"ms", g.ms}, {"GBps", g.GBps}});
  return Json{{"copy_GBps", bw.copy_GBps},
              {"read_GBps", bw.read_GBps},
              {"copy_method", "cuMemcpyDtoD of half the buffer onto the other half; bytes read + written; median"},
              {"copy_bytes", bw.copy_bytes},
              {"copy_ms", bw.copy_ms.median},
              {"copy_min_ms", bw.copy_ms.min},
              {"read_method", "NVRTC reduction kernel, 16-byte loads, 8 in flight per thread; best grid by median"},
              {"read_bytes", bw.read_bytes},
              {"best_read", Json{{"blocks", bw.best_read.blocks},
                                 {"threads", bw.best_read.threads},
                                 {"ms", bw.best_read.ms},
                                 {"GBps", bw.best_read.GBps}}},
              {"read_grids", grids},
              {"reps", bw.reps}};
}

}  // namespace pjbench
