# libtorch from the `torch` wheel (pinned in requirements.txt). scripts/setup.sh passes
# CMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)').
if(NOT Torch_FOUND)
  if(NOT DEFINED MOSAIC_TORCH_PREFIX)
    find_package(Python3 COMPONENTS Interpreter)
    if(Python3_Interpreter_FOUND)
      execute_process(
        COMMAND ${Python3_EXECUTABLE} -c "import torch,sys; sys.stdout.write(torch.utils.cmake_prefix_path)"
        OUTPUT_VARIABLE MOSAIC_TORCH_PREFIX ERROR_QUIET RESULT_VARIABLE _torch_rc)
    endif()
  endif()
  if(MOSAIC_TORCH_PREFIX)
    list(APPEND CMAKE_PREFIX_PATH "${MOSAIC_TORCH_PREFIX}")
  endif()
  find_package(Torch REQUIRED)
endif()
message(STATUS "Mosaic: libtorch ${Torch_VERSION} from ${Torch_DIR}")
