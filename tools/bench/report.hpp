// The run as text for the terminal: ceilings, one row per case, peers'
// ratios and the small-call section. Works on the run's JSON, so an earlier
// --json file prints the same table.
#pragma once
#include <string>

#include "../common/json.hpp"

namespace pjbench {

// The run's JSON, top level: "tool", "version", "date_utc", "command", "gpu",
// "bandwidth", "settings", "cases" (one row per case), "small_calls" and,
// with --peers, "peers".
std::string format_report(const Json& run);

// Writes `run` to `path` (pretty-printed). Throws std::runtime_error.
void write_json_file(const std::string& path, const Json& run);
// Writes `text` to `path`. Throws std::runtime_error.
void write_text_file(const std::string& path, const std::string& text);
Json read_json_file(const std::string& path);

}  // namespace pjbench
