// The kernel templates, embedded at build time (see cmake/embed_sources.cmake).
#pragma once
#include <cstddef>

namespace pagedjit::jit {

struct EmbeddedFile {
  const char* name;
  const char* data;
  std::size_t size;
};

extern const EmbeddedFile kEmbeddedFiles[];
extern const std::size_t kEmbeddedFileCount;
extern const char* const kEmbeddedSourcesHash;  // SHA-256 of names and contents

}  // namespace pagedjit::jit
