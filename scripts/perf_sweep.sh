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
mha="batch=32,q_heads=32,kv_heads=32,head_dim=128,page_size=16,ctx=2048"
tiny="batch=1,q_heads=32,kv_heads=8,head_dim=128,page_size=16,ctx=1024"
for c in "name=l8b,$l8b" "name=l8b_nhd,$l8b,layout=blocks_tokens" "name=l8b_hb,$l8b,layout=heads_blocks" \
         "name=mha,$mha" "name=mha_nhd,$mha,layout=blocks_tokens" \
         "name=var,$var" "name=var_c1k,$var,chunk=1024" "name=var_c1500,$var,chunk=1536" \
         "name=tiny,$tiny" "name=tiny_s8,$tiny,splits=8" "name=tiny_s16,$tiny,splits=16" \
         "name=tiny_t32s8,$tiny,splits=8,tile=32,warps=2,stages=2" "name=tiny_s1,$tiny,splits=1"; do
  args+=(--case "$c")
done
exec "$B" --no-small --reps 100 "${args[@]}" "$@"
