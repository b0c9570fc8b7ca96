#include "cuda/device_stream.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"

namespace ferry::cuda {
namespace {

absl::Status CudaError(cudaError_t err, const char* what) {
  (void)cudaGetLastError();  // clear the sticky last error for the next caller
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(err)));
}

cudaStream_t AsStream(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceStream>> DeviceStream::Create(int gpu_index) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat("no GPU: ", cudaGetErrorString(err)));
  }
  if (gpu_index < 0 || gpu_index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("no GPU ", gpu_index, ": this machine has ", count));
  }
  err = cudaSetDevice(gpu_index);
  if (err != cudaSuccess) return CudaError(err, "cudaSetDevice");
  cudaStream_t stream = nullptr;
  err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (err != cudaSuccess) return CudaError(err, "cudaStreamCreate");
  return std::unique_ptr<DeviceStream>(new DeviceStream(gpu_index, stream));
}

DeviceStream::~DeviceStream() {
  if (cudaSetDevice(gpu_index_) == cudaSuccess) {
    (void)cudaStreamSynchronize(AsStream(stream_));
    (void)cudaStreamDestroy(AsStream(stream_));
  }
}

absl::Status DeviceStream::MakeCurrent() const {
  cudaError_t err = cudaSetDevice(gpu_index_);
  return err == cudaSuccess ? absl::OkStatus() : CudaError(err, "cudaSetDevice");
}

absl::StatusOr<void*> DeviceStream::Allocate(size_t bytes) {
  if (absl::Status s = MakeCurrent(); !s.ok()) return s;
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat("cudaMalloc(", bytes, " bytes) on GPU ",
                                                     gpu_index_, ": ", cudaGetErrorString(err)));
  }
  return p;
}

void DeviceStream::Free(void* device_ptr) {
  if (device_ptr == nullptr) return;
  if (cudaSetDevice(gpu_index_) == cudaSuccess) (void)cudaFree(device_ptr);
}

absl::Status DeviceStream::CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  if (absl::Status s = MakeCurrent(); !s.ok()) return s;
  cudaError_t err =
      cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, AsStream(stream_));
  return err == cudaSuccess ? absl::OkStatus() : CudaError(err, "cudaMemcpyAsync to the GPU");
}

absl::Status DeviceStream::CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  if (absl::Status s = MakeCurrent(); !s.ok()) return s;
  cudaError_t err =
      cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, AsStream(stream_));
  return err == cudaSuccess ? absl::OkStatus() : CudaError(err, "cudaMemcpyAsync from the GPU");
}

absl::Status DeviceStream::Synchronize() {
  if (absl::Status s = MakeCurrent(); !s.ok()) return s;
  cudaError_t err = cudaStreamSynchronize(AsStream(stream_));
  return err == cudaSuccess ? absl::OkStatus() : CudaError(err, "cudaStreamSynchronize");
}

}  // namespace ferry::cuda
