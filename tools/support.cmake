# pagedjit_tool_support: the sources that several tools and the test suite
# share: tools/common/ (the case parser, timing, helper kernels, bandwidth
# probe, command-line parser), the bench's peers table and chart, the tuner's
# search and results. Compiled once here instead of once per program: CI
# builds the tree twice on two cores, and cases.cpp alone is slow to compile.
add_library(pagedjit_tool_support STATIC
  ${CMAKE_CURRENT_LIST_DIR}/common/cases.cpp
  ${CMAKE_CURRENT_LIST_DIR}/common/timing.cpp
  ${CMAKE_CURRENT_LIST_DIR}/common/helper_kernels.cpp
  ${CMAKE_CURRENT_LIST_DIR}/common/bandwidth.cpp
  ${CMAKE_CURRENT_LIST_DIR}/common/cli.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench/peers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench/svg_chart.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tune/search.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tune/results.cpp)
# Internal headers stay private to the library's own sources.
target_link_libraries(pagedjit_tool_support PUBLIC pagedjit pagedjit_testing CUDA::nvrtc Threads::Threads
                                            PRIVATE pagedjit_internal)
