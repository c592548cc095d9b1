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
b1="batch=1,q_heads=32,kv_heads=8,head_dim=128,page_size=16,ctx=131072"
for c in "name=l8b,$l8b" "name=l8b_t64s2,$l8b,tile=64,warps=4,stages=2" "name=l8b_t32s2,$l8b,tile=32,warps=2,stages=2" \
         "name=l8b_t32s3,$l8b,tile=32,warps=2,stages=3" "name=l8b_t128w8s2,$l8b,tile=128,warps=8,stages=2" \
         "name=l8b_c2k,$l8b,chunk=2048" "name=l8b_t64s2c2k,$l8b,tile=64,warps=4,stages=2,chunk=2048" \
         "name=var,$var" "name=var_c1k,$var,chunk=1024" "name=var_t64s2c1k,$var,tile=64,warps=4,stages=2,chunk=1024" \
         "name=var_t64s2c512,$var,tile=64,warps=4,stages=2,chunk=512" \
         "name=d256,$d256" "name=d256_t32s2,$d256,tile=32,warps=2,stages=2" "name=d256_dv128,$d256,tile=64,warps=4,stages=2,dv=128" \
         "name=d256_dv128s3,$d256,tile=32,warps=2,stages=3,dv=128" "name=d256_t16s4,$d256,tile=16,warps=1,stages=4" \
         "name=mqa,$mqa" "name=mqa_t64s2,$mqa,tile=64,warps=4,stages=2" \
         "name=b1,$b1" "name=b1_t64s2,$b1,tile=64,warps=4,stages=2"; do
  args+=(--case "$c")
done
exec "$B" --no-small --reps 100 "${args[@]}" "$@"
