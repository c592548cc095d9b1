// Runs a command-line tool through the shell and keeps its output, for the tests of the pagedjit tools.
#pragma once
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace pjtest {

// The exit code (-1 when the command did not exit normally) and what it wrote to stdout.
struct RunResult {
  int status = -1;
  std::string out;
};

// Runs `cmd` with /bin/sh (popen) and waits for it; redirections in `cmd` decide what reaches `out`.
inline RunResult run_command(const std::string& cmd) {
  RunResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace pjtest
