#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cuda/bert_kernels.h"

namespace ferry::cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr int kElementwiseThreads = 256;
// Row kernels (LayerNorm, pooling): one block per row; 128 threads cover a 384-wide row in three
// strides and leave room for several blocks per SM.
constexpr int kRowThreads = 128;
// Grid-stride loops cover any size, so the grid only needs to fill the GPU several times over.
constexpr int64_t kMaxBlocks = 65535;

// ---- Kernels -----------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ float ToFloat(T x);
template <>
__device__ __forceinline__ float ToFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
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

// Sum of `v` over the block, returned to every thread. `scratch` holds 33 floats. blockDim.x is a
// multiple of 32.
__device__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = WarpReduce(v, SumOp{});
  __syncthreads();  // the previous call may still be reading scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < num_warps ? scratch[lane] : 0.0f;
    v = WarpReduce(v, SumOp{});
    if (lane == 0) scratch[kWarpSize] = v;
  }
  __syncthreads();
  return scratch[kWarpSize];
}

// LayerNorm of one row whose values this thread has put in row[c] for its own columns
// (c = threadIdx.x, += blockDim.x), `sum` being this thread's part of their sum. Two passes over
// the row (mean, then centred variance), as PyTorch does: no cancellation from E[x²] − E[x]².
// Each thread reads back only the columns it wrote, so `row` needs no barrier.
template <typename T>
__device__ void LayerNormRow(const float* row, float sum, int n, float eps,
                             const float* __restrict__ gamma, const float* __restrict__ beta,
                             T* out, float* scratch) {
  const float mean = BlockSum(sum, scratch) / static_cast<float>(n);
  float sq = 0.0f;
  for (int c = threadIdx.x; c < n; c += blockDim.x) {
    const float d = row[c] - mean;
    sq += d * d;
  }
  const float inv = rsqrtf(BlockSum(sq, scratch) / static_cast<float>(n) + eps);
  for (int c = threadIdx.x; c < n; c += blockDim.x) {
    out[c] = FromFloat<T>((row[c] - mean) * inv * gamma[c] + beta[c]);
  }
}

template <typename T>
__global__ void ConvertFromFloatKernel(const float* __restrict__ in, T* __restrict__ out,
                                       int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = FromFloat<T>(in[i]);
  }
}

template <typename T>
__global__ void ConvertToFloatKernel(const T* __restrict__ in, float* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = ToFloat<T>(in[i]);
  }
}

// One block per token (grid-stride); dynamic shared memory: `hidden` floats.
template <typename T>
__global__ void EmbeddingLayerNormKernel(const int32_t* __restrict__ ids,
                                         const int32_t* __restrict__ positions,
                                         const T* __restrict__ word, const T* __restrict__ position,
                                         const T* __restrict__ type0,
                                         const float* __restrict__ gamma,
                                         const float* __restrict__ beta, int64_t tokens, int hidden,
                                         float eps, T* __restrict__ out) {
  extern __shared__ float row[];
  __shared__ float scratch[kWarpSize + 1];
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const T* we = word + static_cast<int64_t>(ids[t]) * hidden;
    const T* pe = position + static_cast<int64_t>(positions[t]) * hidden;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
      const float v = ToFloat<T>(we[c]) + ToFloat<T>(pe[c]) + ToFloat<T>(type0[c]);
      row[c] = v;
      sum += v;
    }
    LayerNormRow(row, sum, hidden, eps, gamma, beta, out + t * hidden, scratch);
  }
}

// One block per row (grid-stride), threads over its columns: no per-element division to find
// the column (64-bit division is dozens of instructions on a GPU).
template <typename T>
__global__ void BiasGeluKernel(T* __restrict__ y, const float* __restrict__ bias, int64_t rows,
                               int cols) {
  constexpr float kInvSqrt2 = 0.7071067811865476f;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = y + r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float x = ToFloat<T>(row[c]) + bias[c];
      row[c] = FromFloat<T>(0.5f * x * (1.0f + erff(x * kInvSqrt2)));
    }
  }
}

