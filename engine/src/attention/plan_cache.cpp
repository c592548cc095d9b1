#include "attention/plan_cache.hpp"

#include <utility>

namespace pagedjit::attention {
namespace {

// A field added to ProblemShape must join the comparison and the hash below.
static_assert(sizeof(ProblemShape) == 48, "ProblemShape changed: update PlanKey's comparison and hash");

bool same_shape(const ProblemShape& a, const ProblemShape& b) {
  return a.num_seqs == b.num_seqs && a.num_heads == b.num_heads && a.num_kv_heads == b.num_kv_heads &&
         a.head_dim == b.head_dim && a.page_size == b.page_size && a.max_blocks == b.max_blocks &&
         a.num_blocks == b.num_blocks && a.dtype == b.dtype && a.kv_dtype == b.kv_dtype && a.out_dtype == b.out_dtype &&
         a.layout == b.layout && a.max_context_len == b.max_context_len && a.q_len == b.q_len;
}

bool same_config(const std::optional<KernelConfig>& a, const std::optional<KernelConfig>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->tile_tokens == b->tile_tokens && a->warps == b->warps && a->stages == b->stages &&
                a->chunk_tokens == b->chunk_tokens && a->v_dims == b->v_dims);
}

// A cheap filter before the full comparison: one multiply per value (a
// byte-wise hash cost as much as the rest of a remembered call).
struct Hasher {
  std::uint64_t h = 1469598103934665603ull;
  void add(std::int64_t v) { h = (h ^ std::uint64_t(v)) * 0x9e3779b97f4a7c15ull + (h >> 29); }
};

std::uint64_t hash_of(const PlanKey& k) {
  const ProblemShape& s = k.shape;
  Hasher h;
  for (std::int64_t v :
       {std::int64_t(s.num_seqs), std::int64_t(s.num_heads), std::int64_t(s.num_kv_heads), std::int64_t(s.head_dim),
        std::int64_t(s.page_size), std::int64_t(s.max_blocks), std::int64_t(s.num_blocks), std::int64_t(s.dtype),
        std::int64_t(s.kv_dtype), std::int64_t(s.out_dtype), std::int64_t(s.layout), s.max_context_len,
        std::int64_t(s.q_len), std::int64_t(k.num_splits), std::int64_t(k.batch_invariant),
        std::int64_t(k.pages_per_compute_block.value_or(-1))})
    h.add(v);
  if (k.kernel_config) {
    const KernelConfig& c = *k.kernel_config;
    for (int v : {c.tile_tokens, c.warps, c.stages, c.chunk_tokens, c.v_dims}) h.add(v);
  }
  return h.h;
}

}  // namespace

bool PlanKey::operator==(const PlanKey& o) const {
  return same_shape(shape, o.shape) && num_splits == o.num_splits && batch_invariant == o.batch_invariant &&
         pages_per_compute_block == o.pages_per_compute_block && same_config(kernel_config, o.kernel_config);
}

PlanKey plan_key(const ProblemShape& shape, const PagedAttentionOptions& o) {
  // The options make_plan and tuning::profile_applies read; the others
  // (scale, mask, soft cap, window, return_lse) only fill the kernel's
  // parameters at launch.
  return PlanKey{shape, o.num_splits, o.batch_invariant, o.pages_per_compute_block, o.kernel_config};
}

PlanCache::PlanCache(DeviceInfo device, tuning::DeviceProfiles profiles, bool clusters)
    : device_(std::move(device)), profiles_(std::move(profiles)), clusters_(clusters) {}

Plan PlanCache::make(const ProblemShape& shape, const PagedAttentionOptions& o) const {
  if (!tuning::profile_applies(o)) return make_plan(shape, o, device_, nullptr, clusters_);
  const std::optional<tuning::Choice> choice = profiles_.choose(shape);
  return make_plan(shape, o, device_, choice ? &*choice : nullptr, clusters_);
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
  // missing on one key both plan it, and both plans are the same.
  auto made = std::make_shared<const Plan>(make(shape, options));
  std::lock_guard<std::mutex> lock(mu_);
  Slot& s = slots_[std::size_t(next_)];
  next_ = (next_ + 1) % kSlots;
  s.hash = hash;
  s.key = std::move(key);
  s.plan = made;
  return made;
}

}  // namespace pagedjit::attention
