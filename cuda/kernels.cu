#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cuda/kernels.h"

namespace ferry::cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr int kElementwiseThreads = 256;
constexpr int kSoftmaxMaxThreads = 256;
// Grid-stride loops cover any size, so the grid only needs to fill the GPU several times over.
constexpr int64_t kMaxBlocks = 65535;

// ---- Kernels -----------------------------------------------------------------------------------

template <Activation kAct>
__device__ __forceinline__ float Activate(float x) {
  if constexpr (kAct == Activation::kRelu) {
    return x > 0.0f ? x : 0.0f;
  } else if constexpr (kAct == Activation::kGelu) {
    constexpr float kInvSqrt2 = 0.7071067811865476f;
    return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  } else if constexpr (kAct == Activation::kTanh) {
    return tanhf(x);
  } else if constexpr (kAct == Activation::kSigmoid) {
    // For very negative x, expf(-x) overflows to inf and the quotient is a clean 0.
    return 1.0f / (1.0f + expf(-x));
  } else {
    return x;
  }
}

template <Activation kAct>
__global__ void BiasActivationKernel(float* __restrict__ y, const float* __restrict__ bias,
                                     int64_t total, int64_t cols) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    float v = y[i];
    if (bias != nullptr) v += bias[i % cols];
    y[i] = Activate<kAct>(v);
  }
}

struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

template <typename Op>
__device__ __forceinline__ float WarpReduce(float v, Op op) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Reduces `v` over the block and returns the result to every thread. `scratch` holds 33 floats:
// one per warp plus a broadcast slot. blockDim.x must be a multiple of 32.
template <typename Op>
__device__ float BlockReduce(float v, Op op, float identity, float* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = WarpReduce(v, op);
  __syncthreads();  // the previous call may still be reading scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < num_warps ? scratch[lane] : identity;
    v = WarpReduce(v, op);
    if (lane == 0) scratch[kWarpSize] = v;
  }
  __syncthreads();
  return scratch[kWarpSize];
}

__global__ void RowSoftmaxKernel(float* __restrict__ y, int64_t rows, int64_t cols) {
  __shared__ float scratch[kWarpSize + 1];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    float* p = y + row * cols;
    float local_max = -FLT_MAX;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) local_max = fmaxf(local_max, p[c]);
    const float row_max = BlockReduce(local_max, MaxOp{}, -FLT_MAX, scratch);

    float local_sum = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float e = expf(p[c] - row_max);
      p[c] = e;
      local_sum += e;
    }
    const float inv_sum = 1.0f / BlockReduce(local_sum, SumOp{}, 0.0f, scratch);
    // Each thread rescales exactly the elements it wrote above, so no barrier is needed here.
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) p[c] *= inv_sum;
  }
}

template <typename Half>
__device__ __forceinline__ Half FromFloat(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}

template <typename Half>
__global__ void FloatToHalfKernel(const float* __restrict__ in, Half* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = FromFloat<Half>(in[i]);
  }
}

template <typename Half>
__global__ void HalfToFloatKernel(const Half* __restrict__ in, float* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = static_cast<float>(in[i]);
  }
}

__global__ void NoopKernel() {}
__global__ void TrapKernel() { __trap(); }

// ---- Launchers ---------------------------------------------------------------------------------

std::string BuiltArchitectures() {
#ifdef FERRY_CUDA_ARCHITECTURES
  return FERRY_CUDA_ARCHITECTURES;
#else
  return "unknown";
#endif
}

absl::Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  if (err == cudaErrorNoKernelImageForDevice) {
    // Say which GPU and what the build has, so the fix (rebuild for it) is obvious.
    int device = -1;
    cudaDeviceProp prop{};
    std::string gpu = "this GPU";
    if (cudaGetDevice(&device) == cudaSuccess &&
        cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
      gpu = absl::StrCat("GPU ", device, " (", prop.name, ", compute capability ", prop.major, ".",
                         prop.minor, ")");
    }
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": ferry has no kernel image for ", gpu, "; this build has CUDA architectures ",
        BuiltArchitectures(), " (rebuild with CMAKE_CUDA_ARCHITECTURES including this GPU's)"));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(err)));
}

int64_t GridFor(int64_t n) {
  return std::min<int64_t>((n + kElementwiseThreads - 1) / kElementwiseThreads, kMaxBlocks);
}

