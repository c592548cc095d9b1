// The translation unit NVRTC compiles. Specializations are instantiated by
// name (nvrtcAddNameExpression), never by pasting text into this file.
#include "paged_decode.cuh"
