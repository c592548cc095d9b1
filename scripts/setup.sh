#!/usr/bin/env bash
# Installs what the build needs (only what is missing), then configures and
# builds pagedjit in ./build. Used by demo.sh, test.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
export PATH="/usr/local/cuda/bin:$PATH"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"
