#include "gpu_info.hpp"

#include <fmt/format.h>

#include "../common/helper_kernels.hpp"
#include "pagedjit/driver.hpp"

namespace pjbench {

Json gpu_info_json(const pagedjit::DeviceInfo& device) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  Json j;
  j["name"] = device.name;
  j["ordinal"] = device.ordinal;
  j["compute_capability"] = fmt::format("{}.{}", device.cc_major, device.cc_minor);
  j["arch"] = device.arch();
  j["sm_count"] = device.sm_count;
  j["l2_bytes"] = device.l2_bytes;
  j["total_memory"] = device.total_memory;
  j["max_smem_per_block"] = device.max_smem_per_block;
  j["max_smem_per_sm"] = device.max_smem_per_sm;
  j["driver_version"] = fmt::format("{}.{}", d.version / 1000, (d.version % 1000) / 10);
  j["nvrtc_version"] = nvrtc_version_string();
  // Attributes that may be missing on some drivers: null when not reported.
  CUdevice dev = 0;
  const bool have_dev = d.cuDeviceGet(&dev, device.ordinal) == CUDA_SUCCESS;
  auto attr = [&](CUdevice_attribute a, bool zero_is_unknown = true) -> Json {
    int v = 0;
    if (!have_dev || d.cuDeviceGetAttribute(&v, a, dev) != CUDA_SUCCESS || v < 0 || (zero_is_unknown && v == 0))
      return Json();
    return v;
  };
  j["sm_clock_khz"] = attr(CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
  j["memory_clock_khz"] = attr(CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
  j["memory_bus_bits"] = attr(CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
  j["ecc"] = attr(CU_DEVICE_ATTRIBUTE_ECC_ENABLED, false);
  j["pci_bus_id"] = attr(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, false);
  if (j["memory_clock_khz"].is_number() && j["memory_bus_bits"].is_number())
    j["datasheet_GBps"] =  // double data rate
        2.0 * j["memory_clock_khz"].get<double>() * 1e3 * j["memory_bus_bits"].get<double>() / 8 / 1e9;
  else
    j["datasheet_GBps"] = nullptr;
  return j;
}

}  // namespace pjbench
