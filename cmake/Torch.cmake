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
  # Torch's CUDA config (Caffe2/public/cuda.cmake) picks nvcc flags from TORCH_CUDA_ARCH_LIST
  # (autodetected, noisily, when unset and no GPU is visible) and sets CMAKE_CUDA_ARCHITECTURES
  # to OFF, which would silently drop the architectures of our own CUDA sources (engine):
  # default the list to Hopper (H100/H200) and restore CMAKE_CUDA_ARCHITECTURES afterwards
  # (90 unless given).
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "9.0" CACHE STRING "CUDA architectures for torch's nvcc flags")
  endif()
  set(_mosaic_cuda_archs_defined FALSE)
  if(DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(_mosaic_cuda_archs_defined TRUE)
    set(_mosaic_cuda_archs "${CMAKE_CUDA_ARCHITECTURES}")
    unset(CMAKE_CUDA_ARCHITECTURES)  # the normal variable; torch warns when it sees one
  endif()
  find_package(Torch REQUIRED)
  if(_mosaic_cuda_archs_defined)
    set(CMAKE_CUDA_ARCHITECTURES "${_mosaic_cuda_archs}")
  else()
    set(CMAKE_CUDA_ARCHITECTURES 90)  # H100/H200 (sm_90); pass -DCMAKE_CUDA_ARCHITECTURES to change
  endif()
endif()
message(STATUS "Mosaic: libtorch ${Torch_VERSION} from ${Torch_DIR}")

# One precompiled <torch/torch.h> shared by every torch target (libraries, tests, benchmarks):
# torch.h alone takes ~15 s to parse per translation unit, more than most of our code.
# A torch target calls mosaic_torch_target(<target>) after creating it. GCC uses the PCH only
# when the flags match (same build type, ABI and standard); otherwise -Winvalid-pch says so
# and the header is parsed normally, so a mismatch is slow, never wrong.
if(NOT TARGET mosaic_torch_pch)
  set(_pch_src "${CMAKE_CURRENT_BINARY_DIR}/mosaic_torch_pch.cc")
  if(NOT EXISTS "${_pch_src}")
    file(WRITE "${_pch_src}" "// Owner of the shared <torch/torch.h> precompiled header.\n")
  endif()
  add_library(mosaic_torch_pch STATIC "${_pch_src}")
  target_link_libraries(mosaic_torch_pch PUBLIC ${TORCH_LIBRARIES})
  target_precompile_headers(mosaic_torch_pch PRIVATE <torch/torch.h>)
endif()

function(mosaic_torch_target target)
  target_precompile_headers(${target} REUSE_FROM mosaic_torch_pch)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
endfunction()
