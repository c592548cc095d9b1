#!/usr/bin/env bash
# The whole GPU test suite under each compute-sanitizer tool: memcheck,
# racecheck, initcheck and synccheck. Needs a GPU.
#
#   scripts/sanitize_gpu.sh [TOOL...]       default: memcheck racecheck initcheck synccheck
#
# PAGEDJIT_UNDER_SANITIZER=1 (set here) makes the giant cases small enough for
# the tools while keeping what each tests (tests/test_gpu_attention.cpp): the
# cache over 4 GiB allocates only the pages it reads, its base pointers 4 GiB
# before them, so the kernel still computes offsets past 2^31 elements; the
# 512k-token context becomes 32k (still 256 partitions and a 256-way merge);
# 4096 sequences become 512; the random property test runs
# PAGEDJIT_TEST_CONFIGS (default 24) configurations instead of 1000.
#
# The deliberate out-of-memory case ("a workspace larger than the device")
# runs in a second invocation with --report-api-errors no: its failing
# cuMemAllocAsync is the expected result, which the test itself checks, but
# every tool would report it as an API error. Everything else runs with the
# default (--report-api-errors explicit), so an unexpected failing driver
# call is still a finding.
#
# Environment:
#   OUT                 where the logs go, one per tool: $OUT/<tool>.log (default /tmp/pagedjit-sanitize)
#   BUILD_DIR           the build to test (default build/); configured and built when needed
#   PAGEDJIT_TESTS      a pagedjit-tests binary to run instead (nothing is built)
#   SANITIZE_TIMEOUT    seconds per tool (default 7200; 0: no limit): the suite gets them all, the
#                       out-of-memory case what is left, at least 120
#   COMPUTE_SANITIZER   the tool (default: compute-sanitizer on PATH, else /usr/local/cuda/bin)
#   SANITIZER_ARGS      more compute-sanitizer options for every run (e.g. "--leak-check full")
#   PAGEDJIT_TEST_CONFIGS  random configurations of the property test (default 24)
#
# Prints one summary line per tool. Exit status 0 when every tool ran the
# suite clean (no finding, no failed or skipped test case), 1 otherwise,
# 2 on a setup error.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

OUT=${OUT:-/tmp/pagedjit-sanitize}
BUILD_DIR=${BUILD_DIR:-build}
LIMIT=${SANITIZE_TIMEOUT:-7200}
EXTRA=${SANITIZER_ARGS:-}
OOM_CASE='*larger than the device*'
FINDING=86  # compute-sanitizer's exit status on findings (a failed test case gives the suite's 1)

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(memcheck racecheck initcheck synccheck)
for t in "${tools[@]}"; do
  case $t in
    memcheck | racecheck | initcheck | synccheck) ;;
    *) echo "sanitize_gpu: unknown tool '$t' (memcheck, racecheck, initcheck, synccheck)" >&2; exit 2 ;;
  esac
done
case $LIMIT in '' | *[!0-9]*) echo "sanitize_gpu: SANITIZE_TIMEOUT must be seconds, got '$LIMIT'" >&2; exit 2 ;; esac
mkdir -p "$OUT" || exit 2
export PATH="$PATH:/usr/local/cuda/bin"

CS=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || true)}
if [ -z "$CS" ] || [ ! -x "$CS" ]; then
  echo "sanitize_gpu: compute-sanitizer not found (CUDA toolkit bin/, or set COMPUTE_SANITIZER)" >&2
  exit 2
fi

if [ -n "${PAGEDJIT_TESTS:-}" ]; then
  BIN=$PAGEDJIT_TESTS
else
  BIN=$BUILD_DIR/tests/pagedjit-tests
  echo "sanitize_gpu: building $BIN (log: $OUT/build.log)"
  {
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
      scripts/install_deps.sh && cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
    fi && cmake --build "$BUILD_DIR" -j "$(nproc)" --target pagedjit-tests
  } > "$OUT/build.log" 2>&1 < /dev/null || { tail -40 "$OUT/build.log"; echo "sanitize_gpu: the build failed" >&2; exit 2; }
fi
[ -x "$BIN" ] || { echo "sanitize_gpu: $BIN is not an executable" >&2; exit 2; }

export PAGEDJIT_UNDER_SANITIZER=1
export PAGEDJIT_TEST_CONFIGS=${PAGEDJIT_TEST_CONFIGS:-24}
echo "sanitize_gpu: $("$CS" --version 2>/dev/null | tail -1); $BIN; tools: ${tools[*]}; limit ${LIMIT}s per tool"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/sanitize_gpu: GPU: /'

