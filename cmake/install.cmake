# Installation: the shared and static libraries, the public headers, the tools,
# configs/, a CMake package (pagedjit::pagedjit, pagedjit::pagedjit_static) and
# a pkg-config file. Included from the root CMakeLists.txt after the targets.
include(CMakePackageConfigHelpers)

option(PAGEDJIT_BUILD_STATIC "Build and install the static library pagedjit_static (libpagedjit.a)" ON)
set(PAGEDJIT_INSTALL_TARGETS pagedjit)
if(PAGEDJIT_BUILD_STATIC)
  # The shared library's position-independent objects, archived: nothing is compiled twice.
  add_library(pagedjit_static STATIC $<TARGET_OBJECTS:pagedjit>)
  add_dependencies(pagedjit_static pagedjit)
  set_target_properties(pagedjit_static PROPERTIES OUTPUT_NAME pagedjit)
  get_target_property(PAGEDJIT_PUBLIC_INCLUDES pagedjit INTERFACE_INCLUDE_DIRECTORIES)
  target_include_directories(pagedjit_static PUBLIC ${PAGEDJIT_PUBLIC_INCLUDES})
  target_link_libraries(pagedjit_static PRIVATE CUDA::nvrtc ${CMAKE_DL_LIBS} Threads::Threads)
  list(APPEND PAGEDJIT_INSTALL_TARGETS pagedjit_static)
endif()

set(PAGEDJIT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/pagedjit)
install(TARGETS ${PAGEDJIT_INSTALL_TARGETS} EXPORT pagedjitTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY engine/include/pagedjit ${PAGEDJIT_GENERATED_INCLUDE}/pagedjit
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

foreach(tool pagedjit-demo pagedjit-bench pagedjit-cache pagedjit-tune)
  if(TARGET ${tool})
    install(TARGETS ${tool} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

# Tuned profiles: <prefix>/share/pagedjit/configs, i.e. ../share/pagedjit/configs
# from the installed library. Installed (possibly empty) even when git left no directory.
set(PAGEDJIT_CONFIGS_DIR ${CMAKE_INSTALL_DATADIR}/pagedjit/configs)
if(EXISTS ${PROJECT_SOURCE_DIR}/configs)
  install(DIRECTORY configs/ DESTINATION ${PAGEDJIT_CONFIGS_DIR})
else()
  install(DIRECTORY DESTINATION ${PAGEDJIT_CONFIGS_DIR})
endif()

# CMake package: find_package(pagedjit CONFIG REQUIRED).
install(EXPORT pagedjitTargets NAMESPACE pagedjit:: DESTINATION ${PAGEDJIT_CMAKE_DIR})
configure_package_config_file(cmake/pagedjitConfig.cmake.in ${PROJECT_BINARY_DIR}/pagedjitConfig.cmake
                              INSTALL_DESTINATION ${PAGEDJIT_CMAKE_DIR})
# Before 1.0 a minor version may break the API: only the same MAJOR.MINOR is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/pagedjitConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/pagedjitConfig.cmake ${PROJECT_BINARY_DIR}/pagedjitConfigVersion.cmake
        DESTINATION ${PAGEDJIT_CMAKE_DIR})

# pkg-config: relocatable (the prefix is found from the .pc file's own directory).
set(PAGEDJIT_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH PAGEDJIT_PC_TO_PREFIX /prefix/${PAGEDJIT_PC_DIR} /prefix)
string(REGEX REPLACE "/$" "" PAGEDJIT_PC_TO_PREFIX "${PAGEDJIT_PC_TO_PREFIX}")
list(TRANSFORM CUDAToolkit_INCLUDE_DIRS PREPEND -I OUTPUT_VARIABLE PAGEDJIT_PC_CUDA_CFLAGS)
list(JOIN PAGEDJIT_PC_CUDA_CFLAGS " " PAGEDJIT_PC_CUDA_CFLAGS)
configure_file(cmake/pagedjit.pc.in ${PROJECT_BINARY_DIR}/pagedjit.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/pagedjit.pc DESTINATION ${PAGEDJIT_PC_DIR})
