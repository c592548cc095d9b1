// What the run ran on: name, SMs, clocks, memory, driver and NVRTC versions,
// from the driver's device attributes.
#pragma once
#include "../common/json.hpp"
#include "pagedjit/device.hpp"

namespace pjbench {

Json gpu_info_json(const pagedjit::DeviceInfo& device);

}  // namespace pjbench
