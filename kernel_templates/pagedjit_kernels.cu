// The translation unit NVRTC compiles. Specializations are instantiated by
// name (nvrtcAddNameExpression), never by pasting text into this file.
#include "append_kv.cuh"
#include "merge_states.cuh"
#include "paged_decode.cuh"
#include "paged_prefill.cuh"
