#include <cuda_runtime.h>

#include "gpu_scale/scale_kernel.h"

namespace {

__global__ void ScaleKernel(float* y, const float* x, int64_t count, float scale, float offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = scale * x[i] + offset;
  }
}

}  // namespace

std::string LaunchScale(float* y, const float* x, int64_t count, float scale, float offset,
                        void* stream) {
  if (count == 0) return "";
  constexpr int kThreads = 256;
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  ScaleKernel<<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), kThreads, 0,
                static_cast<cudaStream_t>(stream)>>>(y, x, count, scale, offset);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? "" : std::string("kernel launch: ") + cudaGetErrorString(err);
}
