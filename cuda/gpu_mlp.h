// A multi-layer perceptron held on one GPU: the GPU path of the `mlp` runtime.
//
// Plain C++ (no CUDA headers). The weights are uploaded once by Create(); each Forward() copies a
// batch in through pinned host memory, runs one cuBLAS SGEMM plus a fused bias/activation kernel
// (and an optional row softmax) per layer on the instance's own stream, copies the result out
// and waits for it. All arithmetic is FP32 (cuBLAS's default math mode, no TF32), so results
// match a CPU FP32 reference to rounding.
//
// Ownership: the instance owns its device memory, pinned buffers, cuBLAS handle and stream, and
// frees them in its destructor. Thread-safety: Forward() may be called from any thread; calls on
// one instance are serialised by an internal mutex (one batch on the GPU at a time per instance;
// use several instances for overlap). Forward() blocks until the output is in `host_out`.
//
// In a build without CUDA, Create() returns FailedPrecondition("ferry was built without CUDA").
#ifndef FERRY_CUDA_GPU_MLP_H_
#define FERRY_CUDA_GPU_MLP_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cuda/kernels.h"

namespace ferry::cuda {

class GpuMlp {
 public:
  struct Layer {
    std::vector<float> weight;  // [out, in], row-major (PyTorch nn.Linear layout)
    std::vector<float> bias;    // [out], or empty for no bias
    int64_t in = 0;
    int64_t out = 0;
    Activation act = Activation::kNone;
    bool softmax = false;  // row softmax after the activation
  };

  // Validates the layer chain (non-empty, positive sizes, weight/bias sizes, layer i's `out` ==
  // layer i+1's `in`) and `max_rows` > 0 (InvalidArgument), then uploads everything to GPU
  // `device`. FailedPrecondition("no GPU: ...") when no GPU is usable, InvalidArgument for a
  // device index out of range, ResourceExhausted when memory runs out. `max_rows` sizes the
  // buffers: device memory ≈ 4 bytes · (weights + 2·max_rows·widest layer), pinned host memory
  // ≈ 4 bytes · max_rows · (input width + output width).
  static absl::StatusOr<std::unique_ptr<GpuMlp>> Create(int device, std::vector<Layer> layers,
                                                        int64_t max_rows);

  ~GpuMlp();
  GpuMlp(const GpuMlp&) = delete;
  GpuMlp& operator=(const GpuMlp&) = delete;

  // host_in: rows × input_dim() floats, row-major; host_out: rows × output_dim() floats, written
  // on success. Both are ordinary (pageable) host memory owned by the caller. A batch larger than
  // max_rows() is run in chunks of max_rows(). rows == 0 is a no-op. Errors: InvalidArgument for
  // rows < 0 or null pointers with rows > 0, Internal for a CUDA/cuBLAS failure (after which the
  // instance should be discarded).
  absl::Status Forward(const float* host_in, int64_t rows, float* host_out);

  int device() const { return device_; }
  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return output_dim_; }
  int64_t max_rows() const { return max_rows_; }
  int64_t num_layers() const { return num_layers_; }

 private:
  struct Impl;  // CUDA handles and buffers; defined in gpu_mlp.cc

  GpuMlp(int device, int64_t input_dim, int64_t output_dim, int64_t max_rows, int64_t num_layers,
         std::unique_ptr<Impl> impl);

  absl::Status ForwardChunk(const float* host_in, int64_t rows, float* host_out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int device_;
  const int64_t input_dim_;
  const int64_t output_dim_;
  const int64_t max_rows_;
  const int64_t num_layers_;
  absl::Mutex mu_;
  std::unique_ptr<Impl> impl_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_GPU_MLP_H_
