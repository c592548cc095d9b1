# pagedjit_tool_support: the sources that several tools and the test suite
# share (the bench's case parser, timing, helper kernels, bandwidth probe,
# peers table and chart; the tuner's search and results). Compiled once here
# instead of once per program: CI builds the tree twice on two cores, and
# cases.cpp alone is slow to compile.
add_library(pagedjit_tool_support STATIC
  ${CMAKE_CURRENT_LIST_DIR}/bench/cases.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench/timing.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench/helper_kernels.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench/bandwidth.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench/peers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bench/svg_chart.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tune/search.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tune/results.cpp)
# Internal headers stay private: the bench includes only the public ones.
target_link_libraries(pagedjit_tool_support PUBLIC pagedjit pagedjit_testing CUDA::nvrtc Threads::Threads
                                            PRIVATE pagedjit_internal)
