# Embedding tests: the C API from C, an install consumed by a
# separate project, and the Python ctypes example. Included from tests/CMakeLists.txt.

# The C API test, compiled as strict C99.
add_executable(pagedjit-c-api-test c_api_test.c)
target_link_libraries(pagedjit-c-api-test PRIVATE pagedjit ${CMAKE_DL_LIBS} m)
target_compile_options(pagedjit-c-api-test PRIVATE -pedantic-errors)
add_test(NAME c_api COMMAND pagedjit-c-api-test)
# Each driver failure reaches C as its own status (the driver loads once per process).
add_test(NAME c_api_no_driver COMMAND pagedjit-c-api-test --expect-driver driver_not_found)
add_test(NAME c_api_stub_driver COMMAND pagedjit-c-api-test --expect-driver stub_library)
set_tests_properties(c_api c_api_no_driver c_api_stub_driver PROPERTIES LABELS cpu)
set_tests_properties(c_api_no_driver PROPERTIES ENVIRONMENT "PAGEDJIT_LIBCUDA=/nonexistent/libcuda.so.1")
set_tests_properties(c_api_stub_driver PROPERTIES ENVIRONMENT
                     "PAGEDJIT_LIBCUDA=${CUDAToolkit_LIBRARY_DIR}/stubs/libcuda.so")

# The tests below load the library into programs built without the
# sanitizer flags (ASan insists on coming first): not in sanitizer builds.
if(PAGEDJIT_SANITIZE OR PAGEDJIT_FUZZ)
  message(STATUS "pagedjit: sanitizer build: the install and python_example tests are left out")
  return()
endif()

# cmake --install into a temporary prefix, then tests/consumer built against it.
get_filename_component(PAGEDJIT_CUDA_ROOT ${CUDAToolkit_BIN_DIR} DIRECTORY)
add_test(NAME install
         COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR} -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_test
                 -DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}/consumer "-DGENERATOR=${CMAKE_GENERATOR}"
                 -DMAKE_PROGRAM=${CMAKE_MAKE_PROGRAM} -DCXX=${CMAKE_CXX_COMPILER} -DCC=${CMAKE_C_COMPILER}
                 -DCUDA_ROOT=${PAGEDJIT_CUDA_ROOT} -DVERSION=${PROJECT_VERSION}
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/install_test.cmake)
set_tests_properties(install PROPERTIES LABELS cpu RUN_SERIAL ON)

# The Python example (ctypes): without a GPU it checks the call through
# pagedjit_validate and exits 0; with one it runs the seed example.
find_program(PAGEDJIT_PYTHON3 python3)
if(PAGEDJIT_PYTHON3)
  add_test(NAME python_example
           COMMAND ${PAGEDJIT_PYTHON3} ${PROJECT_SOURCE_DIR}/examples/python/seed_example.py --lib $<TARGET_FILE:pagedjit>)
  set_tests_properties(python_example PROPERTIES LABELS cpu)
endif()

# The Python package (issue 22): pytest on python/tests against this build's
# library. python_cpu runs everything but the GPU tests; python_gpu the GPU
# tests (torch with CUDA), which pytest reports as skipped, with the reason,
# on a machine without a GPU or without torch; python_hf_decode the
# transformers example (examples/python/hf_decode.py), likewise skipped without
# a GPU, torch or transformers (-s: its comparison and timings reach the log).
# The package imports torch when installed.
if(PAGEDJIT_PYTHON3)
  set(_pj_pytest ${PAGEDJIT_PYTHON3} ${PROJECT_SOURCE_DIR}/python/tests/run_pytest.py $<TARGET_FILE:pagedjit>)
  add_test(NAME python_cpu COMMAND ${_pj_pytest} -m "not gpu")
  add_test(NAME python_gpu COMMAND ${_pj_pytest} -m gpu --ignore=${PROJECT_SOURCE_DIR}/python/tests/test_hf_decode.py)
  add_test(NAME python_hf_decode COMMAND ${_pj_pytest} -m gpu -s ${PROJECT_SOURCE_DIR}/python/tests/test_hf_decode.py)
  set_tests_properties(python_cpu PROPERTIES LABELS "cpu;python")
  set_tests_properties(python_gpu python_hf_decode PROPERTIES LABELS "gpu;python"
                       ENVIRONMENT "PAGEDJIT_CACHE_DIR=${CMAKE_CURRENT_BINARY_DIR}/python-kernel-cache")
  set_tests_properties(python_hf_decode PROPERTIES TIMEOUT 900)
endif()
