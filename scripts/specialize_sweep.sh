#!/usr/bin/env bash
# The specialization measurement (docs/performance.md, "Specialization"):
# pagedjit-bench over bench/cases.json and bench/cases-groups.json once per
# --specialize flavour (none, page, group, splits), ROUNDS times in
# alternating order; then the same with --host-schedule for none and splits
# (the split count is compiled in only where the host schedule fixes it).
# Each run writes OUT/<schedule>-<flavour>-r<round>.json (schedule: auto or
# host) and its printed table as .txt; scripts/compare_specialize.py OUT then
# prints the table for docs/performance.md from whatever runs OUT holds, so
# the runs may be split over several commands (FLAVOURS, SCHEDULES, ROUNDS,
# FIRST_ROUND select them).
# Usage: specialize_sweep.sh [OUT (default build/spec-runs)] [more pagedjit-bench args]
# Environment: PAGEDJIT_BENCH (default build/tools/pagedjit-bench),
#   FLAVOURS (default "none page group splits"), SCHEDULES (default "auto host"),
#   ROUNDS (default 2), FIRST_ROUND (default 1).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
B=${PAGEDJIT_BENCH:-build/tools/pagedjit-bench}
out=${1:-build/spec-runs}
[ $# -gt 0 ] && shift
flavours=${FLAVOURS:-none page group splits}
schedules=${SCHEDULES:-auto host}
first=${FIRST_ROUND:-1}
last=$((first + ${ROUNDS:-2} - 1))
mkdir -p "$out" || exit 1
status=0
for r in $(seq "$first" "$last"); do
  for sched in $schedules; do
    for f in $flavours; do
      extra=()
      if [ "$sched" = host ]; then
        # Host schedule: only the split count is worth a run (page and group
        # compile in the same way under either schedule).
        [ "$f" = none ] || [ "$f" = splits ] || continue
        extra=(--host-schedule)
      fi
      name="$out/$sched-$f-r$r"
      echo "== $name"
      "$B" --cases bench/cases.json --cases bench/cases-groups.json --no-small --no-append --no-read-floor \
        --specialize "$f" "${extra[@]}" --json "$name.json" "$@" >"$name.txt" 2>&1 || {
        echo "   failed: see $name.txt"
        status=1
      }
    done
  done
done
python3 scripts/compare_specialize.py "$out" || status=1
exit $status
