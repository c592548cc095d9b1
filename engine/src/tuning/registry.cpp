#include "tuning/registry.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>

#include "log.hpp"
#include "pagedjit/errors.hpp"
#include "tuning/embedded_profiles.hpp"

namespace pagedjit::tuning {
namespace {

namespace fs = std::filesystem;

bool is_off(const char* v) {
  if (!v) return false;
  const std::string s = v;
  return s == "off" || s == "0" || s == "false" || s == "no" || s == "OFF";
}

// Lookup order of a profile for a device: 0 user + same model, 1 user + same
// arch, 2 shipped + same model, 3 shipped + same arch; -1 never.
int rank(const Profile& p, const DeviceInfo& d) {
  const bool name = p.device.name == d.name;
  const bool arch = p.device.arch == d.arch();
  if (!name && !arch) return -1;
  return (p.user ? 0 : 2) + (name ? 0 : 1);
}

const char* level_of_rank(int r) {
  return r < 2 ? "user" : r == 2 ? "exact" : "arch";
}

// Profiles applying to `d`, in lookup order (stable within a rank).
std::vector<std::pair<const Profile*, int>> ordered(const std::vector<const Profile*>& all, const DeviceInfo& d) {
  std::vector<std::pair<const Profile*, int>> out;
  for (const Profile* p : all)
    if (const int r = rank(*p, d); r >= 0) out.emplace_back(p, r);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  return out;
}

// `described`, when given: Bucket::describe() of every entry of every profile
// (in `profiles` order), computed once instead of on every call.
std::optional<Choice> lookup_ordered(const std::vector<std::pair<const Profile*, int>>& profiles,
                                     const ProblemShape& shape, const DeviceInfo& device,
                                     const std::function<void(const std::string&)>& skipped, int* which = nullptr,
                                     const std::vector<std::vector<std::string>>* described = nullptr) {
  for (std::size_t k = 0; k < profiles.size(); ++k) {
    const Profile& p = *profiles[k].first;
    const int i = nearest_entry(p, shape);
    if (i < 0) continue;
    const Entry& e = p.entries[std::size_t(i)];
    const std::string err = config_error(e.config, shape, device);
    if (!err.empty()) {
      if (skipped)
        skipped(fmt::format("{} entry {} ({}): {} cannot run on this device: {}; trying the next profile", p.origin, i,
                            e.bucket.describe(), describe_config(e.config), err));
      continue;
    }
    Choice c;
    c.config = e.config;
    c.level = level_of_rank(profiles[k].second);
    c.origin = p.origin;
    c.bucket = described ? (*described)[k][std::size_t(i)] : e.bucket.describe();
    c.entry = i;
    c.time_ms = e.time_ms;
    c.frac_read = e.frac_read;
    c.in_bucket = e.bucket.sizes_contain(shape);
    if (which) *which = int(k);
    return c;
  }
  return std::nullopt;
}

// Files named by a PAGEDJIT_PROFILE_PATH-style list: files as given,
// directories' *.json files sorted by name. Problems go to `warnings`.
std::vector<std::string> expand_path(const std::string& list, std::vector<std::string>& warnings) {
  std::vector<std::string> files;
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t end = std::min(list.find(':', start), list.size());
    const std::string item = list.substr(start, end - start);
    start = end + 1;
    if (item.empty()) continue;
    std::error_code ec;
    const fs::file_status st = fs::status(item, ec);
    if (ec || !fs::exists(st)) {
      warnings.push_back(fmt::format("PAGEDJIT_PROFILE_PATH: {}: no such file or directory; skipped", item));
    } else if (fs::is_directory(st)) {
      std::vector<std::string> in_dir;
      for (fs::directory_iterator it(item, ec), e; !ec && it != e; it.increment(ec))
        if (it->path().extension() == ".json" && it->is_regular_file(ec)) in_dir.push_back(it->path().string());
      if (ec) warnings.push_back(fmt::format("PAGEDJIT_PROFILE_PATH: {}: cannot list: {}", item, ec.message()));
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else {
      files.push_back(item);
    }
  }
  return files;
}

}  // namespace

std::string Choice::describe() const {
  return fmt::format("{} {} #{} ({})", level, origin, entry, bucket);
}

bool profile_applies(const PagedAttentionOptions& o) {
  // batch_invariant: a profile's choice depends on the batch (its bucket), so
  // the same sequence could run with another tile in another batch.
  // A config that sets only work_waves keeps the profile's tile shape.
  const bool tile_forced =
      o.kernel_config && (o.kernel_config->tile_tokens || o.kernel_config->warps || o.kernel_config->stages ||
                          o.kernel_config->chunk_tokens || o.kernel_config->v_dims);
  return !tile_forced && !o.pages_per_compute_block && !o.batch_invariant;
}

std::string profile_level(const Profile& p, const DeviceInfo& device) {
  const int r = rank(p, device);
  return r < 0 ? "" : level_of_rank(r);
}

std::optional<Choice> lookup(const std::vector<Profile>& profiles, const ProblemShape& shape, const DeviceInfo& device,
                             std::vector<std::string>* skipped) {
  std::vector<const Profile*> all;
  for (const Profile& p : profiles) all.push_back(&p);
  std::function<void(const std::string&)> note;
  if (skipped) note = [skipped](const std::string& s) { skipped->push_back(s); };
  return lookup_ordered(ordered(all, device), shape, device, note);
}

// ------------------------------------------------------------------ DeviceProfiles

namespace {

// Logs `message` unless this process already logged one under `key`: engines
// come and go (one per device, per thread pool, ...), but which profile
// answers a device is news once per process.
void log_once(const std::string& key, const std::string& message) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(key).second) log_warning(message);
}

}  // namespace

