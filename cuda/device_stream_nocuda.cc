// DeviceStream in a build without CUDA: there is never a stream to create.
#include "cuda/device_stream.h"

namespace ferry::cuda {

absl::StatusOr<std::unique_ptr<DeviceStream>> DeviceStream::Create(int /*gpu_index*/) {
  return absl::FailedPreconditionError(
      "this build of ferry has no CUDA backend (configured with FERRY_ENABLE_CUDA=OFF or "
      "without nvcc)");
}

DeviceStream::~DeviceStream() = default;
absl::Status DeviceStream::MakeCurrent() const {
  return absl::FailedPreconditionError("no CUDA backend");
}
absl::StatusOr<void*> DeviceStream::Allocate(size_t) {
  return absl::FailedPreconditionError("no CUDA backend");
}
void DeviceStream::Free(void*) {}
absl::Status DeviceStream::CopyToDevice(void*, const void*, size_t) {
  return absl::FailedPreconditionError("no CUDA backend");
}
absl::Status DeviceStream::CopyToHost(void*, const void*, size_t) {
  return absl::FailedPreconditionError("no CUDA backend");
}
absl::Status DeviceStream::Synchronize() {
  return absl::FailedPreconditionError("no CUDA backend");
}

}  // namespace ferry::cuda
