// Peers' timings (bench/peers-h100.json: peers.<peer>.<case> = milliseconds)
// set beside this run's: each converted to a fraction of this run's read
// bandwidth through the case's byte count, and the ratio best-peer / ours.
#pragma once
#include <string>

#include "../common/json.hpp"

namespace pjbench {

// Optional keys of a peers file, besides "peers":
//   "tokens": {"<peer>": {"<case>": N}}  the peer's timing read N tokens (for
//             cases with random lengths, where the peer drew its own);
//   "<peer>_<case>_fraction_of_copy": x   only a fraction of the copy bandwidth
//             ("copy_GBps" of the file) is known.
// A case whose lengths are not uniform is compared only through one of those:
// the peer's milliseconds alone may be for other lengths.
//
// `run` is the benchmark's JSON (its "cases" and "bandwidth"); returns the
// "peers" section. Throws std::runtime_error for an unreadable file.
Json compare_with_peers(const Json& run, const std::string& peers_path);
Json compare_with_peers_json(const Json& run, const Json& peers_file, const std::string& label);

}  // namespace pjbench
