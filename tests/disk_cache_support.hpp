// Helpers of the disk cache tests (test_disk_cache*.cpp): environment and
// stderr capture, fake and quick real kernels, forked children, the cache tool.
#pragma once
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "attention/planner.hpp"
#include "disk_entry.hpp"
#include "jit/disk_store.hpp"
#include "jit/kernel_cache.hpp"
#include "jit/nvrtc_compiler.hpp"
#include "jit/source_set.hpp"
#include "run_command.hpp"
#include "shapes.hpp"
#include "temp_files.hpp"

namespace pjtest::disk {

using namespace pagedjit;
namespace fs = std::filesystem;
using json = nlohmann::json;

// A fresh directory under the system temp directory, removed afterwards.
struct TempDir : pjtest::TempDir {
  TempDir() : pjtest::TempDir("pagedjit-disk-cache") {}
};

using pjtest::craft_entry;
using pjtest::read_file;
using pjtest::write_file;

// Sets (or unsets) an environment variable for one scope.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  EnvGuard(std::string n, const char* value) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    if (value)
      ::setenv(name.c_str(), value, 1);
    else
      ::unsetenv(name.c_str());
  }
  ~EnvGuard() {
    if (old)
      ::setenv(name.c_str(), old->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

// Sends this process's stderr to a file until finish().
struct StderrCapture {
  std::string path;
  int saved = -1;
  explicit StderrCapture(std::string p) : path(std::move(p)) {
    std::fflush(stderr);
    saved = ::dup(2);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
  }
  std::string finish() {
    if (saved >= 0) {
      std::fflush(stderr);
      ::dup2(saved, 2);
      ::close(saved);
      saved = -1;
    }
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  ~StderrCapture() { finish(); }
};

inline int count_lines_with(const std::string& text, const std::string& what) {
  int n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += line.find(what) != std::string::npos;
  return n;
}

inline jit::CompiledKernel fake_kernel(const std::string& key, std::size_t bytes, unsigned seed = 1) {
  jit::CompiledKernel k;
  k.key = key;
  k.readable = "fake " + key;
  k.lowered_name = "_ZN2pj4fakeEv";
  k.log = "no warnings";
  k.compile_ms = 12.5;
  k.binary.resize(bytes);
  std::uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (auto& c : k.binary) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = char(x & 0xFF);
  }
  return k;
}

inline jit::DiskStoreOptions options_for(const std::string& dir) {
  jit::DiskStoreOptions o;
  o.dir = dir;
  return o;
}

inline ProblemShape shape(DType dt, int head_dim) {
  return pjtest::test_shape(8, 8, 8, 4096, head_dim, dt);
}

// Quick-to-compile kernels for the tests that need real ones.
// The cheapest kernel to compile: head_dim 16, one 16-token tile per warp.
inline jit::KernelSpec small_spec(DType dt = DType::bf16) {
  PagedAttentionOptions o;
  o.kernel_config = KernelConfig{16, 1, 2, 0, 0};
  return attention::make_plan(shape(dt, 16), o, DeviceInfo::h100_sxm()).decode;
}

inline std::string key_of(const jit::KernelSpec& spec) {
  return spec.key(jit::SourceSet::current().hash, jit::nvrtc_version());
}

inline std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// ---- Processes whose cache directory has no room left. A forked child (no
// doctest there) reports on its stderr, a pipe, with "@report <json>" or
// "@skip <why>"; the parent checks. Pipes are not subject to RLIMIT_FSIZE. ----

// One line on fd 2, in one write.
inline void child_line(const std::string& text) {
  const std::string line = text + "\n";
  if (::write(2, line.data(), line.size()) < 0) {
  }
}

struct ChildOutput {
  int code = -1;        // exit status; -signal when killed
  std::string err;      // all the child wrote to stderr, report line included
  json report;          // from "@report <json>"
  std::string skipped;  // from "@skip <why>"
};

// Reads `fd` to its end, then closes it.
inline std::string drain(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, std::size_t(n));
  }
  ::close(fd);
  return out;
}

inline int wait_status(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1000;
  return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? -WTERMSIG(st) : -1000;
}

// Runs `body` (returning the exit status) in a forked child with stderr to a pipe.
template <class Body>
inline ChildOutput run_child(Body&& body) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 2);
    int code = 0;
    try {
      code = body();
    } catch (const std::exception& e) {
      child_line(std::string("@exception ") + e.what());
      code = 70;
    } catch (...) {
      code = 71;
    }
    ::_exit(code);
  }
  ::close(fds[1]);
  ChildOutput out;
  out.err = drain(fds[0]);
  out.code = wait_status(pid);
  std::istringstream in(out.err);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("@report ", 0) == 0) out.report = json::parse(line.substr(8), nullptr, false);
    if (line.rfind("@skip ", 0) == 0) out.skipped = line.substr(6);
  }
  return out;
}

#ifdef PAGEDJIT_CACHE_TOOL
using pjtest::RunResult;
// Runs the cache tool through the shell; `env` is prefixed to the command.
inline RunResult run_tool(const std::string& args, const std::string& env = "") {
  return pjtest::run_command(fmt::format("{} '{}' {}", env, PAGEDJIT_CACHE_TOOL, args));
}

// Runs the cache tool with `args`, which must exit with `status`, and parses its JSON output.
inline json tool_json(const std::string& args, int status, const std::string& env = "") {
  const RunResult r = run_tool(args, env);
  CAPTURE(r.out);
  CHECK(r.status == status);
  return json::parse(r.out);
}

inline std::string write_shapes(const TempDir& dir, const std::string& name, const json& shapes) {
  const std::string path = dir / name;
  write_file(path, shapes.dump());
  return path;
}
#endif
}  // namespace pjtest::disk
