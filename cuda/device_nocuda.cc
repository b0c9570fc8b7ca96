// The CPU-only build: the same API, reporting that there is no GPU backend.
#include "absl/status/status.h"
#include "cuda/device.h"
#include "cuda/health.h"

namespace ferry::cuda {

bool BuiltWithCuda() { return false; }

absl::StatusOr<std::vector<GpuInfo>> ListGpus() {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::StatusOr<GpuMemoryInfo> GetGpuMemory(int /*device*/) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::Status CheckGpuAfterError(int /*device*/) { return absl::OkStatus(); }

}  // namespace ferry::cuda
