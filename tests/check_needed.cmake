# Fails when one of FILES ("|"-separated) names a forbidden library as a NEEDED
# entry. The CUDA driver (libcuda) is loaded with dlopen at run time; were it
# NEEDED, nothing built here would start on a machine without a driver (nor
# report driver_not_found), and a link against the toolkit's stub would bind
# it first. CUDA::nvrtc's link interface names that stub: only --as-needed
# (root CMakeLists.txt) drops it.
#   cmake -DREADELF=readelf "-DFILES=a|b" -DFORBIDDEN=libcuda -P check_needed.cmake
if(NOT READELF)
  message(FATAL_ERROR "check_needed: no readelf (CMAKE_READELF) to read the dynamic sections with")
endif()
if(NOT FORBIDDEN)
  set(FORBIDDEN libcuda)
endif()
string(REPLACE "|" ";" files "${FILES}")
set(bad "")
foreach(f IN LISTS files)
  if(NOT EXISTS "${f}")
    message(FATAL_ERROR "check_needed: ${f} does not exist")
  endif()
  execute_process(COMMAND ${READELF} -d "${f}" OUTPUT_VARIABLE dyn ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "check_needed: ${READELF} -d ${f} failed: ${err}")
  endif()
  string(REGEX MATCHALL "\\(NEEDED\\)[^\n]*\\[[^]\n]*\\]" needed "${dyn}")
  if(NOT needed)
    message(FATAL_ERROR "check_needed: no NEEDED entries read from ${f}: is it a dynamic ELF file?")
  endif()
  set(names "")
  foreach(line IN LISTS needed)
    string(REGEX REPLACE ".*\\[([^]]*)\\].*" "\\1" name "${line}")
    list(APPEND names ${name})
    if(name MATCHES "^${FORBIDDEN}[.]")
      list(APPEND bad "${f}: NEEDED ${name}")
    endif()
  endforeach()
  message(STATUS "${f}: NEEDED ${names}")
endforeach()
if(bad)
  list(JOIN bad "\n  " text)
  message(FATAL_ERROR "check_needed: ${FORBIDDEN} must be loaded with dlopen, never linked:\n  ${text}\n"
                      "(link with --as-needed: CUDA::nvrtc's interface names the toolkit's stub libcuda)")
endif()
