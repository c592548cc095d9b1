// What the planner needs to know about a GPU. Filled from the driver for a
// real device, or from a preset to plan and compile without one.
#pragma once
#include <string>

namespace pagedjit {

struct DeviceInfo {
  std::string name;
  int ordinal = -1;  // -1: not a real device (a preset)
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int max_smem_per_block = 0;  // opt-in maximum, bytes
  int max_smem_per_sm = 0;
  int regs_per_sm = 0;
  long long total_memory = 0;
  int l2_bytes = 0;

  // The exact NVRTC target for this device: sm_90a on Hopper.
  std::string arch() const;

  static DeviceInfo h100_sxm();  // NVIDIA H100 80GB HBM3
  static DeviceInfo h200();
};

}  // namespace pagedjit
