#include "cuda/gpu_mlp.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cuda/cublas_loader.h"

namespace ferry::cuda {
namespace {

absl::Status CudaError(cudaError_t err, const char* what) {
  (void)cudaGetLastError();  // clear it so later checks do not see this failure again
  const std::string message = absl::StrCat("GpuMlp: ", what, ": ", cudaGetErrorString(err));
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

#define FERRY_CUDA_RETURN_IF_ERROR(expr)                                \
  do {                                                                  \
    const cudaError_t ferry_err_ = (expr);                              \
    if (ferry_err_ != cudaSuccess) return CudaError(ferry_err_, #expr); \
  } while (false)

#define FERRY_CUBLAS_RETURN_IF_ERROR(api, expr)                                    \
  do {                                                                             \
    const cublasStatus_t ferry_st_ = (expr);                                       \
    if (ferry_st_ != CUBLAS_STATUS_SUCCESS) {                                      \
      return absl::InternalError(                                                  \
          absl::StrCat("GpuMlp: ", #expr, ": ", (api)->status_string(ferry_st_))); \
    }                                                                              \
  } while (false)

absl::Status Validate(const std::vector<GpuMlp::Layer>& layers, int64_t max_rows) {
  if (layers.empty()) return absl::InvalidArgumentError("GpuMlp: no layers");
  if (max_rows <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("GpuMlp: max_rows must be > 0, got ", max_rows));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const GpuMlp::Layer& l = layers[i];
    if (l.in <= 0 || l.out <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GpuMlp: layer ", i, " has bad shape in=", l.in, " out=", l.out));
    }
    if (static_cast<int64_t>(l.weight.size()) != l.in * l.out) {
      return absl::InvalidArgumentError(absl::StrCat("GpuMlp: layer ", i, " weight has ",
                                                     l.weight.size(), " floats, expected ",
                                                     l.in * l.out, " (out x in)"));
    }
    if (!l.bias.empty() && static_cast<int64_t>(l.bias.size()) != l.out) {
      return absl::InvalidArgumentError(absl::StrCat("GpuMlp: layer ", i, " bias has ",
                                                     l.bias.size(), " floats, expected ", l.out));
    }
    if (i > 0 && layers[i - 1].out != l.in) {
      return absl::InvalidArgumentError(absl::StrCat("GpuMlp: layer ", i, " takes ", l.in,
                                                     " inputs but layer ", i - 1, " gives ",
                                                     layers[i - 1].out));
    }
    // cuBLAS takes int dimensions.
    if (l.in > INT32_MAX || l.out > INT32_MAX || max_rows > INT32_MAX) {
      return absl::InvalidArgumentError("GpuMlp: dimension too large for cuBLAS");
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct GpuMlp::Impl {
  struct DeviceLayer {
    float* weight = nullptr;
    float* bias = nullptr;  // null when the layer has no bias
    int64_t in = 0;
    int64_t out = 0;
    Activation act = Activation::kNone;
    bool softmax = false;
  };

  int device = 0;
  cudaStream_t stream = nullptr;
  const CublasApi* api = nullptr;
  cublasHandle_t cublas = nullptr;
  std::vector<DeviceLayer> layers;
  // Ping-pong activations: layer i reads buffer i%2 and writes buffer (i+1)%2.
  float* act[2] = {nullptr, nullptr};
  float* pinned_in = nullptr;
  float* pinned_out = nullptr;

  ~Impl() {
    // Errors are ignored: nothing useful can be done with them while tearing down.
    if (cudaSetDevice(device) != cudaSuccess) return;
    if (stream != nullptr) (void)cudaStreamSynchronize(stream);
    for (DeviceLayer& l : layers) {
      (void)cudaFree(l.weight);
      (void)cudaFree(l.bias);
    }
    (void)cudaFree(act[0]);
    (void)cudaFree(act[1]);
    (void)cudaFreeHost(pinned_in);
    (void)cudaFreeHost(pinned_out);
    if (cublas != nullptr) (void)api->destroy(cublas);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
    (void)cudaGetLastError();
  }
};

GpuMlp::GpuMlp(int device, int64_t input_dim, int64_t output_dim, int64_t max_rows,
               int64_t num_layers, std::unique_ptr<Impl> impl)
    : device_(device),
      input_dim_(input_dim),
      output_dim_(output_dim),
      max_rows_(max_rows),
      num_layers_(num_layers),
      impl_(std::move(impl)) {}

GpuMlp::~GpuMlp() {
  absl::MutexLock lock(&mu_);
  impl_.reset();
}

absl::StatusOr<std::unique_ptr<GpuMlp>> GpuMlp::Create(int device, std::vector<Layer> layers,
                                                       int64_t max_rows) {
  if (absl::Status s = Validate(layers, max_rows); !s.ok()) return s;

  int count = 0;
  if (cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat("no GPU: ", cudaGetErrorString(err)));
  }
  if (count <= 0) return absl::FailedPreconditionError("no GPU: no CUDA device is visible");
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuMlp: device ", device, " out of range (", count, " GPUs)"));
  }

  // Impl's destructor releases whatever was allocated if any step below fails.
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  FERRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  FERRY_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  auto api = LoadCublas();
  if (!api.ok()) return api.status();
  impl->api = *api;
  FERRY_CUBLAS_RETURN_IF_ERROR(impl->api, impl->api->create(&impl->cublas));
  FERRY_CUBLAS_RETURN_IF_ERROR(impl->api, impl->api->set_stream(impl->cublas, impl->stream));
  // Plain FP32 (no TF32 tensor-core rounding), so the GPU agrees with the CPU path to rounding.
  FERRY_CUBLAS_RETURN_IF_ERROR(impl->api,
                               impl->api->set_math_mode(impl->cublas, CUBLAS_DEFAULT_MATH));

  int64_t widest = 0;
  for (const Layer& l : layers) widest = std::max({widest, l.in, l.out});
  for (Layer& l : layers) {
    Impl::DeviceLayer& d = impl->layers.emplace_back();
    d.in = l.in;
    d.out = l.out;
    d.act = l.act;
    d.softmax = l.softmax;
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&d.weight, l.weight.size() * sizeof(float)));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d.weight, l.weight.data(),
                                               l.weight.size() * sizeof(float),
                                               cudaMemcpyHostToDevice, impl->stream));
    if (!l.bias.empty()) {
      FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&d.bias, l.bias.size() * sizeof(float)));
      FERRY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d.bias, l.bias.data(),
                                                 l.bias.size() * sizeof(float),
                                                 cudaMemcpyHostToDevice, impl->stream));
    }
  }
  const size_t act_bytes = static_cast<size_t>(max_rows * widest) * sizeof(float);
  FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&impl->act[0], act_bytes));
  FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&impl->act[1], act_bytes));
  const int64_t input_dim = layers.front().in;
  const int64_t output_dim = layers.back().out;
  FERRY_CUDA_RETURN_IF_ERROR(
      cudaMallocHost(&impl->pinned_in, static_cast<size_t>(max_rows * input_dim) * sizeof(float)));
  FERRY_CUDA_RETURN_IF_ERROR(cudaMallocHost(
      &impl->pinned_out, static_cast<size_t>(max_rows * output_dim) * sizeof(float)));
  // The host weight vectors are pageable: wait for the uploads before `layers` is destroyed.
  FERRY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl->stream));

  const int64_t num_layers = static_cast<int64_t>(layers.size());
  return std::unique_ptr<GpuMlp>(
      new GpuMlp(device, input_dim, output_dim, max_rows, num_layers, std::move(impl)));
}

