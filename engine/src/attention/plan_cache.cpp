#include "attention/plan_cache.hpp"

#include <cstddef>
#include <tuple>
#include <utility>

namespace pagedjit::attention {
namespace {

// The number of fields of an aggregate: the most initializers T{...} takes.
// (Trying fewer than all is the point: clang's missing-field warning would
// fire inside the unevaluated probes.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
struct AnyField {
  template <class T>
  operator T() const {
    return T{};
  }
};
template <class T, class... A>
constexpr std::size_t field_count(long) {
  return sizeof...(A);
}
template <class T, class... A>
constexpr auto field_count(int) -> decltype(T{A{}..., AnyField{}}, std::size_t{}) {
  return field_count<T, A..., AnyField>(0);
}
#pragma GCC diagnostic pop

// A field added to either struct must be read here: it may change the plan.
static_assert(field_count<ProblemShape>(0) == 15, "ProblemShape changed: update shape_values");
static_assert(field_count<PagedAttentionOptions>(0) == 12, "PagedAttentionOptions changed: update plan_key");
static_assert(field_count<KernelConfig>(0) == 6, "KernelConfig changed: update config_values");

// Every value of the key, for the comparison and the hash alike.
auto shape_values(const ProblemShape& s) {
  return std::make_tuple(s.num_seqs, s.num_heads, s.num_kv_heads, s.head_dim, s.page_size, s.max_blocks, s.num_blocks,
                         s.dtype, s.kv_dtype, s.out_dtype, s.layout, s.max_context_len, s.q_len, s.ragged);
  // (total_tokens is not read by the planner, only by the launch: a serving
  // loop whose step sizes vary reuses one plan.)
}

auto config_values(const std::optional<KernelConfig>& c) {
  return c ? std::make_tuple(true, c->tile_tokens, c->warps, c->stages, c->chunk_tokens, c->v_dims, c->work_waves)
           : std::make_tuple(false, 0, 0, 0, 0, 0, 0);
}

auto key_values(const PlanKey& k) {
  return std::tuple_cat(shape_values(k.shape),
                        std::make_tuple(k.num_splits, k.batch_invariant, k.pages_per_compute_block.has_value(),
                                        k.pages_per_compute_block.value_or(0)),
                        config_values(k.kernel_config));
}

// A cheap filter before the full comparison: one multiply per value (a
// byte-wise hash cost as much as the rest of a remembered call).
std::uint64_t hash_of(const PlanKey& k) {
  std::uint64_t h = 1469598103934665603ull;
  std::apply([&h](auto... v) { ((h = (h ^ std::uint64_t(std::int64_t(v))) * 0x9e3779b97f4a7c15ull + (h >> 29)), ...); },
             key_values(k));
  return h;
}

}  // namespace

bool PlanKey::operator==(const PlanKey& o) const {
  return key_values(*this) == key_values(o);
}

PlanKey plan_key(const ProblemShape& shape, const PagedAttentionOptions& o) {
  // The options make_plan and tuning::profile_applies read; the others
  // (scale, mask, soft cap, window, return_lse) only fill the kernel's
  // parameters at launch.
  return PlanKey{shape, o.num_splits, o.batch_invariant, o.pages_per_compute_block, o.kernel_config};
}

PlanCache::PlanCache(DeviceInfo device, tuning::DeviceProfiles profiles, bool clusters, bool device_schedule,
                     KernelSpecialization specialize)
    : device_(std::move(device)),
      profiles_(std::move(profiles)),
      clusters_(clusters),
      device_schedule_(device_schedule),
      specialize_(specialize) {}

Plan PlanCache::make(const ProblemShape& shape, const PagedAttentionOptions& o) const {
  if (!tuning::profile_applies(o))
    return make_plan(shape, o, device_, nullptr, clusters_, device_schedule_, specialize_);
  const std::optional<tuning::Choice> choice = profiles_.choose(shape);
  return make_plan(shape, o, device_, choice ? &*choice : nullptr, clusters_, device_schedule_, specialize_);
}

std::shared_ptr<const Plan> PlanCache::plan(const ProblemShape& shape, const PagedAttentionOptions& options) {
  PlanKey key = plan_key(shape, options);
  const std::uint64_t hash = hash_of(key);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Slot& s : slots_)
      if (s.plan && s.hash == hash && s.key == key) return s.plan;
  }
  // Planned outside the lock (the profile lookup may log); two threads
  // missing on one key may both plan it: the plans are equal.
  auto made = std::make_shared<const Plan>(make(shape, options));
  std::lock_guard<std::mutex> lock(mu_);
  for (const Slot& s : slots_)  // another thread may have planned it meanwhile
    if (s.plan && s.hash == hash && s.key == key) return s.plan;
  Slot& s = slots_[std::size_t(next_)];
  next_ = (next_ + 1) % kSlots;
  s.hash = hash;
  s.key = std::move(key);
  s.plan = made;
  return made;
}

}  // namespace pagedjit::attention
