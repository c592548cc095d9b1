#include "pagedjit/device.hpp"

#include <fmt/format.h>

namespace pagedjit {

std::string DeviceInfo::arch() const {
  // Hopper and Blackwell datacenter parts have arch-specific ("a") targets that
  // unlock wgmma / setmaxnreg; plain sm_XY elsewhere.
  const int cc = cc_major * 10 + cc_minor;
  if (cc == 90 || cc == 100 || cc == 103) return fmt::format("sm_{}a", cc);
  return fmt::format("sm_{}", cc);
}

DeviceInfo DeviceInfo::h100_sxm() {
  DeviceInfo d;
  d.name = "NVIDIA H100 80GB HBM3";
  d.cc_major = 9;
  d.cc_minor = 0;
  d.sm_count = 132;
  d.max_smem_per_block = 232448;
  d.max_smem_per_sm = 233472;
  d.regs_per_sm = 65536;
  d.total_memory = 85520809984LL;
  d.l2_bytes = 52428800;
  return d;
}

DeviceInfo DeviceInfo::h200() {
  DeviceInfo d = h100_sxm();
  d.name = "NVIDIA H200";
  d.total_memory = 150754820096LL;
  d.l2_bytes = 62914560;
  return d;
}

}  // namespace pagedjit
