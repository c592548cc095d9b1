// The JSON type of the benchmark's results: keys keep their insertion order,
// so the file reads in the order things were measured.
#pragma once
#include <nlohmann/json.hpp>

namespace pjbench {
using Json = nlohmann::ordered_json;
}  // namespace pjbench
