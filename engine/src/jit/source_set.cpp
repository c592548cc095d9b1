#include "jit/source_set.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "jit/embedded_sources.hpp"
#include "jit/hash.hpp"
#include "pagedjit/errors.hpp"

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
  // A typo in the path, or a directory without the kernels, must not quietly
  // compile the embedded sources while the developer edits others.
  auto refuse = [&](const std::string& why) {
    return Error(ErrorCode::compile_error,
                 fmt::format("kernel source directory {} (PAGEDJIT_KERNEL_DIR): {}", dir, why));
  };
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) throw refuse(std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) throw refuse("not a directory");
  SourceSet s = embedded();
  s.origin = dir;
  int found = 0;
  auto read = [&](const std::string& name, std::string& text) {
    const std::string path = dir + "/" + name;
    struct stat fst {};
    if (::stat(path.c_str(), &fst) != 0 && errno == ENOENT) return;  // this one stays embedded
    std::ifstream f(path, std::ios::binary);
    if (!S_ISREG(fst.st_mode) || !f) throw refuse(fmt::format("{} is not a readable file", name));
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
    ++found;
  };
  read(s.main_name, s.main_text);
  std::uint64_t h = fnv1a64(s.main_name);
  h = fnv1a64(s.main_text, h);
  for (auto& f : s.headers) {
    read(f.name, f.text);
    h = fnv1a64(f.name, h);
    h = fnv1a64(f.text, h);
  }
  if (found == 0) throw refuse(fmt::format("holds none of the kernel sources ({}, its headers)", s.main_name));
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
