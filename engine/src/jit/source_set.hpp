// The kernel sources a compile uses: the embedded copy, or the files of
// $PAGEDJIT_KERNEL_DIR when set (for kernel development without a rebuild).
#pragma once
#include <string>
#include <vector>

namespace pagedjit::jit {

struct SourceFile {
  std::string name;
  std::string text;
};

struct SourceSet {
  std::string main_name;  // the translation unit NVRTC compiles
  std::string main_text;
  std::vector<SourceFile> headers;  // everything it may include
  std::string hash;                 // identifies the exact contents (part of the cache key)
  std::string origin;               // "embedded" or the override directory

  const SourceFile* find(const std::string& name) const;

  // The sources in effect for this process (read once).
  static const SourceSet& current();
  // Embedded sources, each replaced by the file of the same name in `dir` when
  // present. Throws Error (compile_error) when `dir` is not a directory, holds
  // none of the files, or one of them cannot be read.
  static SourceSet from_directory(const std::string& dir);
  static SourceSet embedded();
};

}  // namespace pagedjit::jit
