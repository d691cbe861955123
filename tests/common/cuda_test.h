// The base of the parameterized gpu test fixtures: each test skips, saying why, where no CUDA
// device is visible (CI has none; the gpu label keeps these out of its runs anyway).
//
//   class LinearGpu : public mosaic::testing::CudaParamTest<Shape> {};
#pragma once

#include <gtest/gtest.h>
#include <torch/cuda.h>

namespace mosaic::testing {

template <class Param>
class CudaParamTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  }
};

}  // namespace mosaic::testing
