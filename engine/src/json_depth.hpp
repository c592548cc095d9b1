// A nesting limit for every JSON text pagedjit reads (profiles, shapes and
// case files, cache entry metadata, result files). The parser itself is not
// recursive, but copying, dumping and comparing a parsed value are: text
// nested 100,000 deep overflowed the stack there.
#pragma once
#include <algorithm>
#include <string_view>

namespace pagedjit {

// Deeper than any file pagedjit writes or reads, far from the stack's limit.
constexpr int kMaxJsonDepth = 32;

// Nesting depth of the text's arrays and objects (strings skipped), stopping
// early past `limit`. Malformed text is left for the parser to report.
inline int json_nesting_depth(std::string_view text, int limit = kMaxJsonDepth) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

inline bool json_too_deep(std::string_view text) {
  return json_nesting_depth(text) > kMaxJsonDepth;
}

}  // namespace pagedjit
