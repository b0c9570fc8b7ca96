// GPU discovery, as plain C++ (no CUDA headers), so the agent and runtimes can ask what is there
// whether or not the build has CUDA.
#ifndef FERRY_CUDA_DEVICE_H_
#define FERRY_CUDA_DEVICE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::cuda {

struct GpuInfo {
  int index = 0;
  std::string name;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
  int64_t total_memory_bytes = 0;
  // From NVML (no CUDA context needed); -1 when NVML is unavailable.
  int64_t free_memory_bytes = -1;
};

// true when this binary was built with the CUDA backend.
bool BuiltWithCuda();

// The GPUs this process can use. FailedPrecondition with the reason when there are none
// (built without CUDA, no driver, no device), so callers can log why and serve on CPU.
// Creates no CUDA context on any GPU (each would hold ~500 MiB of its memory): contexts are made
// only where a function is placed.
absl::StatusOr<std::vector<GpuInfo>> ListGpus();

// One GPU's memory as its driver reports it: the whole device, every process's allocations and
// CUDA contexts included (not only this process's).
struct GpuMemoryInfo {
  int64_t total_bytes = 0;
  int64_t used_bytes = 0;
};

// GPU `device`'s (CUDA ordinal) memory now, from NVML, like ListGpus's free memory: no CUDA
// context is created. FailedPrecondition without a GPU (or a build without CUDA), Unavailable when
// NVML is missing or does not answer for the device. Thread-safe; a few microseconds (meant to be
// called on each /metrics scrape).
absl::StatusOr<GpuMemoryInfo> GetGpuMemory(int device);

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_DEVICE_H_
