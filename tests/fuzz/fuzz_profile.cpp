// Fuzz target (e): tuned profile files (engine/src/tuning/profile.hpp), what
// the engine reads from $PAGEDJIT_PROFILE_PATH. parse_profile may throw only
// InvalidArgument, and its message must name the file. A profile that parses
// must serialize to text that parses back to the same text, every entry must
// be found again by a call of its own bucket, and a lookup must only ever
// return a configuration that fits the device.
#include <string>

#include "harness.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/errors.hpp"
#include "tuning/profile.hpp"
#include "tuning/registry.hpp"

namespace pjfuzz {
namespace {

namespace tuning = pagedjit::tuning;

void check(bool ok, const std::string& what) {
  if (!ok) throw Violation("profile: " + what);
}

std::uint64_t g_runs = 0, g_parsed = 0, g_chosen = 0;

}  // namespace

std::string profile_stats() {
  return std::to_string(g_runs) + " files, " + std::to_string(g_parsed) + " valid profiles, " +
         std::to_string(g_chosen) + " lookups answered";
}

void profile_one(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ++g_runs;
  tuning::Profile p;
  try {
    p = tuning::parse_profile(text, "fuzz.json");
  } catch (const pagedjit::InvalidArgument& e) {
    check(std::string(e.what()).find("fuzz.json") != std::string::npos, "an error that does not name the file");
    check(tuning::profile_error_text(e).find("fuzz.json") == 1, "the error text does not start with the file");
    return;
  }
  ++g_parsed;
  const std::string again = tuning::serialize_profile(p);
  tuning::Profile q;
  try {
    q = tuning::parse_profile(again, "again.json");
  } catch (const pagedjit::InvalidArgument& e) {
    throw Violation(std::string("profile: the serialized profile does not parse: ") + e.what());
  }
  check(tuning::serialize_profile(q) == again, "serialize(parse(serialize(p))) != serialize(p)");
  check(q.entries.size() == p.entries.size(), "entries lost in the round trip");

  const pagedjit::DeviceInfo h100 = pagedjit::DeviceInfo::h100_sxm();
  p.device.name = h100.name;  // make it apply to the device, as a user profile
  p.device.arch = h100.arch();
  p.user = true;
  const std::vector<tuning::Profile> profiles{p};
  for (std::size_t i = 0; i < p.entries.size() && i < 64; ++i)
    for (bool high : {false, true}) {
      const pagedjit::ProblemShape s = p.entries[i].bucket.corner(high);
      const int k = tuning::nearest_entry(p, s);
      // Entries do not overlap, so a call inside entry i's bucket finds entry i.
      check(k == int(i), "a call inside a bucket does not find its entry");
      std::vector<std::string> skipped;
      const std::optional<tuning::Choice> c = tuning::lookup(profiles, s, h100, &skipped);
      if (c) {
        ++g_chosen;
        check(tuning::config_error(c->config, s, h100).empty(), "a lookup returned a configuration that cannot run");
        check(c->level == "user" && c->entry == k, "a lookup returned another entry than the nearest");
      } else {
        check(!tuning::config_error(p.entries[i].config, s, h100).empty(), "a fitting entry was not returned");
        check(skipped.size() == 1, "a skipped entry was not reported");
      }
    }
}

}  // namespace pjfuzz

PJFUZZ_ENTRY(pjfuzz::profile_one)
PJFUZZ_STATS(fuzz_profile, pjfuzz::profile_stats)
