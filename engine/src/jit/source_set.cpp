#include "jit/source_set.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "jit/embedded_sources.hpp"
#include "jit/hash.hpp"

namespace pagedjit::jit {
namespace {
constexpr const char* kMainName = "pagedjit_kernels.cu";
}

const SourceFile* SourceSet::find(const std::string& name) const {
  if (name == main_name) return nullptr;
  for (const auto& h : headers)
    if (h.name == name) return &h;
  return nullptr;
}

SourceSet SourceSet::embedded() {
  SourceSet s;
  s.origin = "embedded";
  s.main_name = kMainName;
  for (std::size_t i = 0; i < kEmbeddedFileCount; ++i) {
    const EmbeddedFile& f = kEmbeddedFiles[i];
    if (kMainName == std::string(f.name))
      s.main_text.assign(f.data, f.size);
    else
      s.headers.push_back({f.name, std::string(f.data, f.size)});
  }
  s.hash = kEmbeddedSourcesHash;
  return s;
}

SourceSet SourceSet::from_directory(const std::string& dir) {
  SourceSet s = embedded();
  s.origin = dir;
  auto read = [&](const std::string& name, std::string& text) {
    std::ifstream f(dir + "/" + name, std::ios::binary);
    if (!f) return;
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  };
  read(s.main_name, s.main_text);
  std::uint64_t h = fnv1a64(s.main_name);
  h = fnv1a64(s.main_text, h);
  for (auto& f : s.headers) {
    read(f.name, f.text);
    h = fnv1a64(f.name, h);
    h = fnv1a64(f.text, h);
  }
  s.hash = fmt::format("override-{:016x}", h);
  return s;
}

const SourceSet& SourceSet::current() {
  static const SourceSet s = [] {
    const char* dir = std::getenv("PAGEDJIT_KERNEL_DIR");
    return dir && *dir ? from_directory(dir) : embedded();
  }();
  return s;
}

}  // namespace pagedjit::jit