struct DeviceProfiles::State {
  std::vector<std::shared_ptr<const Profile>> owned;
  std::vector<std::pair<const Profile*, int>> profiles;  // lookup order
  std::vector<std::vector<std::string>> described;       // Bucket::describe() per profile and entry
  DeviceInfo device;
  bool log = true;
  std::unique_ptr<std::atomic<bool>[]> announced;  // per profile: its first answer was logged
  std::atomic<bool> heuristic_announced{false};
  std::mutex mu;
  std::set<std::string> skipped_logged;
};

DeviceProfiles::DeviceProfiles(std::vector<std::shared_ptr<const Profile>> profiles, DeviceInfo device, bool log)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.owned = std::move(profiles);
  s.device = std::move(device);
  s.log = log && !is_off(std::getenv("PAGEDJIT_PROFILE_LOG"));
  std::vector<const Profile*> all;
  for (const auto& p : s.owned) all.push_back(p.get());
  s.profiles = ordered(all, s.device);
  for (const auto& pr : s.profiles) {
    s.described.emplace_back();
    for (const Entry& e : pr.first->entries) s.described.back().push_back(e.bucket.describe());
  }
  s.announced = std::make_unique<std::atomic<bool>[]>(s.profiles.size() + 1);
  for (std::size_t i = 0; i <= s.profiles.size(); ++i) s.announced[i] = false;
  if (s.log)
    for (const Profile* p : all)
      if (p->user && rank(*p, s.device) < 0) {
        const std::string m = fmt::format("{}: a profile for {} ({}), not this {} ({}): not used", p->origin,
                                          p->device.name, p->device.arch, s.device.name, s.device.arch());
        log_once(m, m);
      }
}

