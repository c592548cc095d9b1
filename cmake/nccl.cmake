# NCCL, optional: only the tensor-parallel tool (tools/tp, pagedjit-tp) uses it,
# to gather the shards' outputs. The library never needs it.
#
#   PAGEDJIT_WITH_NCCL  AUTO (default): use NCCL when found; ON: required; OFF: never
#   NCCL_ROOT, or the environment's NCCL_ROOT / NCCL_HOME: an install prefix to try first
#   NCCL_INCLUDE_DIR / NCCL_LIBRARY: set both to skip the search
#
# Looked for, in order: the hints above, the CUDA toolkit's directories,
# /usr/local/cuda, the system's directories, and the nvidia-nccl wheel that
# PyTorch installs (site-packages/nvidia/nccl, asked of python3). The library
# is found by the prefix of the header first, so the two come from one install.
# Defines PAGEDJIT_NCCL_FOUND, PAGEDJIT_NCCL_VERSION and, when found, the
# imported target pagedjit::nccl.
set(PAGEDJIT_WITH_NCCL AUTO CACHE STRING "Use NCCL in pagedjit-tp: AUTO (when found), ON (required) or OFF")
set_property(CACHE PAGEDJIT_WITH_NCCL PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${PAGEDJIT_WITH_NCCL}" _pj_nccl_mode)
if(_pj_nccl_mode STREQUAL "TRUE" OR _pj_nccl_mode STREQUAL "YES" OR _pj_nccl_mode STREQUAL "1")
  set(_pj_nccl_mode ON)
elseif(_pj_nccl_mode STREQUAL "FALSE" OR _pj_nccl_mode STREQUAL "NO" OR _pj_nccl_mode STREQUAL "0")
  set(_pj_nccl_mode OFF)
endif()
if(NOT _pj_nccl_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "PAGEDJIT_WITH_NCCL must be AUTO, ON or OFF (got '${PAGEDJIT_WITH_NCCL}')")
endif()

set(PAGEDJIT_NCCL_FOUND FALSE)
set(PAGEDJIT_NCCL_VERSION "")

if(_pj_nccl_mode STREQUAL "OFF")
  message(STATUS "NCCL: off (PAGEDJIT_WITH_NCCL=OFF): pagedjit-tp gathers outputs with device copies")
  return()
endif()

# Candidate install prefixes, most specific first.
set(_pj_nccl_prefixes)
foreach(_p IN ITEMS "${NCCL_ROOT}" "$ENV{NCCL_ROOT}" "$ENV{NCCL_HOME}")
  if(_p)
    list(APPEND _pj_nccl_prefixes "${_p}")
  endif()
endforeach()
foreach(_d IN LISTS CUDAToolkit_INCLUDE_DIRS)
  get_filename_component(_p "${_d}" DIRECTORY)  # <toolkit>/include, or targets/<arch>/include
  list(APPEND _pj_nccl_prefixes "${_p}")
endforeach()
if(CUDAToolkit_LIBRARY_ROOT)
  list(APPEND _pj_nccl_prefixes "${CUDAToolkit_LIBRARY_ROOT}")
endif()
list(APPEND _pj_nccl_prefixes /usr/local/cuda /usr)

# The nvidia-nccl-cu* wheel (PyTorch's dependency): <site-packages>/nvidia/nccl/{include,lib}.
find_program(PAGEDJIT_PYTHON3 NAMES python3 python)
mark_as_advanced(PAGEDJIT_PYTHON3)
if(PAGEDJIT_PYTHON3)
  execute_process(
    COMMAND "${PAGEDJIT_PYTHON3}" -c
            "import os, nvidia.nccl as m; f = getattr(m, '__file__', None); print(os.path.dirname(f) if f else list(m.__path__)[0])"
    OUTPUT_VARIABLE _pj_nccl_wheel
    RESULT_VARIABLE _pj_nccl_wheel_rc
    ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE TIMEOUT 30)
  if(_pj_nccl_wheel_rc EQUAL 0 AND IS_DIRECTORY "${_pj_nccl_wheel}")
    list(APPEND _pj_nccl_prefixes "${_pj_nccl_wheel}")
  endif()
endif()
list(REMOVE_DUPLICATES _pj_nccl_prefixes)

set(_pj_nccl_include_hints)
foreach(_p IN LISTS _pj_nccl_prefixes)
  list(APPEND _pj_nccl_include_hints "${_p}/include")
endforeach()
list(APPEND _pj_nccl_include_hints ${CUDAToolkit_INCLUDE_DIRS} /usr/include)

find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_pj_nccl_include_hints} DOC "Directory of nccl.h")

# Library directories: the header's prefix first, then every candidate.
set(_pj_nccl_lib_hints)
if(NCCL_INCLUDE_DIR)
  get_filename_component(_p "${NCCL_INCLUDE_DIR}" DIRECTORY)
  list(APPEND _pj_nccl_lib_hints "${_p}/lib" "${_p}/lib64" "${_p}/lib/x86_64-linux-gnu")
endif()
foreach(_p IN LISTS _pj_nccl_prefixes)
  list(APPEND _pj_nccl_lib_hints "${_p}/lib" "${_p}/lib64" "${_p}/lib/x86_64-linux-gnu")
endforeach()
list(APPEND _pj_nccl_lib_hints ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
# libnccl.so.2 alone: wheels ship no unversioned symlink.
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_pj_nccl_lib_hints} DOC "The NCCL shared library")
mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)

if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _pj_nccl_defs REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    set(_pj_nccl_${_part} "?")
    if(_pj_nccl_defs MATCHES "NCCL_${_part} +([0-9]+)")
      set(_pj_nccl_${_part} "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  set(PAGEDJIT_NCCL_VERSION "${_pj_nccl_MAJOR}.${_pj_nccl_MINOR}.${_pj_nccl_PATCH}")
  set(PAGEDJIT_NCCL_FOUND TRUE)
  if(NOT TARGET pagedjit::nccl)
    add_library(pagedjit::nccl UNKNOWN IMPORTED)
    set_target_properties(pagedjit::nccl PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
                                                    INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
  endif()
  message(STATUS "NCCL: found ${PAGEDJIT_NCCL_VERSION} (${NCCL_LIBRARY}, ${NCCL_INCLUDE_DIR}/nccl.h): "
                 "pagedjit-tp gathers outputs with ncclAllGather")
elseif(_pj_nccl_mode STREQUAL "ON")
  message(FATAL_ERROR "NCCL: not found, and PAGEDJIT_WITH_NCCL=ON requires it (nccl.h: ${NCCL_INCLUDE_DIR}, "
                      "library: ${NCCL_LIBRARY}). Searched the prefixes ${_pj_nccl_prefixes}; set NCCL_ROOT, or "
                      "NCCL_INCLUDE_DIR and NCCL_LIBRARY, or use PAGEDJIT_WITH_NCCL=AUTO/OFF.")
else()
  message(STATUS "NCCL: not found (nccl.h: ${NCCL_INCLUDE_DIR}, library: ${NCCL_LIBRARY}): pagedjit-tp gathers "
                 "outputs with device copies. Set NCCL_ROOT, or NCCL_INCLUDE_DIR and NCCL_LIBRARY, to use it.")
endif()