// Rows up to kMaxWarpRowCols wide are normalised by one warp each (kWarpRows rows per block): the
// row's values stay in registers (at most 32 per lane) and the reductions are warp shuffles, with
// no block barrier. MiniLM's rows are 384 wide.
constexpr int kWarpRows = 4;
constexpr int kMaxWarpRowCols = 32 * kWarpSize;

// LayerNorm of the row whose values v[k] (column lane + 32·k, for columns < n) this lane holds,
// `sum` being the lane's part of their sum; writes out[0, n).
template <typename T>
__device__ __forceinline__ void WarpLayerNorm(const float (&v)[kMaxWarpRowCols / kWarpSize],
                                              float sum, int n, float eps,
                                              const float* __restrict__ gamma,
                                              const float* __restrict__ beta, T* out) {
  constexpr int kPerLane = kMaxWarpRowCols / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const float mean = WarpReduce(sum, SumOp{}) / static_cast<float>(n);
  float sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    if (lane + k * kWarpSize < n) {
      const float d = v[k] - mean;
      sq += d * d;
    }
  }
  const float inv = rsqrtf(WarpReduce(sq, SumOp{}) / static_cast<float>(n) + eps);
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int c = lane + k * kWarpSize;
    if (c < n) out[c] = FromFloat<T>((v[k] - mean) * inv * gamma[c] + beta[c]);
  }
}

template <typename T>
__global__ void EmbeddingLayerNormWarpKernel(
    const int32_t* __restrict__ ids, const int32_t* __restrict__ positions,
    const T* __restrict__ word, const T* __restrict__ position, const T* __restrict__ type0,
    const float* __restrict__ gamma, const float* __restrict__ beta, int64_t tokens, int hidden,
    float eps, T* __restrict__ out) {
  constexpr int kPerLane = kMaxWarpRowCols / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpRows + warp; t < tokens;
       t += static_cast<int64_t>(gridDim.x) * kWarpRows) {
    const T* we = word + static_cast<int64_t>(ids[t]) * hidden;
    const T* pe = position + static_cast<int64_t>(positions[t]) * hidden;
    float v[kPerLane];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int c = lane + k * kWarpSize;
      v[k] = c < hidden ? ToFloat<T>(we[c]) + ToFloat<T>(pe[c]) + ToFloat<T>(type0[c]) : 0.0f;
      sum += v[k];
    }
    WarpLayerNorm(v, sum, hidden, eps, gamma, beta, out + t * hidden);
  }
}

// `residual` and `out` may alias: each lane reads its columns of the row before the warp's first
// shuffle and writes only those columns after it.
template <typename T>
__global__ void BiasResidualLayerNormWarpKernel(const T* __restrict__ y,
                                                const float* __restrict__ bias, const T* residual,
                                                const float* __restrict__ gamma,
                                                const float* __restrict__ beta, int64_t rows,
                                                int cols, float eps, T* out) {
  constexpr int kPerLane = kMaxWarpRowCols / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpRows + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarpRows) {
    const T* yr = y + r * cols;
    const T* rr = residual + r * cols;
    float v[kPerLane];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int c = lane + k * kWarpSize;
      v[k] = c < cols ? ToFloat<T>(yr[c]) + bias[c] + ToFloat<T>(rr[c]) : 0.0f;
      sum += v[k];
    }
    WarpLayerNorm(v, sum, cols, eps, gamma, beta, out + r * cols);
  }
}

// One block per row (grid-stride); dynamic shared memory: `cols` floats. `residual` and `out` may
// alias: LayerNormRow's first barrier comes after every read of the row.
template <typename T>
__global__ void BiasResidualLayerNormKernel(const T* __restrict__ y, const float* __restrict__ bias,
                                            const T* residual, const float* __restrict__ gamma,
                                            const float* __restrict__ beta, int64_t rows, int cols,
                                            float eps, T* out) {
  extern __shared__ float row[];
  __shared__ float scratch[kWarpSize + 1];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * cols;
    const T* rr = residual + r * cols;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float v = ToFloat<T>(yr[c]) + bias[c] + ToFloat<T>(rr[c]);
      row[c] = v;
      sum += v;
    }
    LayerNormRow(row, sum, cols, eps, gamma, beta, out + r * cols, scratch);
  }
}

