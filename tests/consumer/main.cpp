// Uses an installed pagedjit: prints its version and tries an engine on GPU 0
// (without a GPU the typed DriverError is the expected outcome).
#include <cstdio>
#include <cstring>

#include <pagedjit/pagedjit.h>
#include <pagedjit/pagedjit.hpp>

int main() {
  std::printf("pagedjit %s (C API: %s)\n", pagedjit::kVersion, pagedjit_version());
  if (std::strcmp(pagedjit::kVersion, pagedjit_version()) != 0) return 1;
  try {
    pagedjit::Engine engine(0);
    std::printf("engine on GPU 0: %s (%s)\n", engine.device().name.c_str(), engine.device().arch().c_str());
  } catch (const pagedjit::DriverError& e) {
    std::printf("no engine (%s): %s\n", pagedjit::error_code_name(e.code()), e.what());
  }
  return 0;
}
