#!/usr/bin/env bash
# One call on the GPU machine: build, tests, demo (and the benchmark when
# asked). Logs go to $OUT; a short summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/pagedjit-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
{ time scripts/setup.sh; } > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
build/tests/pagedjit-tests "${TEST_ARGS[@]:-}" > "$OUT/tests.log" 2>&1; trc=$?
build/tools/pagedjit-demo > "$OUT/demo.log" 2>&1; drc=$?
if [ -n "${BENCH_ARGS:-}" ] && [ -x build/tools/pagedjit-bench ]; then
  build/tools/pagedjit-bench $BENCH_ARGS > "$OUT/bench.log" 2>&1; brc=$?
else brc=skipped; fi
echo "=== gpu"; cat "$OUT/gpu.txt"
echo "=== tests (rc=$trc)"; grep -E "ERROR|CHECK|values|rel_l2|worst|compiled|\[doctest\] (test cases|assertions)|Status" "$OUT/tests.log" | head -60
echo "=== demo (rc=$drc)"; tail -16 "$OUT/demo.log"
echo "=== bench (rc=$brc)"; [ -f "$OUT/bench.log" ] && tail -40 "$OUT/bench.log"
true
