#!/usr/bin/env bash
# The CPU test suite built with AddressSanitizer and UndefinedBehaviorSanitizer
# (CMake option PAGEDJIT_SANITIZE) in build-asan/, run with every error fatal.
#   scripts/sanitize.sh [doctest options...]
# NVRTC and the driver are not instrumented (ASan sees them through malloc);
# LeakSanitizer reports nothing inside NVRTC, so no suppressions are needed.
set -euo pipefail
cd "$(dirname "$0")/.."

have_header() { for d in /usr/include /usr/local/include; do [ -f "$d/$1" ] && return 0; done; return 1; }
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v g++ >/dev/null || missing+=(g++)
have_header fmt/format.h || missing+=(libfmt-dev)
have_header nlohmann/json.hpp || missing+=(nlohmann-json3-dev)
have_header doctest/doctest.h || missing+=(doctest-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "sanitize: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="/usr/local/cuda/bin:$PATH"

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DPAGEDJIT_SANITIZE=address;undefined" >/dev/null
cmake --build build-asan -j "$(nproc)" --target pagedjit-tests

export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_init_order=1:check_initialization_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
echo "sanitize: pagedjit-tests --test-suite=cpu under ASan + UBSan"
exec build-asan/tests/pagedjit-tests --test-suite=cpu "$@"