std::optional<Choice> DeviceProfiles::choose(const ProblemShape& shape) const {
  if (!state_) return std::nullopt;
  State& s = *state_;
  std::function<void(const std::string&)> note;
  if (s.log)
    note = [&s](const std::string& msg) {
      std::lock_guard<std::mutex> lock(s.mu);
      if (s.skipped_logged.insert(msg).second) log_once(msg, msg);
    };
  int which = -1;
  std::optional<Choice> c = lookup_ordered(s.profiles, shape, s.device, note, &which, &s.described);
  if (s.log) {
    // The atomics keep the mutex of log_once off the hot path.
    if (c && !s.announced[std::size_t(which)].exchange(true))
      log_once(fmt::format("{}|{}|{}|{}", s.device.name, s.device.arch(), c->level, c->origin),
               fmt::format("{} ({}): launch configurations from the {} profile {} (first: {})", s.device.name,
                           s.device.arch(), c->level, c->origin, c->bucket));
    if (!c && !s.heuristic_announced.exchange(true))
      log_once(
          fmt::format("{}|{}|heuristic|{}", s.device.name, s.device.arch(), s.profiles.empty()),
          fmt::format("{} ({}): {}; built-in heuristic (first: {} {}/{} d{} p{} {})", s.device.name, s.device.arch(),
                      s.profiles.empty() ? "no tuned profile for this GPU" : "no profile entry matches this call",
                      s.profiles.empty() ? "call" : "unmatched", dtype_name(shape.dtype), dtype_name(shape.kv_dtype),
                      shape.head_dim, shape.page_size, layout_name(shape.layout)));
  }
  return c;
}

std::size_t DeviceProfiles::size() const {
  return state_ ? state_->profiles.size() : 0;
}

const Profile& DeviceProfiles::profile(std::size_t i) const {
  return *state_->profiles.at(i).first;
}

std::string DeviceProfiles::describe() const {
  if (size() == 0) return "no profile (heuristic)";
  std::string s = fmt::format("{} profile{}:", size(), size() == 1 ? "" : "s");
  for (std::size_t i = 0; i < size(); ++i)
    s += fmt::format("{} {} {}", i ? "," : "", level_of_rank(state_->profiles[i].second),
                     state_->profiles[i].first->origin);
  return s;
}

// ------------------------------------------------------------------ ProfileRegistry

std::vector<ShippedProfile> shipped_profiles() {
  std::vector<ShippedProfile> out;
  for (std::size_t i = 0; i < kEmbeddedProfileCount; ++i)
    out.push_back({std::string("configs/") + kEmbeddedProfiles[i].name,
                   std::string(kEmbeddedProfiles[i].data, kEmbeddedProfiles[i].size)});
  return out;
}

ProfileRegistry::ProfileRegistry(std::vector<Profile> profiles) {
  for (Profile& p : profiles) profiles_.push_back(std::make_shared<const Profile>(std::move(p)));
}

ProfileRegistry ProfileRegistry::load(const std::string& profile_path, bool shipped) {
  ProfileRegistry r;
  for (const std::string& file : expand_path(profile_path, r.warnings_)) {
    try {
      Profile p = load_profile_file(file);
      p.user = true;
      r.profiles_.push_back(std::make_shared<const Profile>(std::move(p)));
    } catch (const Error& e) {
      r.warnings_.push_back(
          fmt::format("PAGEDJIT_PROFILE_PATH: skipping a malformed profile: {}", profile_error_text(e)));
    }
  }
  if (shipped)
    for (const ShippedProfile& s : shipped_profiles()) {
      try {
        Profile p = parse_profile(s.text, s.name);
        p.user = false;
        r.profiles_.push_back(std::make_shared<const Profile>(std::move(p)));
      } catch (const Error& e) {
        r.warnings_.push_back(fmt::format("skipping a malformed shipped profile: {}", profile_error_text(e)));
      }
    }
  return r;
}

const ProfileRegistry& ProfileRegistry::global() {
  static const ProfileRegistry r = [] {
    const char* path = std::getenv("PAGEDJIT_PROFILE_PATH");
    ProfileRegistry loaded = load(path ? path : "", true);
    for (const std::string& w : loaded.warnings()) log_warning(w);
    return loaded;
  }();
  return r;
}

DeviceProfiles ProfileRegistry::for_device(const DeviceInfo& device, bool log) const {
  return DeviceProfiles(profiles_, device, log);
}

}  // namespace pagedjit::tuning
