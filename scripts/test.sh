#!/usr/bin/env bash
# Build, then run the whole test suite through ctest. GPU tests are reported
# as skipped (doctest "skipped" count) when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
ctest --output-on-failure -V "$@" 2>&1 | grep -vE '^(UpdateCTestConfiguration|Constructing|Checking test dependency|Parse Config|Test project|test [0-9]+$)'
exit "${PIPESTATUS[0]}"
