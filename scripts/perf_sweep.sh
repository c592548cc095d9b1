#!/usr/bin/env bash
# Launch-configuration sweep on the GPU machine (v0.8): tile shapes and
# pipeline depths on the shapes that bound the public cases, for bf16 (tiles
# staged through registers up to 128 dims; cp.async for d256) and an e4m3
# cache (cp.async), plus the tiny call's partitions. Forced configurations
# bypass the tuned profiles. Usage: perf_sweep.sh [bench args, e.g. --json F]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
B=${PAGEDJIT_BENCH:-build/tools/pagedjit-bench}
g="q_heads=32,kv_heads=8,head_dim=128,page_size=16"
declare -A shapes=(
  [l8b]="batch=64,$g,ctx=4096" [b4]="batch=4,$g,ctx=32768" [var]="batch=64,$g,ctx=var:8192"
  [mha]="batch=32,q_heads=32,kv_heads=32,head_dim=128,page_size=16,ctx=2048"
  [mqa]="batch=128,q_heads=8,kv_heads=1,head_dim=128,page_size=16,ctx=4096"
  [d256]="batch=32,q_heads=16,kv_heads=8,head_dim=256,page_size=16,ctx=4096")
args=()
add() {  # name shape tile/warps/stages [extra fields]
  local tile warps stages
  IFS=/ read -r tile warps stages <<<"$3"
  args+=(--case "name=$1_${tile}_${warps}_${stages},$2,tile=$tile,warps=$warps,stages=$stages${4:+,$4}")
}
for n in l8b mha b4 mqa var; do
  for t in 32/2/2 32/2/3 64/4/2 64/4/3 16/1/2 128/8/2; do add "$n" "${shapes[$n]}" "$t"; done
done
for t in 32/2/2 32/2/3 64/4/2 64/4/3 64/2/2; do add d256 "${shapes[d256]}" "$t"; done
for n in l8b b4 mqa; do
  for t in 32/2/2 32/2/3 64/4/3 64/4/5 128/8/4; do add "${n}_e4m3" "${shapes[$n]},kv_dtype=e4m3" "$t"; done
done
tiny="batch=1,$g,ctx=1024"
for s in 4 8 16; do args+=(--case "name=tiny_s$s,$tiny,splits=$s"); done
exec "$B" --no-small --reps 100 "${args[@]}" "$@"
