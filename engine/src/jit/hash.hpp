// FNV-1a, 64 bit: names cache files and fingerprints override sources. Never
// trusted alone: the cache compares the full key text it stores.
#pragma once
#include <cstdint>
#include <string_view>

namespace pagedjit::jit {

inline std::uint64_t fnv1a64(std::string_view s, std::uint64_t h = 14695981039346656037ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace pagedjit::jit
