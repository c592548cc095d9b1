#!/usr/bin/env bash
# The CPU test suite built with AddressSanitizer and UndefinedBehaviorSanitizer
# (CMake option PAGEDJIT_SANITIZE) in build-asan/, run with every error fatal.
#   scripts/sanitize.sh [doctest options...]
# NVRTC and the driver are not instrumented (ASan sees them through malloc);
# LeakSanitizer reports nothing inside NVRTC, so no suppressions are needed.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
export PATH="/usr/local/cuda/bin:$PATH"

# -O1 -g1: what the ASan manual suggests (line tables are enough for reports);
# at -O2 -g this build took 20 of CI's 31 minutes on two cores.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  "-DPAGEDJIT_SANITIZE=address;undefined" >/dev/null
cmake --build build-asan -j "$(nproc)" --target pagedjit-tests

export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_init_order=1:check_initialization_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
echo "sanitize: pagedjit-tests --test-suite=cpu under ASan + UBSan"
exec build-asan/tests/pagedjit-tests --test-suite=cpu "$@"