# One compute-sanitizer invocation: run LOG SECONDS TOOL [options...] -- [test options...]
# appends its output to LOG and returns its exit status (124/137: timed out).
run() {
  local log=$1 secs=$2 tool=$3
  shift 3
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  local cmd=("$CS" --tool "$tool" --error-exitcode "$FINDING" "${opts[@]}")
  # shellcheck disable=SC2206  # SANITIZER_ARGS is a list of options
  [ -n "$EXTRA" ] && cmd+=($EXTRA)
  cmd+=("$BIN" --test-suite=gpu --no-colors=true "$@")
  echo "### $(date -u +%FT%TZ) PAGEDJIT_UNDER_SANITIZER=1 PAGEDJIT_TEST_CONFIGS=$PAGEDJIT_TEST_CONFIGS ${cmd[*]}" >> "$log"
  if [ "$secs" -gt 0 ]; then
    timeout --kill-after=60 "$secs" "${cmd[@]}" < /dev/null >> "$log" 2>&1
  else
    "${cmd[@]}" < /dev/null >> "$log" 2>&1
  fi
}

# The sanitizer's and doctest's summaries in a part of a log.
sanitizer_summary() {
  local s
  s=$(grep -aE '(ERROR|RACECHECK) SUMMARY' "$1" | sed -E 's/^=+ *//' | paste -sd ';' -)
  echo "${s:-no sanitizer summary}"
}
doctest_counts() {  # "passed failed" of "[doctest] test cases: N | P passed | F failed | S skipped"
  local line  # (doctest counts the cases filtered out, the CPU suite, as skipped)
  line=$(grep -a '^\[doctest\] test cases:' "$1" | tail -1)
  [ -n "$line" ] || { echo "- -"; return; }
  echo "$line" | sed -E 's/.*\| *([0-9]+) passed *\| *([0-9]+) failed *\|.*/\1 \2/'
}
describe() {  # an exit status in words
  case $1 in
    0) echo ok ;;
    "$FINDING") echo "FINDINGS" ;;
    124 | 137) echo "TIMED OUT" ;;
    1) echo "TEST FAILURES" ;;
    *) echo "EXIT $1" ;;
  esac
}

summary=()
failed=0
for tool in "${tools[@]}"; do
  log=$OUT/$tool.log
  part1=$OUT/.$tool.suite.part
  part2=$OUT/.$tool.oom.part
  : > "$log"
  : > "$part1"
  : > "$part2"
  echo "sanitize_gpu: $tool ... (log: $log)"
  start=$SECONDS
  echo "### $tool: the GPU suite but the deliberate out-of-memory case" >> "$part1"
  run "$part1" "$LIMIT" "$tool" -- "--test-case-exclude=$OOM_CASE"
  rc1=$?
  left=0
  if [ "$LIMIT" -gt 0 ]; then
    left=$((LIMIT - (SECONDS - start)))
    [ "$left" -ge 120 ] || left=120  # the case itself takes seconds
  fi
  echo "### $tool: the deliberate out-of-memory case, its failing cuMemAllocAsync not reported (--report-api-errors no)" >> "$part2"
  run "$part2" "$left" "$tool" --report-api-errors no -- "--test-case=$OOM_CASE"
  rc2=$?
  cat "$part1" "$part2" > "$log"
  secs=$((SECONDS - start))
  read -r p1 f1 <<< "$(doctest_counts "$part1")"
  read -r p2 f2 <<< "$(doctest_counts "$part2")"
  san1=$(sanitizer_summary "$part1")
  san2=$(sanitizer_summary "$part2")
  rm -f "$part1" "$part2"
  status=OK
  if [ "$rc1" -ne 0 ] || [ "$rc2" -ne 0 ]; then
    status="FAIL (suite: $(describe "$rc1"), out-of-memory case: $(describe "$rc2"))"
  elif grep -aq '^\[pagedjit-tests\] no GPU' "$log" || [ "$p1" = 0 ] || [ "$p2" = 0 ] || [ "$p1" = - ] || [ "$p2" = - ]; then
    status="FAIL (no GPU: the GPU cases were skipped)"
  fi
  [ "$status" = OK ] || failed=1
  summary+=("$(printf '%-9s %s in %dm%02ds | suite: %s test cases passed, %s failed; %s | out-of-memory case: %s passed, %s failed; %s' \
    "$tool" "$status" $((secs / 60)) $((secs % 60)) "$p1" "$f1" "$san1" "$p2" "$f2" "$san2")")
  echo "${summary[-1]}"
done

echo "=== compute-sanitizer summary (logs in $OUT)"
printf '%s\n' "${summary[@]}"
exit "$failed"
