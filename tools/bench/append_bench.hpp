// The append measurement: Engine::append_kv writing 4096 new tokens (8 KV
// heads, head_dim 128, bf16) into a page-16 cache, in GB/s of bytes read and
// written and as a fraction of the measured copy bandwidth.
#pragma once
#include <cuda.h>

#include "../common/bandwidth.hpp"
#include "../common/json.hpp"
#include "case_runner.hpp"
#include "pagedjit/engine.hpp"

namespace pjbench {

Json run_append(pagedjit::Engine& engine, const Bandwidth& bw, const RunSettings& s, CUstream stream);

}  // namespace pjbench
