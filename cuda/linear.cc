#include "cuda/linear.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cuda/cublas_loader.h"

namespace ferry::cuda {
namespace {

absl::Status CudaError(cudaError_t err, const char* what) {
  (void)cudaGetLastError();  // clear the non-sticky last error for the next caller
  const std::string message = absl::StrCat("linear: ", what, ": ", cudaGetErrorString(err));
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

#define FERRY_LINEAR_CUDA(expr)                                         \
  do {                                                                  \
    const cudaError_t ferry_err_ = (expr);                              \
    if (ferry_err_ != cudaSuccess) return CudaError(ferry_err_, #expr); \
  } while (false)

#define FERRY_LINEAR_LT(api, expr)                                                 \
  do {                                                                             \
    const cublasStatus_t ferry_st_ = (expr);                                       \
    if (ferry_st_ != CUBLAS_STATUS_SUCCESS) {                                      \
      return absl::InternalError(                                                  \
          absl::StrCat("linear: ", #expr, ": ", (api)->status_string(ferry_st_))); \
    }                                                                              \
  } while (false)

bool IsHalf(Precision p) { return p == Precision::kBf16 || p == Precision::kFp16; }

HalfType ToHalfType(Precision p) {
  return p == Precision::kBf16 ? HalfType::kBf16 : HalfType::kFp16;
}

// The type A (weights) and B (activations) are stored in for the GEMM.
cudaDataType_t StorageType(Precision p) {
  switch (p) {
    case Precision::kBf16:
      return CUDA_R_16BF;
    case Precision::kFp16:
      return CUDA_R_16F;
    case Precision::kFp32:
    case Precision::kTf32:
      break;
  }
  return CUDA_R_32F;
}

size_t StorageBytes(Precision p) { return IsHalf(p) ? 2 : 4; }

// FP32 accumulation everywhere; tf32 lets the tensor cores round the FP32 inputs to TF32.
cublasComputeType_t ComputeType(Precision p) {
  return p == Precision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

}  // namespace

struct LinearStack::Impl {
  struct Layer {
    void* weight = nullptr;  // [out, in] in the precision's storage type
    float* bias = nullptr;   // [out] FP32 (the epilogue's bias type follows D's, FP32); or null
    int64_t in = 0;
    int64_t out = 0;
    Activation act = Activation::kNone;
    bool softmax = false;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    bool activation_kernel = false;  // the activation runs after the GEMM, not in its epilogue
  };
  // One GEMM shape's descriptors and chosen algorithm. Created on first use of (layer, rows),
  // immutable after, freed with the stack.
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr;
    cublasLtMatrixLayout_t b = nullptr;
    cublasLtMatrixLayout_t d = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };

  int device = 0;
  Precision precision = Precision::kFp32;
  const CublasLtApi* api = nullptr;
  cublasLtHandle_t handle = nullptr;
  std::vector<Layer> layers;
  absl::Mutex mu;
  std::map<std::pair<size_t, int64_t>, std::unique_ptr<Plan>> plans ABSL_GUARDED_BY(mu);

  ~Impl() {
    // Errors are ignored: nothing useful can be done with them while tearing down. Synchronise
    // first so no kernel still reads a weight being freed (also on the error path of Create).
    if (cudaSetDevice(device) != cudaSuccess) return;
    (void)cudaDeviceSynchronize();
    for (Layer& l : layers) {
      (void)cudaFree(l.weight);
      (void)cudaFree(l.bias);
    }
    absl::MutexLock lock(&mu);
    for (auto& [key, plan] : plans) Destroy(*plan);
    if (handle != nullptr) (void)api->destroy(handle);
    (void)cudaGetLastError();
  }

  void Destroy(Plan& p) {
    if (p.desc != nullptr) (void)api->desc_destroy(p.desc);
    if (p.a != nullptr) (void)api->layout_destroy(p.a);
    if (p.b != nullptr) (void)api->layout_destroy(p.b);
    if (p.d != nullptr) (void)api->layout_destroy(p.d);
  }

  absl::Status MakePlan(const Layer& l, int64_t rows, Plan& p) {
    // cuBLAS is column-major. Row-major X[rows, in] is column-major X^T[in, rows], row-major
    // W[out, in] is column-major W^T[in, out], and row-major Y[rows, out] is column-major
    // Y^T[out, rows]. So Y^T = W · X^T = op_T(W^T) · X^T: A = the weight buffer (k × m, ld k,
    // transposed), B = X (k × n, ld k), D = Y (m × n, ld m), with m = out, n = rows, k = in.
    // The epilogue's bias has one value per row of D, i.e. per output feature.
    const uint64_t m = static_cast<uint64_t>(l.out);
    const uint64_t n = static_cast<uint64_t>(rows);
    const uint64_t k = static_cast<uint64_t>(l.in);
    FERRY_LINEAR_LT(api, api->desc_create(&p.desc, ComputeType(precision), CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T;
    const cublasOperation_t trans_b = CUBLAS_OP_N;
    FERRY_LINEAR_LT(api,
                    api->desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    FERRY_LINEAR_LT(api,
                    api->desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    FERRY_LINEAR_LT(
        api, api->desc_set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &l.epilogue, sizeof(l.epilogue)));
    if (l.bias != nullptr) {
      FERRY_LINEAR_LT(
          api, api->desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &l.bias, sizeof(l.bias)));
    }
    const cudaDataType_t storage = StorageType(precision);
    FERRY_LINEAR_LT(api, api->layout_create(&p.a, storage, k, m, static_cast<int64_t>(k)));
    FERRY_LINEAR_LT(api, api->layout_create(&p.b, storage, k, n, static_cast<int64_t>(k)));
    FERRY_LINEAR_LT(api, api->layout_create(&p.d, CUDA_R_32F, m, n, static_cast<int64_t>(m)));

    cublasLtMatmulPreference_t pref = nullptr;
    FERRY_LINEAR_LT(api, api->pref_create(&pref));
    const uint64_t workspace = kGemmWorkspaceBytes;
    cublasStatus_t st = api->pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                      sizeof(workspace));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = api->heuristic(handle, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
    }
    (void)api->pref_destroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS) {
      return absl::InternalError(
          absl::StrCat("linear: cublasLtMatmulAlgoGetHeuristic: ", api->status_string(st)));
    }
    if (found == 0) {
      return absl::InternalError(absl::StrCat("linear: cuBLASLt has no algorithm for a ",
                                              std::string(PrecisionName(precision)), " GEMM of ",
                                              rows, "x", l.in, " by ", l.in, "x", l.out));
    }
    p.algo = result.algo;
    return absl::OkStatus();
  }

  absl::StatusOr<const Plan*> GetPlan(size_t layer, int64_t rows) {
    absl::MutexLock lock(&mu);
    std::unique_ptr<Plan>& slot = plans[{layer, rows}];
    if (slot == nullptr) {
      auto plan = std::make_unique<Plan>();
      if (absl::Status s = MakePlan(layers[layer], rows, *plan); !s.ok()) {
        Destroy(*plan);
        plans.erase({layer, rows});
        return s;
      }
      slot = std::move(plan);
    }
    return slot.get();
  }
};

LinearScratch::~LinearScratch() {
  // The buffers may still be in use by queued work (also after an error): wait for the device.
  if (cudaSetDevice(device_) != cudaSuccess) return;
  (void)cudaDeviceSynchronize();
  (void)cudaFree(act_[0]);
  (void)cudaFree(act_[1]);
  (void)cudaFree(half_);
  (void)cudaFree(workspace_);
  (void)cudaGetLastError();
}

LinearStack::~LinearStack() = default;

absl::StatusOr<std::unique_ptr<LinearStack>> LinearStack::Create(const Options& options,
                                                                 std::vector<LinearSpec> layers) {
  if (absl::Status s = ValidateLinearChain(layers); !s.ok()) return s;
  int count = 0;
  if (cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat("no GPU: ", cudaGetErrorString(err)));
  }
  if (count <= 0) return absl::FailedPreconditionError("no GPU: no CUDA device is visible");
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("linear: device ", options.device, " out of range (", count, " GPUs)"));
  }
  auto api = LoadCublasLt();
  if (!api.ok()) return api.status();

  std::unique_ptr<LinearStack> stack(new LinearStack());
  stack->device_ = options.device;
  stack->precision_ = options.precision;
  stack->input_dim_ = layers.front().in;
  stack->output_dim_ = layers.back().out;
  stack->num_layers_ = static_cast<int64_t>(layers.size());
  stack->impl_ = std::make_unique<Impl>();
  Impl& impl = *stack->impl_;
  impl.device = options.device;
  impl.precision = options.precision;
  impl.api = *api;

  FERRY_LINEAR_CUDA(cudaSetDevice(options.device));
  // The warm-up: loads this binary's kernels on the device (lazy loading) and fails here, not
  // per request, on a GPU whose architecture the build lacks.
  if (absl::Status s = ProbeKernelImage(nullptr); !s.ok()) return s;
  FERRY_LINEAR_LT(impl.api, impl.api->create(&impl.handle));

  const size_t storage = StorageBytes(options.precision);
  float* staging = nullptr;  // FP32 upload buffer for half-precision weights
  if (IsHalf(options.precision)) {
    int64_t largest = 0;
    for (const LinearSpec& l : layers) largest = std::max(largest, l.in * l.out);
    FERRY_LINEAR_CUDA(cudaMalloc(&staging, static_cast<size_t>(largest) * sizeof(float)));
  }
  absl::Status upload;
  for (LinearSpec& l : layers) {
    Impl::Layer& d = impl.layers.emplace_back();
    d.in = l.in;
    d.out = l.out;
    d.act = l.act;
    d.softmax = l.softmax;
    stack->widest_ = std::max({stack->widest_, l.in, l.out});
    stack->flops_per_row_ += 2 * l.in * l.out;
    const size_t count_w = l.weight.size();
    cudaError_t err = cudaMalloc(&d.weight, count_w * storage);
    if (err == cudaSuccess) stack->weight_bytes_ += count_w * storage;
    if (err == cudaSuccess && IsHalf(options.precision)) {
      // Converted on the GPU (round to nearest even), stored as 16-bit: never widened again.
      err = cudaMemcpy(staging, l.weight.data(), count_w * sizeof(float), cudaMemcpyHostToDevice);
      if (err == cudaSuccess) {
        upload = LaunchFloatToHalf(staging, d.weight, static_cast<int64_t>(count_w),
                                   ToHalfType(options.precision), nullptr);
        if (upload.ok()) err = cudaStreamSynchronize(nullptr);  // before staging is reused
      }
    } else if (err == cudaSuccess) {
      err = cudaMemcpy(d.weight, l.weight.data(), count_w * sizeof(float), cudaMemcpyHostToDevice);
    }
    if (err == cudaSuccess && upload.ok() && !l.bias.empty()) {
      err = cudaMalloc(&d.bias, l.bias.size() * sizeof(float));
      if (err == cudaSuccess) {
        stack->weight_bytes_ += l.bias.size() * sizeof(float);
        err = cudaMemcpy(d.bias, l.bias.data(), l.bias.size() * sizeof(float),
                         cudaMemcpyHostToDevice);
      }
    }
    if (err != cudaSuccess) upload = CudaError(err, "uploading the weights");
    if (!upload.ok()) break;
    // The device copy is the only one kept: free the host copy now, not when `layers` goes.
    std::vector<float>().swap(l.weight);
    std::vector<float>().swap(l.bias);
    // ReLU (with or without bias) and the bias itself run in the GEMM's epilogue. cuBLASLt's
    // GELU epilogue is the tanh approximation, not the exact erf form ferry's CPU path uses, so
    // GELU, tanh and sigmoid run as one elementwise kernel after the GEMM.
    const bool has_bias = d.bias != nullptr;
    if (d.act == Activation::kRelu) {
      d.epilogue = has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
    } else {
      d.epilogue = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
      d.activation_kernel = d.act != Activation::kNone;
    }
  }
  if (staging != nullptr) (void)cudaFree(staging);
  if (!upload.ok()) return upload;  // ~Impl frees what was uploaded
  return stack;
}

absl::StatusOr<std::unique_ptr<LinearScratch>> LinearStack::CreateScratch(int64_t max_rows) const {
  if (max_rows < 1 || max_rows > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("linear: max_rows must be in [1, 2^31), got ", max_rows));
  }
  FERRY_LINEAR_CUDA(cudaSetDevice(device_));
  std::unique_ptr<LinearScratch> s(new LinearScratch());
  s->device_ = device_;
  s->max_rows_ = max_rows;
  const size_t act_bytes = static_cast<size_t>(max_rows * widest_) * sizeof(float);
  // Zeroed once: rows a CUDA graph pads a batch with then hold finite values.
  for (float*& buffer : s->act_) {
    FERRY_LINEAR_CUDA(cudaMalloc(&buffer, act_bytes));
    FERRY_LINEAR_CUDA(cudaMemset(buffer, 0, act_bytes));
    s->device_bytes_ += act_bytes;
  }
  if (IsHalf(precision_)) {
    const size_t half_bytes = static_cast<size_t>(max_rows * widest_) * 2;
    FERRY_LINEAR_CUDA(cudaMalloc(&s->half_, half_bytes));
    FERRY_LINEAR_CUDA(cudaMemset(s->half_, 0, half_bytes));
    s->device_bytes_ += half_bytes;
  }
  FERRY_LINEAR_CUDA(cudaMalloc(&s->workspace_, kGemmWorkspaceBytes));
  s->device_bytes_ += kGemmWorkspaceBytes;
  FERRY_LINEAR_CUDA(cudaDeviceSynchronize());  // the memsets ran on the legacy stream
  return s;
}

absl::Status LinearStack::Enqueue(const float* d_in, int64_t rows, float* d_out,
                                  LinearScratch& scratch, cudaStream_t stream) const {
  if (rows < 1 || rows > scratch.max_rows()) {
    return absl::InvalidArgumentError(absl::StrCat("linear: rows = ", rows, ", expected 1..",
                                                   scratch.max_rows(), " (the scratch's size)"));
  }
  if (d_in == nullptr || d_out == nullptr) {
    return absl::InvalidArgumentError("linear: null input or output");
  }
  if (scratch.device_ != device_) {
    return absl::InvalidArgumentError(absl::StrCat("linear: scratch is on GPU ", scratch.device_,
                                                   ", the stack on GPU ", device_));
  }
  FERRY_LINEAR_CUDA(cudaSetDevice(device_));
  Impl& impl = *impl_;
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const float* x = d_in;
  for (size_t i = 0; i < impl.layers.size(); ++i) {
    const Impl::Layer& l = impl.layers[i];
    float* y = i + 1 == impl.layers.size() ? d_out : scratch.act_[i % 2];
    const void* b = x;
    if (IsHalf(precision_)) {
      if (absl::Status s =
              LaunchFloatToHalf(x, scratch.half_, rows * l.in, ToHalfType(precision_), stream);
          !s.ok()) {
        return s;
      }
      b = scratch.half_;
    }
    absl::StatusOr<const Impl::Plan*> plan = impl.GetPlan(i, rows);
    if (!plan.ok()) return plan.status();
    const Impl::Plan& p = **plan;
    FERRY_LINEAR_LT(impl.api, impl.api->matmul(impl.handle, p.desc, &alpha, l.weight, p.a, b, p.b,
                                               &beta, y, p.d, y, p.d, &p.algo, scratch.workspace_,
                                               kGemmWorkspaceBytes, stream));
    if (l.activation_kernel) {
      if (absl::Status s = LaunchBiasActivation(y, nullptr, rows, l.out, l.act, stream); !s.ok()) {
        return s;
      }
    }
    if (l.softmax) {
      if (absl::Status s = LaunchRowSoftmax(y, rows, l.out, stream); !s.ok()) return s;
    }
    x = y;
  }
  return absl::OkStatus();
}

}  // namespace ferry::cuda
