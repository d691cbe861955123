# Helpers shared by every layer.

set(MOSAIC_WARNINGS -Wall -Wextra -Wno-unused-parameter)

# mosaic_library(NAME SOURCES a.cc b.cc DEPS lib1 lib2)
# One static library per layer; headers are included as "layer/file.h" from src/.
function(mosaic_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${MOSAIC_WARNINGS}>)
endfunction()

# mosaic_test(NAME SOURCES a_test.cc DEPS lib LABELS cpu [slow])
# One gtest binary per test file; every test case becomes a CTest test with the labels.
function(mosaic_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_options(${name} PRIVATE ${MOSAIC_WARNINGS})
  target_compile_definitions(${name} PRIVATE
    MOSAIC_SOURCE_DIR="${PROJECT_SOURCE_DIR}" MOSAIC_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()
