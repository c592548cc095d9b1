# Installs a build into a fresh prefix and uses it the way a consumer would:
# the installed tools run (install RPATH), a CMake project finds the package
# and builds against the shared and static libraries, and (when pkg-config is
# there) a C program builds from pagedjit.pc. Run by ctest (test "install"):
#   cmake -DBUILD_DIR=... -DWORK_DIR=... -DSOURCE_DIR=tests/consumer -DGENERATOR=... -DMAKE_PROGRAM=...
#         -DCXX=... -DCC=... -DCUDA_ROOT=... -DVERSION=x.y.z -P install_test.cmake
set(PREFIX ${WORK_DIR}/prefix)

function(run)  # run(<command...> [EXPECT text]): fails the test on a non-zero exit
  cmake_parse_arguments(R "" "EXPECT" "" ${ARGN})
  string(REPLACE ";" " " shown "${R_UNPARSED_ARGUMENTS}")
  message(STATUS "$ ${shown}")
  execute_process(COMMAND ${R_UNPARSED_ARGUMENTS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "FAILED (exit ${rc}): ${shown}")
  endif()
  if(R_EXPECT AND NOT out MATCHES "${R_EXPECT}")
    message(FATAL_ERROR "FAILED: the output of ${shown} lacks '${R_EXPECT}'")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX})

file(GLOB libdir_cmake LIST_DIRECTORIES true ${PREFIX}/lib*/cmake/pagedjit)
get_filename_component(LIBDIR ${libdir_cmake} DIRECTORY)
get_filename_component(LIBDIR ${LIBDIR} DIRECTORY)
foreach(f ${LIBDIR}/libpagedjit.so ${LIBDIR}/libpagedjit.a ${LIBDIR}/pkgconfig/pagedjit.pc
          ${LIBDIR}/cmake/pagedjit/pagedjitConfig.cmake ${LIBDIR}/cmake/pagedjit/pagedjitConfigVersion.cmake
          ${PREFIX}/include/pagedjit/pagedjit.h ${PREFIX}/include/pagedjit/pagedjit.hpp
          ${PREFIX}/include/pagedjit/version.hpp ${PREFIX}/share/pagedjit/configs)
  if(NOT EXISTS ${f})
    message(FATAL_ERROR "FAILED: not installed: ${f}")
  endif()
endforeach()

# The installed tools find the installed library through their RPATH.
foreach(tool pagedjit-demo pagedjit-bench pagedjit-cache)
  if(EXISTS ${PREFIX}/bin/${tool})
    run(${PREFIX}/bin/${tool} --version EXPECT "^${tool} ${VERSION}\n")
  endif()
endforeach()

# A separate CMake project: find_package(pagedjit CONFIG REQUIRED).
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/consumer -G ${GENERATOR} -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${PREFIX} -DCUDAToolkit_ROOT=${CUDA_ROOT}
    -DEXPECTED_VERSION=${VERSION})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
run(${WORK_DIR}/consumer/pagedjit-consumer EXPECT "pagedjit ${VERSION}")
if(EXISTS ${WORK_DIR}/consumer/pagedjit-consumer-static)
  run(${WORK_DIR}/consumer/pagedjit-consumer-static EXPECT "pagedjit ${VERSION}")
endif()

# pkg-config: a C program from the .pc file's flags alone.
find_program(PKG_CONFIG pkg-config)
if(PKG_CONFIG)
  set(pc_env ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${LIBDIR}/pkgconfig)
  run(${pc_env} ${PKG_CONFIG} --modversion pagedjit EXPECT "^${VERSION}")
  execute_process(COMMAND ${pc_env} ${PKG_CONFIG} --cflags --libs pagedjit OUTPUT_VARIABLE flags
                  OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run(${CC} -std=c99 -Wall -Wextra -Werror -pedantic-errors ${SOURCE_DIR}/c_main.c -o ${WORK_DIR}/c-consumer ${flags})
  run(${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${LIBDIR} ${WORK_DIR}/c-consumer EXPECT "pagedjit ${VERSION}")
else()
  message(STATUS "pkg-config not found: the pagedjit.pc check is skipped")
endif()
message(STATUS "install test: OK")
