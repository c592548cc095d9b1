#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang, ASan and UBSan in
# build-fuzz/, then runs each for a bounded time on its corpus.
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]     (default 20 s, every target)
#   FUZZ_FLAGS="-runs=10000000"  extra libFuzzer flags (e.g. a run count instead of a time)
# The seeds in tests/fuzz/corpus/<target> are read, never written: what the
# fuzzer learns goes to build-fuzz/corpus/<target>. A crash, a hang (10 s) or
# an exception other than the API's documented ones fails the script and
# leaves the input in build-fuzz/artifacts/; reproduce it with
# `build-fuzz/tests/fuzz/<target> <input>`, then add the input to the corpus
# (tests/test_fuzz_regressions.cpp replays it) and a test for the bug there.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
if [ $# -gt 0 ]; then shift; fi
all=(fuzz_validate fuzz_views fuzz_disk_cache fuzz_case_string fuzz_profile fuzz_ragged)
targets=("${@:-${all[@]}}")

have_header() { for d in /usr/include /usr/local/include; do [ -f "$d/$1" ] && return 0; done; return 1; }
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v clang++ >/dev/null || missing+=(clang)
have_header fmt/format.h || missing+=(libfmt-dev)
have_header nlohmann/json.hpp || missing+=(nlohmann-json3-dev)
have_header doctest/doctest.h || missing+=(doctest-dev)
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
has_libfuzzer() {
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe/p.cpp"
  clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" >/dev/null 2>&1
}
if ! command -v clang++ >/dev/null || ! has_libfuzzer; then missing+=(libclang-rt-dev); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  has_libfuzzer || { echo "fuzz: clang cannot link libFuzzer (package libclang-rt-<version>-dev)" >&2; exit 1; }
fi
export PATH="/usr/local/cuda/bin:$PATH"

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPAGEDJIT_FUZZ=ON \
  -DPAGEDJIT_BUILD_TESTS=OFF -DPAGEDJIT_BUILD_TOOLS=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]}"

export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
mkdir -p build-fuzz/artifacts build-fuzz/logs
passed=0 failed=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
  log="build-fuzz/logs/$t.log"
  set +e
  # shellcheck disable=SC2086
  "build-fuzz/tests/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="build-fuzz/artifacts/$t-" "${dict[@]}" ${FUZZ_FLAGS:-} \
    "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "build-fuzz/corpus/$t" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz $t: ${runs:-?} executions (${rate:-?}/s), corpus $corpus, no crash"
    grep -h "^$t: " "$log" || true
  else
    failed=$((failed + 1))
    echo "fuzz $t: FAILED (exit $rc) after ${runs:-?} executions; log $log, input in build-fuzz/artifacts/" >&2
    grep -E -A25 'ERROR:|runtime error|terminate called|what\(\)' "$log" | head -60 >&2 || tail -40 "$log" >&2
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