// Block (tile, head): the keys and values of the tile's sequence for that head go to shared
// memory once; then each warp takes one query of the tile at a time: lanes score keys j ≡ lane
// (mod 32), the warp reduces max and sum, and lane c accumulates output dimensions c, c + 32.
// Keys are stored with a row stride of d + 1 floats so that 32 lanes reading 32 different keys
// at the same column hit 32 different banks.
template <typename T>
__global__ void __launch_bounds__(kBertAttentionWarps* kWarpSize)
    PackedAttentionKernel(const T* __restrict__ qkv, const float* __restrict__ qkv_bias,
                          const int32_t* __restrict__ offsets, const int32_t* __restrict__ tiles,
                          int heads, int d, int max_len, T* __restrict__ ctx) {
  extern __shared__ float smem[];
  const int seq = tiles[2 * blockIdx.x];
  const int q0 = tiles[2 * blockIdx.x + 1];
  const int head = blockIdx.y;
  const int begin = offsets[seq];
  const int len = offsets[seq + 1] - begin;
  const int hd = heads * d;
  const int64_t ld = 3 * static_cast<int64_t>(hd);
  const int kstride = d + 1;
  float* ks = smem;                                         // [len][d + 1]
  float* vs = ks + static_cast<size_t>(max_len) * kstride;  // [len][d]
  float* qs = vs + static_cast<size_t>(max_len) * d;        // [warps][d]
  float* ps = qs + kBertAttentionWarps * d;                 // [warps][max_len]

  const int qcol = head * d;
  const int kcol = hd + head * d;
  const int vcol = 2 * hd + head * d;
  for (int i = threadIdx.x; i < len * d; i += blockDim.x) {
    const int j = i / d;
    const int c = i - j * d;
    const T* row = qkv + static_cast<int64_t>(begin + j) * ld;
    const float kb = qkv_bias != nullptr ? qkv_bias[kcol + c] : 0.0f;
    const float vb = qkv_bias != nullptr ? qkv_bias[vcol + c] : 0.0f;
    ks[j * kstride + c] = ToFloat<T>(row[kcol + c]) + kb;
    vs[j * d + c] = ToFloat<T>(row[vcol + c]) + vb;
  }
  __syncthreads();

  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  float* q = qs + warp * d;
  float* p = ps + static_cast<size_t>(warp) * max_len;
  const float scale = rsqrtf(static_cast<float>(d));
  const int q_end = min(len, q0 + kBertAttentionTileQueries);
  for (int i = q0 + warp; i < q_end; i += kBertAttentionWarps) {
    const T* row = qkv + static_cast<int64_t>(begin + i) * ld;
    for (int c = lane; c < d; c += kWarpSize) {
      const float qb = qkv_bias != nullptr ? qkv_bias[qcol + c] : 0.0f;
      q[c] = (ToFloat<T>(row[qcol + c]) + qb) * scale;
    }
    __syncwarp();
    float m = -FLT_MAX;
    for (int j = lane; j < len; j += kWarpSize) {
      const float* k = ks + j * kstride;
      float s = 0.0f;
      for (int c = 0; c < d; ++c) s += q[c] * k[c];
      p[j] = s;
      m = fmaxf(m, s);
    }
    m = WarpReduce(m, MaxOp{});
    float sum = 0.0f;
    for (int j = lane; j < len; j += kWarpSize) {
      const float e = expf(p[j] - m);
      p[j] = e;
      sum += e;
    }
    const float inv = 1.0f / WarpReduce(sum, SumOp{});
    __syncwarp();  // every lane's p[] is written before any lane reads all of them
    T* out = ctx + static_cast<int64_t>(begin + i) * hd + head * d;
    for (int c = lane; c < d; c += kWarpSize) {
      float acc = 0.0f;
      for (int j = 0; j < len; ++j) acc += p[j] * vs[j * d + c];
      out[c] = FromFloat<T>(acc * inv);
    }
    __syncwarp();  // q[] and p[] are rewritten for the warp's next query
  }
}

