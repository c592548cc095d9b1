// make_plan for the device's own NVRTC target. Apart from the planner so that
// planning stays pure host arithmetic: only this asks NVRTC which targets it has.
#include "attention/planner.hpp"
#include "jit/nvrtc_compiler.hpp"

namespace pagedjit::attention {

Plan make_plan(const ProblemShape& shape, const PagedAttentionOptions& options, const DeviceInfo& device,
               const tuning::Choice* tuned, bool clusters, bool device_schedule, KernelSpecialization specialize) {
  return make_plan(shape, options, device, jit::clamp_arch(device.arch()), tuned, clusters, device_schedule,
                   specialize);
}

}  // namespace pagedjit::attention
