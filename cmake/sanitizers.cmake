# Sanitizer and fuzzing builds. Included by the root CMakeLists.txt
# before any target is defined, so the flags reach every target (library,
# tests, tools).
#
#   PAGEDJIT_SANITIZE  sanitizers for every target, as a list: "address;undefined"
#                      (commas work too: "address,undefined"); ON means both.
#                      Errors abort (no recovery). scripts/sanitize.sh uses it.
#   PAGEDJIT_FUZZ      libFuzzer targets in tests/fuzz/ (clang only). Every
#                      target gets coverage instrumentation plus ASan and UBSan;
#                      the fuzzers link libFuzzer's main. scripts/fuzz.sh uses it.
#
# NVRTC and the dlopen'd driver are not instrumented: ASan sees their memory
# only through malloc/free.
set(PAGEDJIT_SANITIZE "" CACHE STRING "Sanitizers for every target, e.g. address;undefined (ON: both)")
option(PAGEDJIT_FUZZ "Build the libFuzzer targets in tests/fuzz (clang; adds ASan and UBSan everywhere)" OFF)

set(_pj_sanitizers "")
if(PAGEDJIT_SANITIZE)
  if(PAGEDJIT_SANITIZE STREQUAL "ON" OR PAGEDJIT_SANITIZE STREQUAL "TRUE" OR PAGEDJIT_SANITIZE STREQUAL "1")
    set(_pj_sanitizers address undefined)
  else()
    string(REPLACE "," ";" _pj_sanitizers "${PAGEDJIT_SANITIZE}")
  endif()
endif()
if(PAGEDJIT_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "PAGEDJIT_FUZZ needs clang (libFuzzer): configure with CXX=clang++ (scripts/fuzz.sh does)")
  endif()
  list(APPEND _pj_sanitizers address undefined)
endif()
list(REMOVE_DUPLICATES _pj_sanitizers)

if(_pj_sanitizers)
  string(REPLACE ";" "," _pj_sanitize_flag "${_pj_sanitizers}")
  message(STATUS "pagedjit: -fsanitize=${_pj_sanitize_flag}")
  add_compile_options(-fsanitize=${_pj_sanitize_flag} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${_pj_sanitize_flag})
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC's manual: sanitizers raise the rate of false -Wmaybe-uninitialized
    # warnings (here: inside libstdc++'s <regex>). Every other warning stays an error.
    add_compile_options(-Wno-maybe-uninitialized)
  endif()
endif()
if(_pj_sanitizers)
  # CUDA::nvrtc drags in the toolkit's libcuda stub. Debian's gcc links
  # --as-needed, which drops it, but not with -fsanitize (nor does clang ever):
  # then libcuda.so.1 becomes a NEEDED entry and nothing starts without a driver.
  add_link_options(LINKER:--as-needed)
endif()
if(PAGEDJIT_FUZZ)
  # Coverage for libFuzzer in every object; only the fuzzers link its main.
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