// The same attention for head dimension 32 (MiniLM, BERT-base's 64/2...), faster: each warp
// takes kFastQueries queries at once and keeps them in registers, so every key or value read
// from shared memory feeds kFastQueries multiply-adds instead of one (the generic kernel is
// bound by shared-memory reads, two per multiply-add). Lanes score keys j ≡ lane (mod 32) for
// the warp's queries; then lane c accumulates output dimension c for them, reading the
// probabilities four keys at a time (16-byte broadcasts). Shared memory, 16-byte aligned:
//   ps [warps][kFastQueries][len4]   probabilities (len4 = max_len rounded up to 4; zero padded)
//   qs [warps][kFastQueries][32]     the warp's scaled queries
//   vs [len4][32]                    values (rows len..len4-1 zero)
//   ks [max_len][33]                 keys (stride 33: conflict-free column reads across lanes)
constexpr int kFastHeadDim = 32;
constexpr int kFastQueries = 4;

__host__ __device__ constexpr int RoundUp4(int n) { return (n + 3) / 4 * 4; }

constexpr size_t FastAttentionSharedBytes(int max_len) {
  const size_t len4 = static_cast<size_t>(RoundUp4(max_len));
  return sizeof(float) *
         (static_cast<size_t>(kBertAttentionWarps) * kFastQueries * (len4 + kFastHeadDim) +
          len4 * kFastHeadDim + static_cast<size_t>(max_len) * (kFastHeadDim + 1));
}