absl::Status GpuMlp::Forward(const float* host_in, int64_t rows, float* host_out) {
  if (rows < 0) return absl::InvalidArgumentError(absl::StrCat("GpuMlp: rows = ", rows));
  if (rows == 0) return absl::OkStatus();
  if (host_in == nullptr || host_out == nullptr) {
    return absl::InvalidArgumentError("GpuMlp: null input or output");
  }
  absl::MutexLock lock(&mu_);
  // The current device is per host thread, and callers come from any thread.
  FERRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  for (int64_t start = 0; start < rows; start += max_rows_) {
    const int64_t n = std::min(max_rows_, rows - start);
    absl::Status s = ForwardChunk(host_in + start * input_dim_, n, host_out + start * output_dim_);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status GpuMlp::ForwardChunk(const float* host_in, int64_t rows, float* host_out) {
  Impl& m = *impl_;
  const size_t in_bytes = static_cast<size_t>(rows * input_dim_) * sizeof(float);
  const size_t out_bytes = static_cast<size_t>(rows * output_dim_) * sizeof(float);
  // Staging through pinned memory makes the copy a single DMA instead of the driver's chunked
  // pageable path, which matters most for the small batches a latency SLO produces.
  std::memcpy(m.pinned_in, host_in, in_bytes);
  FERRY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(m.act[0], m.pinned_in, in_bytes, cudaMemcpyHostToDevice, m.stream));

  const float alpha = 1.0f;
  const float beta = 0.0f;
  int cur = 0;
  for (const Impl::DeviceLayer& l : m.layers) {
    const float* x = m.act[cur];
    float* y = m.act[1 - cur];
    // cuBLAS is column-major. Row-major X[rows, in] is column-major X^T[in, rows], row-major
    // W[out, in] is column-major W^T[in, out], and row-major Y[rows, out] is column-major
    // Y^T[out, rows]. So Y^T = W · X^T = op_T(W^T) · X^T: A = W^T buffer (lda = in, transposed),
    // B = X^T buffer (ldb = in), C = Y^T buffer (ldc = out).
    FERRY_CUBLAS_RETURN_IF_ERROR(
        m.api, m.api->sgemm(m.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(l.out),
                            static_cast<int>(rows), static_cast<int>(l.in), &alpha, l.weight,
                            static_cast<int>(l.in), x, static_cast<int>(l.in), &beta, y,
                            static_cast<int>(l.out)));
    if (absl::Status s = LaunchBiasActivation(y, l.bias, rows, l.out, l.act, m.stream); !s.ok()) {
      return s;
    }
    if (l.softmax) {
      if (absl::Status s = LaunchRowSoftmax(y, rows, l.out, m.stream); !s.ok()) return s;
    }
    cur = 1 - cur;
  }

  FERRY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(m.pinned_out, m.act[cur], out_bytes, cudaMemcpyDeviceToHost, m.stream));
  FERRY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  std::memcpy(host_out, m.pinned_out, out_bytes);
  return absl::OkStatus();
}

}  // namespace ferry::cuda
