#!/usr/bin/env bash
# Nsight Compute metrics of the decode kernel, one bench case at a time: its
# duration without the launch gap that CUDA-event timing includes, how much of
# it the SMs are busy (ramp-up and tail show as idle SM cycles), DRAM bytes and
# throughput. Clocks are left as they run (ncu would lock them to base).
# usage: scripts/ncu_cases.sh CASES_FILE CASE [CASE...]   (needs a built tree)
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CASES_FILE CASE [CASE...]"; exit 2; }
cases_file=$(realpath "$1")  # before the cd below
shift
cd "$(dirname "$0")/.." || exit 1
command -v ncu > /dev/null || { echo "ncu not found: Nsight Compute is not installed"; exit 1; }
metrics=gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_active.min,sm__cycles_elapsed.avg
metrics+=,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,launch__waves_per_multiprocessor,sm__warps_active.avg.pct_of_peak_sustained_active
for c in "$@"; do
  echo "=== $c"
  ncu --clock-control none --kernel-name regex:paged_decode --launch-skip 10 --launch-count 1 \
    --metrics "$metrics" build/tools/pagedjit-bench --cases "$cases_file" --only "$c" --reps 100 --warmup 12 \
    --no-small 2>&1 | grep -E "^\s+(gpu__|sm__|dram__|launch__)|paged_decode<|ERROR|error" | sed 's/^ *//'
done