template <typename T>
__global__ void __launch_bounds__(kBertAttentionWarps* kWarpSize)
    PackedAttention32Kernel(const T* __restrict__ qkv, const float* __restrict__ qkv_bias,
                            const int32_t* __restrict__ offsets, const int32_t* __restrict__ tiles,
                            int heads, int max_len, T* __restrict__ ctx) {
  constexpr int D = kFastHeadDim;
  constexpr int Q = kFastQueries;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int seq = tiles[2 * blockIdx.x];
  const int q0 = tiles[2 * blockIdx.x + 1];
  const int head = blockIdx.y;
  const int begin = offsets[seq];
  const int len = offsets[seq + 1] - begin;
  const int len4 = RoundUp4(len);
  const int max_len4 = RoundUp4(max_len);
  const int hd = heads * D;
  const int64_t ld = 3 * static_cast<int64_t>(hd);
  float* ps = smem;
  float* qs = ps + static_cast<size_t>(kBertAttentionWarps) * Q * max_len4;
  float* vs = qs + kBertAttentionWarps * Q * D;
  float* ks = vs + static_cast<size_t>(max_len4) * D;

  const int qcol = head * D;
  const int kcol = hd + head * D;
  const int vcol = 2 * hd + head * D;
  for (int i = threadIdx.x; i < len4 * D; i += blockDim.x) {
    const int j = i / D;
    const int c = i % D;
    if (j < len) {
      const T* row = qkv + static_cast<int64_t>(begin + j) * ld;
      const float kb = qkv_bias != nullptr ? qkv_bias[kcol + c] : 0.0f;
      const float vb = qkv_bias != nullptr ? qkv_bias[vcol + c] : 0.0f;
      ks[j * (D + 1) + c] = ToFloat<T>(row[kcol + c]) + kb;
      vs[j * D + c] = ToFloat<T>(row[vcol + c]) + vb;
    } else {
      vs[j * D + c] = 0.0f;  // read (times a zero probability) by the four-key steps below
    }
  }
  __syncthreads();

  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  float* q = qs + warp * Q * D;                              // [Q][D]
  float* p = ps + static_cast<size_t>(warp) * Q * max_len4;  // [Q][max_len4]
  const float scale = rsqrtf(static_cast<float>(D));
  const float qb = qkv_bias != nullptr ? qkv_bias[qcol + lane] : 0.0f;
  const int q_end = min(len, q0 + kBertAttentionTileQueries);
  for (int first = q0 + warp * Q; first < q_end; first += kBertAttentionWarps * Q) {
    // The warp's queries (lane = dimension), zero for positions past the tile.
#pragma unroll
    for (int k = 0; k < Q; ++k) {
      const int i = first + k;
      q[k * D + lane] =
          i < q_end
              ? (ToFloat<T>(qkv[static_cast<int64_t>(begin + i) * ld + qcol + lane]) + qb) * scale
              : 0.0f;
    }
    __syncwarp();
    float qr[Q][D];
#pragma unroll
    for (int k = 0; k < Q; ++k) {
#pragma unroll
      for (int c = 0; c < D; c += 4) {
        const float4 v = *reinterpret_cast<const float4*>(q + k * D + c);
        qr[k][c] = v.x;
        qr[k][c + 1] = v.y;
        qr[k][c + 2] = v.z;
        qr[k][c + 3] = v.w;
      }
    }
    float m[Q];
#pragma unroll
    for (int k = 0; k < Q; ++k) m[k] = -FLT_MAX;
    for (int j = lane; j < len; j += kWarpSize) {
      const float* kr = ks + j * (D + 1);
      float s[Q] = {};
#pragma unroll
      for (int c = 0; c < D; ++c) {
        const float kc = kr[c];
#pragma unroll
        for (int k = 0; k < Q; ++k) s[k] += qr[k][c] * kc;
      }
#pragma unroll
      for (int k = 0; k < Q; ++k) {
        p[k * max_len4 + j] = s[k];
        m[k] = fmaxf(m[k], s[k]);
      }
    }
    float inv[Q];
#pragma unroll
    for (int k = 0; k < Q; ++k) {
      m[k] = WarpReduce(m[k], MaxOp{});
      float sum = 0.0f;
      for (int j = lane; j < len; j += kWarpSize) {
        const float e = expf(p[k * max_len4 + j] - m[k]);
        p[k * max_len4 + j] = e;
        sum += e;
      }
      for (int j = len + lane; j < len4; j += kWarpSize) p[k * max_len4 + j] = 0.0f;
      inv[k] = 1.0f / WarpReduce(sum, SumOp{});
    }
    __syncwarp();  // every lane's probabilities are written before any lane reads them all
    float acc[Q] = {};
    for (int j = 0; j < len4; j += 4) {
      const float v0 = vs[(j + 0) * D + lane];
      const float v1 = vs[(j + 1) * D + lane];
      const float v2 = vs[(j + 2) * D + lane];
      const float v3 = vs[(j + 3) * D + lane];
#pragma unroll
      for (int k = 0; k < Q; ++k) {
        const float4 pk = *reinterpret_cast<const float4*>(p + k * max_len4 + j);
        acc[k] += pk.x * v0 + pk.y * v1 + pk.z * v2 + pk.w * v3;
      }
    }
#pragma unroll
    for (int k = 0; k < Q; ++k) {
      const int i = first + k;
      if (i < q_end) {
        ctx[static_cast<int64_t>(begin + i) * hd + head * D + lane] = FromFloat<T>(acc[k] * inv[k]);
      }
    }
    __syncwarp();  // q[] and p[] are rewritten for the warp's next queries
  }
}

