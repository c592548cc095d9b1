#!/usr/bin/env bash
# Installs what building pagedjit needs, only what is missing (apt, as root or
# with sudo), and checks for the CUDA toolkit. Used by setup.sh and sanitize.sh.
set -euo pipefail

have_header() { for d in /usr/include /usr/local/include; do [ -f "$d/$1" ] && return 0; done; return 1; }
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v g++ >/dev/null || missing+=(g++)
have_header fmt/format.h || missing+=(libfmt-dev)
have_header nlohmann/json.hpp || missing+=(nlohmann-json3-dev)
have_header doctest/doctest.h || missing+=(doctest-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Python package's tests (ctest python_*) run pytest: pip, else apt. Never
# fatal (an offline machine still builds); the python_* tests then say why they fail.
if command -v python3 >/dev/null && ! python3 -c "import pytest" 2>/dev/null; then
  echo "deps: installing pytest"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  python3 -m pip install -q pytest 2>/dev/null || python3 -m pip install -q --break-system-packages pytest 2>/dev/null ||
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pytest >/dev/null; } ||
    echo "deps: could not install pytest (pip install pytest): the python_* tests will fail" >&2
fi
if [ ! -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then
  echo "deps: the CUDA toolkit (12.0 or newer, NVRTC) is required at /usr/local/cuda" >&2
  exit 1
fi
