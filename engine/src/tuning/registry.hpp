// Where a launch configuration comes from at run time. In order:
//   "user"   profiles in $PAGEDJIT_PROFILE_PATH (colon-separated files or
//            directories of *.json), those for this exact GPU model (device
//            name) first, then those for its SM architecture;
//   "exact"  a shipped profile (configs/*.json, embedded in the library at
//            build time) for this exact GPU model;
//   "arch"   a shipped profile for the same SM architecture (DeviceInfo::arch());
//   none     the planner's built-in heuristic.
// A profile answers when one of its entries matches the call's dtype,
// kv_dtype, head_dim, page_size and layout (nearest bucket on group, q_len,
// batch and context; see nearest_entry), and that entry's configuration
// passes config_error on this device; otherwise the next profile is asked.
//
// Malformed user files are reported once on stderr ("pagedjit: ...") and
// skipped; the engine keeps working. Shipped files are checked by the CPU
// tests (a malformed one fails them); at run time they are skipped the same way.
//
// Wiring (engine side):
//   Engine::Impl:  tuning::DeviceProfiles profiles =
//                      options.use_profiles ? tuning::ProfileRegistry::global().for_device(info)
//                                           : tuning::DeviceProfiles{};
//   planner, when tuning::profile_applies(options):
//     if (std::optional<tuning::Choice> c = profiles.choose(shape)) {
//       forced tile/warps/stages/v_dims = c->config (chunk_tokens too unless
//       options.num_splits >= 1 or batch_invariant); info.source = "profile";
//       info.profile = c->describe();
//     }
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pagedjit/device.hpp"
#include "pagedjit/paged_attention.hpp"
#include "tuning/profile.hpp"

namespace pagedjit::tuning {

// A configuration a profile chose for a problem.
struct Choice {
  KernelConfig config;  // complete: tile_tokens, warps, stages set; chunk_tokens/v_dims 0 = engine chooses
  std::string level;    // "user", "exact" or "arch"
  std::string origin;   // the file: a path from $PAGEDJIT_PROFILE_PATH, or "configs/<file>"
  std::string bucket;   // Bucket::describe() of the entry
  int entry = -1;       // its index in the file's "entries"
  double time_ms = 0, frac_read = 0;  // what the tuning run measured for it
  // The call's batch and context lie inside the entry's ranges. Only then
  // does the entry's partition length apply: it was chosen for that many
  // CTAs and tokens, and a much smaller batch cut that way runs slower than
  // the heuristic's plan. Another q_len or group of the same sizes keeps it:
  // there the entry's partitions still beat the heuristic's split
  // (docs/performance.md, v0.9, has the measurements).
  bool in_bucket = false;
  // "exact configs/nvidia-h100-80gb-hbm3.json #3 (bf16/bf16 d128 p16 blocks_heads g4 q1 b49-96 ctx3073-6144)"
  std::string describe() const;
};

// Whether a profile may choose for a call with these options: not when the
// caller forces the tile (kernel_config or pages_per_compute_block), nor in
// batch-invariant mode (a profile's choice depends on the batch size, which
// would make a sequence's result depend on its batch). With num_splits >= 1,
// apply only the tile part (ignore Choice::config.chunk_tokens).
bool profile_applies(const PagedAttentionOptions& options);

// The pure lookup, for tests: `profiles` in any order (Profile::user tells
// user from shipped), no environment, no logging. Skipped entries (a
// configuration that fails config_error) are appended to `skipped` when given.
std::optional<Choice> lookup(const std::vector<Profile>& profiles, const ProblemShape& shape, const DeviceInfo& device,
                             std::vector<std::string>* skipped = nullptr);

// The lookup level of `p` for `device`: "user", "exact", "arch", or "" when
// the profile is for another architecture (never used).
std::string profile_level(const Profile& p, const DeviceInfo& device);

// The profiles that apply to one device, in lookup order. Cheap to copy;
// thread-safe. Default-constructed: none (the heuristic always).
class DeviceProfiles {
 public:
  DeviceProfiles() = default;
  DeviceProfiles(std::vector<std::shared_ptr<const Profile>> profiles, DeviceInfo device, bool log);

  // The configuration for `shape`, or nullopt (use the heuristic). The first
  // time each level/file answers, and the first time none does, one line
  // goes to stderr (unless PAGEDJIT_PROFILE_LOG=off or `log` was false);
  // so does each skipped entry, once.
  std::optional<Choice> choose(const ProblemShape& shape) const;
  std::size_t size() const;
  const Profile& profile(std::size_t i) const;  // in lookup order
  // "2 profiles: exact configs/h100.json, arch configs/h200.json" or "no profile (heuristic)"
  std::string describe() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

class ProfileRegistry {
 public:
  // $PAGEDJIT_PROFILE_PATH (read once) and the embedded shipped profiles.
  // Load problems are reported on stderr once, when it is first used.
  static const ProfileRegistry& global();

  // For tests and tools: the profiles of `profile_path` (colon-separated
  // files or directories, like $PAGEDJIT_PROFILE_PATH), plus the shipped
  // ones when `shipped`. Problems go to warnings(), not to stderr.
  static ProfileRegistry load(const std::string& profile_path, bool shipped);
  // Directly from profiles (user or shipped as each says).
  explicit ProfileRegistry(std::vector<Profile> profiles);

  DeviceProfiles for_device(const DeviceInfo& device, bool log = true) const;
  const std::vector<std::shared_ptr<const Profile>>& profiles() const { return profiles_; }
  // One line per file that could not be used ("<path>: <why>").
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  ProfileRegistry() = default;
  std::vector<std::shared_ptr<const Profile>> profiles_;
  std::vector<std::string> warnings_;
};

// The shipped profiles embedded at build time (cmake/embed_profiles.cmake):
// name ("configs/<file>") and text.
struct ShippedProfile {
  std::string name, text;
};
std::vector<ShippedProfile> shipped_profiles();

}  // namespace pagedjit::tuning
