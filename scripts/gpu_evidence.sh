#!/usr/bin/env bash
# The measurements the open issues still need, sized for one device call
# (under ten minutes) per part. Each part builds first (about a minute on a
# warm machine's build tree, more on a fresh one), logs to $OUT and prints a
# short summary last.
#
#   scripts/gpu_evidence.sh tests    the GPU suite; compute-sanitizer memcheck and racecheck on the
#                                    scheduler's, the ragged call's and append_kv's tests; the Python
#                                    GPU tests and the transformers example
#   scripts/gpu_evidence.sh decode   decode bench: device schedule against the host schedule (public,
#                                    ragged and uniform-twin cases), the host schedule with global
#                                    merges, Nsight Compute on two cases, the small calls
#   scripts/gpu_evidence.sh ragged   ragged/prefill/mixed/append bench, decode through the ragged
#                                    entry point against paged_attention, host cost with 16 threads
#   scripts/gpu_evidence.sh specialize  page size, group and split count compiled in, against run-time
#                                    values (scripts/specialize_sweep.sh, one round; run it twice)
#
# Environment: OUT (default /tmp/pagedjit-evidence). Every step has its own
# time limit, so a hang costs that step only.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
part=${1:-}
OUT=${OUT:-/tmp/pagedjit-evidence}
mkdir -p "$OUT"
T0=$(date +%s)
elapsed() { echo $(($(date +%s) - T0)); }
B=build/tools/pagedjit-bench
T=build/tests/pagedjit-tests

# step NAME SECONDS COMMAND...: runs COMMAND into $OUT/NAME.log and says how it ended.
step() {
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: rc=$? at $(elapsed) s"
}
# The "[i/n] name" and "X ms, Y GB/s = Z of read" lines of a bench log, as "name ms fraction".
fractions() { awk '/^\[[0-9]+\/[0-9]+\]/ {name=$2} / ms, .* of read/ {print name, $1, $6}' "$OUT/$1.log"; }
doctest_summary() { grep -E "test cases|assertions|ERROR|FAILED" "$OUT/$1.log" | head -20; }

nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader >"$OUT/gpu.txt" 2>&1
step build 300 scripts/setup.sh || true
[ -x "$T" ] && [ -x "$B" ] || {
  tail -30 "$OUT/build.log"
  exit 1
}

case "$part" in
  tests)
    step gpu_tests 240 "$T" -ts=gpu
    export PAGEDJIT_UNDER_SANITIZER=1
    new_tests='*device schedule*,gpu ragged*,*ragged call*,*sinks*,gpu append*'
    step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" -ts=gpu -tc="$new_tests"
    step racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 "$T" -ts=gpu -tc='*same bits twice*,gpu ragged: the prefill kernel, launched directly, on edge cases'
    unset PAGEDJIT_UNDER_SANITIZER
    step python 150 ctest --test-dir build -R '^(c_api|python_gpu|python_hf_decode)$' --output-on-failure -V
    echo "=== gpu"; cat "$OUT/gpu.txt"
    for s in gpu_tests memcheck racecheck; do echo "=== $s"; doctest_summary $s; grep -E "ERROR SUMMARY" "$OUT/$s.log"; done
    echo "=== python"; grep -E "passed|failed|error|Test #" "$OUT/python.log" | tail -12
    ;;
  decode)
    step dev 120 "$B" --reps 100 --warmup 10 --no-small --json "$OUT/dev.json"
    step host 120 "$B" --reps 100 --warmup 10 --no-small --host-schedule --json "$OUT/host.json"
    step host_global 60 "$B" --reps 100 --warmup 10 --no-small --host-schedule --no-cluster \
      --only mqa_b128_c4k,l8b_b4_c32k,var_b64_8k,l8b_b1_c128k
    metrics=gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_active.min
    metrics+=,dram__throughput.avg.pct_of_peak_sustained_elapsed
    for c in mqa_b128_c4k l8b_b64_c4k; do
      for s in "" --host-schedule; do
        echo "== $c $s" >>"$OUT/ncu.log"
        timeout 45 ncu --clock-control none --kernel-name regex:paged_decode --launch-skip 5 --launch-count 1 \
          --metrics "$metrics" "$B" --only $c --reps 100 --warmup 6 --no-small --no-read-floor $s 2>&1 |
          grep -E "^\s+(gpu__|sm__|dram__)" >>"$OUT/ncu.log"
      done
    done
    step small 60 "$B" --reps 100 --warmup 10 --only l8b_b1_c128k --json "$OUT/small.json"
    echo "=== gpu"; cat "$OUT/gpu.txt"
    echo "=== fraction of read: case device_ms device host_ms host"
    join <(fractions dev | sort) <(fractions host | sort)
    echo "=== host schedule, global merge"; fractions host_global
    echo "=== ncu"; cat "$OUT/ncu.log"
    echo "=== small calls"; sed -n '/small/,$p' "$OUT/small.log" | head -30
    ;;
  ragged)
    step ragged 330 "$B" --cases bench/cases.json --cases bench/cases-ragged.json --ragged-decode --reps 100 \
      --warmup 10 --no-small --json "$OUT/ragged.json"
    step threads 90 "$B" --threads 16 --json "$OUT/threads.json"
    echo "=== gpu"; cat "$OUT/gpu.txt"
    echo "=== ragged"; tail -60 "$OUT/ragged.log"
    echo "=== threads"; tail -12 "$OUT/threads.log"
    ;;
  specialize)
    export FIRST_ROUND=${FIRST_ROUND:-1} ROUNDS=1
    step sweep 480 scripts/specialize_sweep.sh "$OUT/spec-runs"
    step table 30 python3 scripts/compare_specialize.py "$OUT/spec-runs"
    echo "=== gpu"; cat "$OUT/gpu.txt"
    tail -5 "$OUT/sweep.log"
    cat "$OUT/table.log"
    ;;
  *)
    echo "usage: $0 tests|decode|ragged|specialize" >&2
    exit 2
    ;;
esac
