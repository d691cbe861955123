# The CUDA language for the layers with .cu sources (kernels, engine): nvcc from the toolkit, sm_90
# (Hopper) unless CMAKE_CUDA_ARCHITECTURES says otherwise. Included after Torch.cmake, whose
# CUDA checks would otherwise ignore (and warn about) CMAKE_CUDA_ARCHITECTURES.
find_package(CUDAToolkit REQUIRED)
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "no CUDA compiler found (set CMAKE_CUDA_COMPILER or MOSAIC_WITH_TORCH=OFF)")
endif()
enable_language(CUDA)
if(NOT CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
