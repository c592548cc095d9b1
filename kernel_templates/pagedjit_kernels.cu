// The translation unit NVRTC compiles. Specializations are instantiated by
// name (nvrtcAddNameExpression), never by pasting text into this file.
#include "paged_combine.cuh"
#include "paged_decode.cuh"
