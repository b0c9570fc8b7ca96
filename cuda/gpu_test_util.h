// Test helpers for GPU tests (test-only; plain C++). A GPU test skips where no GPU is usable,
// unless the environment has FERRY_REQUIRE_GPU=1 (perf/device/run.sh sets it when nvidia-smi
// works): then a missing GPU fails the test, so a driver or library mismatch on a GPU machine is
// not a green run.
#ifndef FERRY_CUDA_GPU_TEST_UTIL_H_
#define FERRY_CUDA_GPU_TEST_UTIL_H_

#include <cstdlib>
#include <string>

#include "cuda/device.h"
#include "gtest/gtest.h"

namespace ferry::cuda {

// true when FERRY_REQUIRE_GPU is "1".
inline bool GpuRequired() {
  const char* v = std::getenv("FERRY_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

}  // namespace ferry::cuda

// Skips the calling test when no GPU is usable (the message carries ListGpus()'s reason, which
// starts with "no GPU: "), or fails it under FERRY_REQUIRE_GPU=1.
#define FERRY_SKIP_WITHOUT_GPU()                                                      \
  do {                                                                                \
    const auto ferry_gpus_ = ::ferry::cuda::ListGpus();                               \
    if (!ferry_gpus_.ok()) {                                                          \
      if (::ferry::cuda::GpuRequired()) {                                             \
        GTEST_FAIL() << "FERRY_REQUIRE_GPU=1 but " << ferry_gpus_.status().message(); \
      }                                                                               \
      GTEST_SKIP() << ferry_gpus_.status().message();                                 \
    }                                                                                 \
  } while (false)

#endif  // FERRY_CUDA_GPU_TEST_UTIL_H_
