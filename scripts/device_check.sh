#!/usr/bin/env bash
# One call on the GPU machine: build, tests, demo, and optionally the
# benchmark (BENCH=1) and the configuration sweep (SWEEP=1). Logs go to $OUT;
# a short summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/pagedjit-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
{ time scripts/setup.sh; } > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
if [ "${TESTS:-1}" = 1 ]; then build/tests/pagedjit-tests > "$OUT/tests.log" 2>&1; trc=$?; else trc=skipped; fi
build/tools/pagedjit-demo > "$OUT/demo.log" 2>&1; drc=$?
brc=skipped; src=skipped
if [ "${BENCH:-0}" = 1 ]; then
  build/tools/pagedjit-bench --cases bench/cases.json --peers bench/peers-h100.json --json "$OUT/bench.json" \
    --svg "$OUT/bench.svg" > "$OUT/bench.log" 2>&1; brc=$?
fi
san=skipped
if [ "${SANITIZE:-0}" = 1 ]; then  # the whole GPU suite under each tool (SANITIZERS: a subset)
  # shellcheck disable=SC2086
  OUT="$OUT/sanitize" PAGEDJIT_TESTS=build/tests/pagedjit-tests scripts/sanitize_gpu.sh ${SANITIZERS:-} \
    > "$OUT/sanitize.log" 2>&1
  san="rc=$?"
fi
if [ "${SWEEP:-0}" = 1 ]; then scripts/perf_sweep.sh --json "$OUT/sweep.json" > "$OUT/sweep.log" 2>&1; src=$?; fi
if [ "${EMBED:-0}" = 1 ]; then
  (cd build && ctest -R "c_api|install|python" --output-on-failure) > "$OUT/embed.log" 2>&1; erc=$?
  python3 examples/python/seed_example.py --lib build/libpagedjit.so >> "$OUT/embed.log" 2>&1
  python3 examples/python/seed_example.py --lib build/libpagedjit.so --dtype fp32 >> "$OUT/embed.log" 2>&1; prc=$?
fi
echo "=== gpu"; cat "$OUT/gpu.txt"
[ -f "$OUT/embed.log" ] && { echo "=== embedding (ctest rc=$erc, python rc=$prc)"; grep -vE "^\s*$" "$OUT/embed.log" | tail -25; }
echo "=== tests (rc=$trc)"; [ -f "$OUT/tests.log" ] && grep -E "ERROR|values|MESSAGE|\[doctest\] (test cases|assertions)|Status" "$OUT/tests.log" | head -40
echo "=== demo (rc=$drc)"; grep -E "plan:|error:|time:|^OK|FAIL|No GPU" "$OUT/demo.log"
echo "=== sanitizers ($san)"
[ -f "$OUT/sanitize.log" ] && { sed -n '/^=== compute-sanitizer summary/,$p' "$OUT/sanitize.log" | grep . || tail -5 "$OUT/sanitize.log"; }
echo "=== sweep (rc=$src)"
[ -f "$OUT/sweep.log" ] && awk '/^\[[0-9]+\/[0-9]+\]/ {name=$2} / ms, .* of read/ {print name, $1, "ms", $3, "GB/s", $6, "of read"}' "$OUT/sweep.log"
echo "=== bench (rc=$brc)"; [ -f "$OUT/bench.log" ] && tail -45 "$OUT/bench.log"
true
