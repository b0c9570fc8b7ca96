#include "cuda/device.h"

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ferry::cuda {

namespace {

absl::Status NoGpu(cudaError_t err) {
  // Clear the sticky "last error" so a later, unrelated cudaGetLastError() does not report it.
  (void)cudaGetLastError();
  return absl::FailedPreconditionError(absl::StrCat("no GPU: ", cudaGetErrorString(err)));
}

}  // namespace

bool BuiltWithCuda() { return true; }

absl::StatusOr<std::vector<GpuInfo>> ListGpus() {
  int count = 0;
  // Without a driver (development machines, CI) this fails rather than returning 0; both mean
  // "serve on CPU", and the error string says why.
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return NoGpu(err);
  if (count <= 0) return absl::FailedPreconditionError("no GPU: no CUDA device is visible");

  // cudaMemGetInfo reports on the calling thread's current device, so visit each device and put
  // the caller's choice back afterwards.
  int previous = 0;
  err = cudaGetDevice(&previous);
  if (err != cudaSuccess) return NoGpu(err);

  std::vector<GpuInfo> gpus;
  gpus.reserve(count);
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) break;
    GpuInfo info;
    info.index = i;
    info.name = prop.name;
    info.compute_capability_major = prop.major;
    info.compute_capability_minor = prop.minor;
    info.total_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    err = cudaSetDevice(i);
    if (err == cudaSuccess) err = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (err != cudaSuccess) break;
    info.free_memory_bytes = static_cast<int64_t>(free_bytes);
    gpus.push_back(std::move(info));
  }
  (void)cudaSetDevice(previous);
  if (err != cudaSuccess) return NoGpu(err);
  return gpus;
}

}  // namespace ferry::cuda
