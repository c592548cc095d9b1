// The bar chart of a run: fraction of the read bandwidth per case, ours and
// (when the run has a "peers" section) each peer's beside it. Plain SVG with
// a title, labelled axes and a legend, readable in a browser. CPU only.
#pragma once
#include <string>

#include "../common/json.hpp"

namespace pjbench {

// `run` is the benchmark's JSON (see report.hpp). Throws nlohmann's
// exceptions when required keys ("cases", "bandwidth") are missing.
std::string render_svg(const Json& run);

}  // namespace pjbench
