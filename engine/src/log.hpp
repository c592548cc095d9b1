// Warnings of the library: one channel, so every layer (the disk cache, the
// profiles) reports the same way without depending on another.
#pragma once
#include <string>

namespace pagedjit {

// Writes one line "pagedjit: <message>" to stderr (whole, even with other
// threads writing).
void log_warning(const std::string& message);

}  // namespace pagedjit
