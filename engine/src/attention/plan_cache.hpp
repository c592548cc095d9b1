// Plans of recent calls. A model calls attention once per layer with the
// same shape, so all but the first layer of a decode step can skip the
// profile lookup and the planning (host time comparable to the launch
// itself). Pure host code: testable without a GPU.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "attention/planner.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"
#include "tuning/registry.hpp"

namespace pagedjit::attention {

// Everything of a call that planning reads (make_plan and the profile
// lookup): calls with equal keys get equal plans from one PlanCache.
struct PlanKey {
  ProblemShape shape;
  int num_splits = 0;
  bool batch_invariant = false;
  std::optional<int> pages_per_compute_block;
  std::optional<KernelConfig> kernel_config;
  bool operator==(const PlanKey& o) const;
};

PlanKey plan_key(const ProblemShape& shape, const PagedAttentionOptions& options);

class PlanCache {
 public:
  // `profiles`, `clusters`, `device_schedule` and `specialize` as Engine passes them to make_plan.
  PlanCache(DeviceInfo device, tuning::DeviceProfiles profiles, bool clusters, bool device_schedule = true,
            KernelSpecialization specialize = {});

  // The plan of a validated call: a remembered one, else planned now (and
  // remembered unless planning throws). Thread-safe; the plan stays valid
  // while the caller holds it, whatever later calls evict.
  std::shared_ptr<const Plan> plan(const ProblemShape& shape, const PagedAttentionOptions& options);

  // Planned without looking at or filling the cache (what plan() does on a miss).
  Plan make(const ProblemShape& shape, const PagedAttentionOptions& options) const;

  const tuning::DeviceProfiles& profiles() const { return profiles_; }

  // Distinct keys remembered at once: more than the shapes of one decode step
  // (each layer repeats the first); the oldest goes first.
  static constexpr int kSlots = 16;

 private:
  struct Slot {
    std::uint64_t hash = 0;
    PlanKey key;
    std::shared_ptr<const Plan> plan;
  };
  DeviceInfo device_;
  tuning::DeviceProfiles profiles_;
  bool clusters_;
  bool device_schedule_;
  KernelSpecialization specialize_;
  std::mutex mu_;
  std::array<Slot, kSlots> slots_;
  int next_ = 0;  // the slot the next miss fills
};

}  // namespace pagedjit::attention