// One block per sequence (grid-stride); dynamic shared memory: `hidden` floats.
template <typename T>
__global__ void MeanPoolNormalizeKernel(const T* __restrict__ x,
                                        const int32_t* __restrict__ offsets, int num_seqs,
                                        int hidden, bool normalize, float* __restrict__ out) {
  extern __shared__ float mean[];
  __shared__ float scratch[kWarpSize + 1];
  for (int s = blockIdx.x; s < num_seqs; s += gridDim.x) {
    const int begin = offsets[s];
    const int len = offsets[s + 1] - begin;
    const float inv_len = len > 0 ? 1.0f / static_cast<float>(len) : 0.0f;
    float sq = 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
      float acc = 0.0f;
      for (int r = 0; r < len; ++r)
        acc += ToFloat<T>(x[static_cast<int64_t>(begin + r) * hidden + c]);
      const float m = acc * inv_len;
      mean[c] = m;
      sq += m * m;
    }
    float scale = 1.0f;
    if (normalize) scale = 1.0f / fmaxf(sqrtf(BlockSum(sq, scratch)), 1e-12f);
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
      out[static_cast<int64_t>(s) * hidden + c] = mean[c] * scale;
    }
    __syncthreads();  // `mean` is rewritten for the block's next sequence
  }
}

// ---- Launchers ---------------------------------------------------------------------------------

absl::Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  if (err == cudaErrorNoKernelImageForDevice) {
    // A GPU this build has no code for: not a fault of the request (see cuda/kernels.h).
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": ", cudaGetErrorString(err), " (rebuild with CMAKE_CUDA_ARCHITECTURES for it)"));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(err)));
}

unsigned GridFor(int64_t n, int threads) {
  return static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, kMaxBlocks));
}

unsigned WarpRowGrid(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>((rows + kWarpRows - 1) / kWarpRows, kMaxBlocks));
}

unsigned RowGrid(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(rows, kMaxBlocks));
}

// Calls `launch` with a typed null pointer of the element type of `type` (so the caller can
// static_cast its void* buffers to decltype of it).
template <typename F>
void Dispatch(BertDType type, F&& launch) {
  switch (type) {
    case BertDType::kFp32:
      launch(static_cast<float*>(nullptr));
      break;
    case BertDType::kFp16:
      launch(static_cast<__half*>(nullptr));
      break;
    case BertDType::kBf16:
      launch(static_cast<__nv_bfloat16*>(nullptr));
      break;
  }
}

bool KnownType(BertDType type) {
  return type == BertDType::kFp32 || type == BertDType::kFp16 || type == BertDType::kBf16;
}

// Dynamic shared memory for a row of `cols` floats; the row kernels' limit is the default 48 KiB.
constexpr int kMaxRowCols = 48 * 1024 / static_cast<int>(sizeof(float)) - 64;

}  // namespace

absl::Status LaunchConvertFromFloat(const float* in, void* out, int64_t n, BertDType type,
                                    cudaStream_t stream) {
  if (n < 0 || !KnownType(type)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchConvertFromFloat: n = ", n));
  }
  if (n == 0) return absl::OkStatus();
  if (in == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchConvertFromFloat: null pointer");
  }
  Dispatch(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    ConvertFromFloatKernel<T><<<GridFor(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        in, static_cast<T*>(out), n);
  });
  return LaunchStatus("LaunchConvertFromFloat");
}

absl::Status LaunchConvertToFloat(const void* in, float* out, int64_t n, BertDType type,
                                  cudaStream_t stream) {
  if (n < 0 || !KnownType(type)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchConvertToFloat: n = ", n));
  }
  if (n == 0) return absl::OkStatus();
  if (in == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchConvertToFloat: null pointer");
  }
  Dispatch(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    ConvertToFloatKernel<T><<<GridFor(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        static_cast<const T*>(in), out, n);
  });
  return LaunchStatus("LaunchConvertToFloat");
}