template <Activation kAct>
void LaunchBiasActivationTyped(float* y, const float* bias, int64_t total, int64_t cols,
                               cudaStream_t stream) {
  const int64_t blocks = GridFor(total);
  BiasActivationKernel<kAct>
      <<<static_cast<unsigned>(blocks), kElementwiseThreads, 0, stream>>>(y, bias, total, cols);
}

}  // namespace

absl::Status LaunchBiasActivation(float* y, const float* bias, int64_t rows, int64_t cols,
                                  Activation act, cudaStream_t stream) {
  if (rows < 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchBiasActivation: bad shape ", rows, "x", cols));
  }
  if (rows == 0) return absl::OkStatus();
  if (y == nullptr) return absl::InvalidArgumentError("LaunchBiasActivation: y is null");
  const int64_t total = rows * cols;
  switch (act) {
    case Activation::kNone:
      if (bias == nullptr) return absl::OkStatus();
      LaunchBiasActivationTyped<Activation::kNone>(y, bias, total, cols, stream);
      break;
    case Activation::kRelu:
      LaunchBiasActivationTyped<Activation::kRelu>(y, bias, total, cols, stream);
      break;
    case Activation::kGelu:
      LaunchBiasActivationTyped<Activation::kGelu>(y, bias, total, cols, stream);
      break;
    case Activation::kTanh:
      LaunchBiasActivationTyped<Activation::kTanh>(y, bias, total, cols, stream);
      break;
    case Activation::kSigmoid:
      LaunchBiasActivationTyped<Activation::kSigmoid>(y, bias, total, cols, stream);
      break;
    default:
      return absl::InvalidArgumentError("LaunchBiasActivation: unknown activation");
  }
  return LaunchStatus("LaunchBiasActivation");
}

absl::Status LaunchRowSoftmax(float* y, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows < 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchRowSoftmax: bad shape ", rows, "x", cols));
  }
  if (rows == 0) return absl::OkStatus();
  if (y == nullptr) return absl::InvalidArgumentError("LaunchRowSoftmax: y is null");
  // Narrow rows get one warp; wide rows a few warps, each thread striding over the row.
  const int64_t wanted = (cols + kWarpSize - 1) / kWarpSize * kWarpSize;
  const int threads = static_cast<int>(std::min<int64_t>(wanted, kSoftmaxMaxThreads));
  const int64_t blocks = std::min<int64_t>(rows, kMaxBlocks);
  RowSoftmaxKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(y, rows, cols);
  return LaunchStatus("LaunchRowSoftmax");
}

absl::Status LaunchFloatToHalf(const float* in, void* out, int64_t n, HalfType type,
                               cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("LaunchFloatToHalf: n = ", n));
  if (n == 0) return absl::OkStatus();
  if (in == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchFloatToHalf: null pointer");
  }
  const unsigned blocks = static_cast<unsigned>(GridFor(n));
  if (type == HalfType::kBf16) {
    FloatToHalfKernel<<<blocks, kElementwiseThreads, 0, stream>>>(
        in, static_cast<__nv_bfloat16*>(out), n);
  } else {
    FloatToHalfKernel<<<blocks, kElementwiseThreads, 0, stream>>>(in, static_cast<__half*>(out), n);
  }
  return LaunchStatus("LaunchFloatToHalf");
}

absl::Status LaunchHalfToFloat(const void* in, float* out, int64_t n, HalfType type,
                               cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("LaunchHalfToFloat: n = ", n));
  if (n == 0) return absl::OkStatus();
  if (in == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchHalfToFloat: null pointer");
  }
  const unsigned blocks = static_cast<unsigned>(GridFor(n));
  if (type == HalfType::kBf16) {
    HalfToFloatKernel<<<blocks, kElementwiseThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(in), out, n);
  } else {
    HalfToFloatKernel<<<blocks, kElementwiseThreads, 0, stream>>>(static_cast<const __half*>(in),
                                                                  out, n);
  }
  return LaunchStatus("LaunchHalfToFloat");
}

absl::Status ProbeKernelImage(cudaStream_t stream) {
  NoopKernel<<<1, 1, 0, stream>>>();
  if (absl::Status s = LaunchStatus("warm-up kernel"); !s.ok()) return s;
  const cudaError_t err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::InternalError(absl::StrCat("warm-up kernel: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

absl::Status LaunchTrapForTest(cudaStream_t stream) {
  TrapKernel<<<1, 1, 0, stream>>>();
  return LaunchStatus("LaunchTrapForTest");
}

}  // namespace ferry::cuda
