// The shipped profiles (configs/*.json but tune-*.json), embedded at build
// time by cmake/embed_profiles.cmake.
#pragma once
#include <cstddef>

namespace pagedjit::tuning {

struct EmbeddedProfileFile {
  const char* name;  // file name inside configs/
  const char* data;
  std::size_t size;
};

// kEmbeddedProfileCount files, then a null sentinel (the array is never empty).
extern const EmbeddedProfileFile kEmbeddedProfiles[];
extern const std::size_t kEmbeddedProfileCount;

}  // namespace pagedjit::tuning
