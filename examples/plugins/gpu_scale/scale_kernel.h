// The CUDA half of gpu-scale, callable from plain C++ (no CUDA headers).
#ifndef FERRY_EXAMPLES_GPU_SCALE_SCALE_KERNEL_H_
#define FERRY_EXAMPLES_GPU_SCALE_SCALE_KERNEL_H_

#include <cstdint>
#include <string>

// Enqueues y[i] = scale * x[i] + offset for i < count on `stream` (a cudaStream_t); device
// pointers. Returns "" or the launch error.
std::string LaunchScale(float* y, const float* x, int64_t count, float scale, float offset,
                        void* stream);

#endif  // FERRY_EXAMPLES_GPU_SCALE_SCALE_KERNEL_H_