absl::Status LaunchEmbeddingLayerNorm(const int32_t* ids, const int32_t* positions,
                                      const void* word, const void* position,
                                      const void* token_type0, const float* gamma,
                                      const float* beta, int64_t tokens, int hidden, float eps,
                                      void* out, BertDType type, cudaStream_t stream) {
  if (tokens < 0 || hidden <= 0 || hidden > kMaxRowCols || !KnownType(type)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchEmbeddingLayerNorm: bad shape ", tokens,
                                                   "x", hidden, " (hidden at most ", kMaxRowCols,
                                                   ")"));
  }
  if (tokens == 0) return absl::OkStatus();
  if (ids == nullptr || positions == nullptr || word == nullptr || position == nullptr ||
      token_type0 == nullptr || gamma == nullptr || beta == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchEmbeddingLayerNorm: null pointer");
  }
  const size_t smem = sizeof(float) * hidden;
  Dispatch(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (hidden <= kMaxWarpRowCols) {
      EmbeddingLayerNormWarpKernel<T><<<WarpRowGrid(tokens), kWarpRows * kWarpSize, 0, stream>>>(
          ids, positions, static_cast<const T*>(word), static_cast<const T*>(position),
          static_cast<const T*>(token_type0), gamma, beta, tokens, hidden, eps,
          static_cast<T*>(out));
    } else {
      EmbeddingLayerNormKernel<T><<<RowGrid(tokens), kRowThreads, smem, stream>>>(
          ids, positions, static_cast<const T*>(word), static_cast<const T*>(position),
          static_cast<const T*>(token_type0), gamma, beta, tokens, hidden, eps,
          static_cast<T*>(out));
    }
  });
  return LaunchStatus("LaunchEmbeddingLayerNorm");
}

absl::Status LaunchBiasGelu(void* y, const float* bias, int64_t rows, int cols, BertDType type,
                            cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || !KnownType(type)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchBiasGelu: bad shape ", rows, "x", cols));
  }
  if (rows == 0) return absl::OkStatus();
  if (y == nullptr || bias == nullptr) {
    return absl::InvalidArgumentError("LaunchBiasGelu: null pointer");
  }
  // Narrow rows get fewer threads per block, so that few threads idle.
  const int threads = cols >= kElementwiseThreads ? kElementwiseThreads : (cols + 31) / 32 * 32;
  Dispatch(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    BiasGeluKernel<T><<<RowGrid(rows), threads, 0, stream>>>(static_cast<T*>(y), bias, rows, cols);
  });
  return LaunchStatus("LaunchBiasGelu");
}

absl::Status LaunchBiasResidualLayerNorm(const void* y, const float* bias, const void* residual,
                                         const float* gamma, const float* beta, int64_t rows,
                                         int cols, float eps, void* out, BertDType type,
                                         cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || cols > kMaxRowCols || !KnownType(type)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchBiasResidualLayerNorm: bad shape ", rows,
                                                   "x", cols, " (cols at most ", kMaxRowCols, ")"));
  }
  if (rows == 0) return absl::OkStatus();
  if (y == nullptr || bias == nullptr || residual == nullptr || gamma == nullptr ||
      beta == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchBiasResidualLayerNorm: null pointer");
  }
  const size_t smem = sizeof(float) * cols;
  Dispatch(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (cols <= kMaxWarpRowCols) {
      BiasResidualLayerNormWarpKernel<T><<<WarpRowGrid(rows), kWarpRows * kWarpSize, 0, stream>>>(
          static_cast<const T*>(y), bias, static_cast<const T*>(residual), gamma, beta, rows, cols,
          eps, static_cast<T*>(out));
    } else {
      BiasResidualLayerNormKernel<T><<<RowGrid(rows), kRowThreads, smem, stream>>>(
          static_cast<const T*>(y), bias, static_cast<const T*>(residual), gamma, beta, rows, cols,
          eps, static_cast<T*>(out));
    }
  });
  return LaunchStatus("LaunchBiasResidualLayerNorm");
}

