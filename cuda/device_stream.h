// A CUDA stream on one GPU with device memory and copies on it, as plain C++ (no CUDA headers),
// for runtimes that hand raw device pointers and a stream to code that is not ferry's (the
// plugin runtime). Without CUDA in the build, Create fails with FailedPrecondition.
#ifndef FERRY_CUDA_DEVICE_STREAM_H_
#define FERRY_CUDA_DEVICE_STREAM_H_

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ferry::cuda {

// Not thread-safe: one owner (an executor) uses it at a time. Every call first makes
// `gpu_index` the calling thread's current device. Copies are enqueued on the stream;
// Synchronize waits for them and for every kernel on the stream, and reports their errors.
class DeviceStream {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceStream>> Create(int gpu_index);
  ~DeviceStream();
  DeviceStream(const DeviceStream&) = delete;
  DeviceStream& operator=(const DeviceStream&) = delete;

  int gpu_index() const { return gpu_index_; }
  void* stream() const { return stream_; }  // cudaStream_t

  // Makes the GPU the calling thread's current device.
  absl::Status MakeCurrent() const;
  // Device memory of `bytes` (>= 1) bytes; the caller frees it with Free.
  absl::StatusOr<void*> Allocate(size_t bytes);
  void Free(void* device_ptr);
  absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes);
  absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes);
  absl::Status Synchronize();

 private:
  DeviceStream(int gpu_index, void* stream) : gpu_index_(gpu_index), stream_(stream) {}
  int gpu_index_;
  void* stream_;
};

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_DEVICE_STREAM_H_
