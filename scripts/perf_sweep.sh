#!/usr/bin/env bash
# Launch-configuration sweep on the GPU machine: which tile shape, pipeline
# depth and partitioning each public shape likes. Usage: perf_sweep.sh [bench args]
set -uo pipefail
cd "$(dirname "$0")/.."
B=build/tools/pagedjit-bench
l8b="batch=64,q_heads=32,kv_heads=8,head_dim=128,page_size=16,ctx=4096"
d256="batch=32,q_heads=16,kv_heads=8,head_dim=256,page_size=16,ctx=4096"
mqa="batch=128,q_heads=8,kv_heads=1,head_dim=128,page_size=16,ctx=4096"
var="batch=64,q_heads=32,kv_heads=8,head_dim=128,page_size=16,ctx=var:8192"
args=()
for c in "name=l8b,$l8b" "name=l8b_t32s4,$l8b,tile=32,warps=2,stages=4" "name=l8b_t32s6,$l8b,tile=32,warps=2,stages=6" \
         "name=l8b_t64s4,$l8b,tile=64,warps=4,stages=4" "name=l8b_t16s8,$l8b,tile=16,warps=1,stages=8" \
         "name=l8b_t64w2,$l8b,tile=64,warps=2,stages=3" "name=l8b_t128s2,$l8b,tile=128,warps=4,stages=2" \
         "name=l8b_c2k,$l8b,chunk=2048" "name=l8b_c1k,$l8b,chunk=1024" \
         "name=var,$var" "name=var_c1k,$var,chunk=1024" "name=var_c2k,$var,chunk=2048" \
         "name=d256,$d256" "name=d256_t64s2,$d256,tile=64,warps=4,stages=2" "name=d256_t16s6,$d256,tile=16,warps=1,stages=6" \
         "name=d256_t32s2,$d256,tile=32,warps=2,stages=2" "name=d256_c2k,$d256,chunk=2048" \
         "name=mqa,$mqa" "name=mqa_c1k,$mqa,chunk=1024" "name=mqa_t32s6,$mqa,tile=32,warps=2,stages=6"; do
  args+=(--case "$c")
done
exec "$B" --no-small --reps 100 "${args[@]}" "$@"