absl::Status LaunchPackedAttention(const void* qkv, const float* qkv_bias, const int32_t* offsets,
                                   const int32_t* tiles, int num_tiles, int heads, int head_dim,
                                   int max_len, void* ctx, BertDType type, cudaStream_t stream,
                                   bool allow_fast) {
  if (num_tiles < 0 || heads <= 0 || heads > 65535 || head_dim <= 0 || head_dim > kBertMaxHeadDim ||
      max_len <= 0 || max_len > kBertMaxAttentionLength || !KnownType(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchPackedAttention: bad shape: ", num_tiles, " tiles, ", heads,
                     " heads of ", head_dim, " (at most ", kBertMaxHeadDim, "), max_len ", max_len,
                     " (at most ", kBertMaxAttentionLength, ")"));
  }
  if (num_tiles == 0) return absl::OkStatus();
  if (qkv == nullptr || offsets == nullptr || tiles == nullptr || ctx == nullptr) {
    return absl::InvalidArgumentError("LaunchPackedAttention: null pointer");
  }
  int device = 0;
  int smem_max = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess) {
    return LaunchStatus("LaunchPackedAttention: device attributes");
  }
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(heads));
  const unsigned threads = kBertAttentionWarps * kWarpSize;
  // Head dimension 32 has its own kernel where its shared memory fits (always up to 256 tokens;
  // 512 on sm_90, not on sm_80).
  const bool fast = allow_fast && head_dim == kFastHeadDim &&
                    FastAttentionSharedBytes(max_len) <= static_cast<size_t>(smem_max);
  const size_t smem =
      fast ? FastAttentionSharedBytes(max_len) : PackedAttentionSharedBytes(max_len, head_dim);
  if (smem > static_cast<size_t>(smem_max)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchPackedAttention: ", max_len, " tokens × head dim ", head_dim, " need ",
                     smem, " bytes of shared memory; this GPU has ", smem_max));
  }
  cudaError_t attr_err = cudaSuccess;
  Dispatch(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    // Above 48 KiB a kernel must opt in to more dynamic shared memory. The limit is raised to the
    // device's maximum, never lowered, so that concurrent launches with other sizes cannot undo
    // each other's setting (occupancy depends on each launch's own size, not on this limit).
    if (smem > 48 * 1024) {
      attr_err = fast ? cudaFuncSetAttribute(PackedAttention32Kernel<T>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max)
                      : cudaFuncSetAttribute(PackedAttentionKernel<T>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max);
      if (attr_err != cudaSuccess) return;
    }
    if (fast) {
      PackedAttention32Kernel<T><<<grid, threads, smem, stream>>>(static_cast<const T*>(qkv),
                                                                  qkv_bias, offsets, tiles, heads,
                                                                  max_len, static_cast<T*>(ctx));
    } else {
      PackedAttentionKernel<T>
          <<<grid, threads, smem, stream>>>(static_cast<const T*>(qkv), qkv_bias, offsets, tiles,
                                            heads, head_dim, max_len, static_cast<T*>(ctx));
    }
  });
  if (attr_err != cudaSuccess) return LaunchStatus("LaunchPackedAttention: cudaFuncSetAttribute");
  return LaunchStatus("LaunchPackedAttention");
}

absl::Status LaunchMeanPoolNormalize(const void* x, const int32_t* offsets, int num_seqs,
                                     int hidden, bool normalize, float* out, BertDType type,
                                     cudaStream_t stream) {
  if (num_seqs < 0 || hidden <= 0 || hidden > kMaxRowCols || !KnownType(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchMeanPoolNormalize: bad shape ", num_seqs, "x", hidden));
  }
  if (num_seqs == 0) return absl::OkStatus();
  if (x == nullptr || offsets == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("LaunchMeanPoolNormalize: null pointer");
  }
  const size_t smem = sizeof(float) * hidden;
  Dispatch(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    MeanPoolNormalizeKernel<T><<<RowGrid(num_seqs), kRowThreads, smem, stream>>>(
        static_cast<const T*>(x), offsets, num_seqs, hidden, normalize, out);
  });
  return LaunchStatus("LaunchMeanPoolNormalize");
}

}  // namespace ferry::cuda
