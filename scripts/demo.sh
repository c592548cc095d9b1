#!/usr/bin/env bash
# The main job: build, then run the seed example on GPU 0 (without a GPU it
# compiles the example's kernels for sm_90a and says so).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/tools/pagedjit-demo "$@"
