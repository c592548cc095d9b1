#!/usr/bin/env bash
# One device call: build, benches, tests. Logs under $OUT; summary last.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader > "$OUT/gpu.txt" 2>&1
timeout 200 scripts/setup.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built at $(el)s"
B=build/tools/pagedjit-bench
run() { local name=$1 lim=$2; shift 2; timeout "$lim" "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$? at $(el)s"; }
run dev 110 $B --reps 100 --warmup 10 --no-small --json "$OUT/dev.json"
run host 110 $B --reps 100 --warmup 10 --no-small --host-schedule
run tests 150 build/tests/pagedjit-tests -ts=gpu
run py 90 ctest --test-dir build -R '^(c_api|python_gpu)$' --output-on-failure
run glob 60 $B --reps 100 --warmup 10 --no-small --host-schedule --no-cluster --only mqa_b128_c4k,l8b_b4_c32k,var_b64_8k,l8b_b1_c128k
M=gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_active.min,dram__throughput.avg.pct_of_peak_sustained_elapsed
for c in mqa_b128_c4k l8b_b64_c4k; do for s in "" --host-schedule; do
  echo "== $c $s" >> "$OUT/ncu.log"
  timeout 40 ncu --clock-control none --kernel-name regex:paged_decode --launch-skip 5 --launch-count 1 --metrics $M \
    $B --only $c --reps 100 --warmup 6 --no-small --no-read-floor $s 2>&1 | grep -E "^\s+(gpu__|sm__|dram__)" >> "$OUT/ncu.log"
done; done; echo "ncu at $(el)s"
run small 60 $B --reps 100 --warmup 10 --only l8b_b1_c128k
echo "=== gpu"; cat "$OUT/gpu.txt"
echo "=== tests"; grep -E "test cases|assertions|ERROR|FAILED" "$OUT/tests.log" | head -20
echo "=== py"; grep -E "tests passed|Failed|failed|passed" "$OUT/py.log" | head
s() { awk '/^\[[0-9]+\/[0-9]+\]/ {name=$2} / ms, .* of read/ {print name, $1, $6}' "$OUT/$1.log"; }
echo "=== read fraction: case dev_ms dev host_ms host"; join <(s dev | sort) <(s host | sort)
echo "=== host+global merge"; s glob
echo "=== ncu"; cat "$OUT/ncu.log"
echo "=== small"; sed -n '/small/,$p' "$OUT/small.log" | head -40
