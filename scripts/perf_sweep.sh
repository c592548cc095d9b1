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
b1="batch=1,q_heads=32,kv_heads=8,head_dim=128,page_size=16,ctx=131072"
b4="batch=4,q_heads=32,kv_heads=8,head_dim=128,page_size=16,ctx=32768"
mha="batch=32,q_heads=32,kv_heads=32,head_dim=128,page_size=16,ctx=2048"
for c in "name=l8b,$l8b" "name=l8b_c2k,$l8b,chunk=2048" "name=l8b_c1k,$l8b,chunk=1024" "name=l8b_t32s2,$l8b,tile=32,warps=2,stages=2" \
         "name=mha,$mha" "name=mha_c1k,$mha,chunk=1024" "name=mha_t32s2,$mha,tile=32,warps=2,stages=2" \
         "name=var,$var" "name=var_c1k,$var,chunk=1024" "name=var_c2k,$var,chunk=2048" "name=var_c512,$var,chunk=512" \
         "name=var_c1k_t32,$var,chunk=1024,tile=32,warps=2,stages=2" \
         "name=b4,$b4" "name=b4_s16,$b4,splits=16" "name=b4_c1k,$b4,chunk=1024" "name=b4_c2k,$b4,chunk=2048" \
         "name=b1,$b1" "name=b1_c2k,$b1,chunk=2048" "name=b1_c1k,$b1,chunk=1024" "name=b1_s66,$b1,splits=66" \
         "name=mqa,$mqa" "name=mqa_s4,$mqa,splits=4" "name=d256,$d256" "name=d256_c2k,$d256,chunk=2048"; do
  args+=(--case "$c")
done
exec "$B" --no-small --reps 100 "${args[@]}" "$@"
