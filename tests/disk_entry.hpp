// Disk cache entry files made by hand, so the tests check the reader against the documented format, not the writer.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "jit/disk_store.hpp"

namespace pjtest {

// An entry file in the documented format (engine/src/jit/disk_store.hpp)
// around `meta` and `payload`, with a valid checksum, built independently of the writer.
inline std::string craft_entry(const std::string& key, const std::string& meta, const std::string& payload,
                               std::uint32_t version = pagedjit::jit::kDiskFormatVersion) {
  namespace jit = pagedjit::jit;
  std::string h(jit::kDiskHeaderBytes, '\0');
  std::memcpy(h.data(), "PJKCACHE", 8);
  auto put = [&](std::size_t off, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) h[off + std::size_t(i)] = char((v >> (8 * i)) & 0xFF);
  };
  put(8, version, 4);
  put(12, key.size(), 4);
  put(16, meta.size(), 4);
  put(24, payload.size(), 8);
  std::uint32_t crc = jit::crc32(h.data(), 32);
  crc = jit::crc32(key.data(), key.size(), crc);
  crc = jit::crc32(meta.data(), meta.size(), crc);
  crc = jit::crc32(payload.data(), payload.size(), crc);
  put(32, crc, 4);
  return h + key + meta + payload;
}

}  // namespace pjtest
