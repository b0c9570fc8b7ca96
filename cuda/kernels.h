// CUDA kernels of the GPU backend, callable from plain C++ (this header includes no CUDA header).
//
// Every launcher enqueues work on `stream` and returns without waiting for it: the result is
// ready once the stream is synchronised (or an event recorded after it has fired). Pointers are
// DEVICE pointers owned by the caller, which must keep them alive until the work is done. A
// launcher returns InvalidArgument for bad shapes or null pointers, and Internal when the launch
// itself fails (cudaGetLastError); asynchronous faults inside a kernel show up at the next
// synchronisation, not here. A GPU whose architecture this build has no kernel image for gives
// FailedPrecondition (see ProbeKernelImage). Launchers are thread-safe (they hold no state); two
// launches on the same buffers must be ordered by the caller (same stream or events).
//
// Matrices are row-major, `rows` x `cols`, densely packed (leading dimension == cols).
//
// These functions exist only in builds with CUDA (FERRY_HAVE_CUDA); a CPU-only build has the
// header but not the definitions, so call them only from code compiled under FERRY_HAVE_CUDA.
#ifndef FERRY_CUDA_KERNELS_H_
#define FERRY_CUDA_KERNELS_H_

#include <cstdint>

#include "absl/status/status.h"

// Identical to the typedef in CUDA's driver_types.h, so repeating it is legal in either include
// order; it lets plain C++ name a stream without pulling in the CUDA headers.
typedef struct CUstream_st* cudaStream_t;

namespace ferry::cuda {

// Element-wise activation applied after the bias.
enum class Activation {
  kNone,
  kRelu,
  kGelu,  // exact form, as PyTorch's default and ferry's CPU path: 0.5·x·(1 + erf(x/√2))
  kTanh,
  kSigmoid,
};

// y[r][c] = act(y[r][c] + bias[c]) in place. `bias` has `cols` floats; it may be null, which
// means no bias. rows == 0 enqueues nothing.
absl::Status LaunchBiasActivation(float* y, const float* bias, int64_t rows, int64_t cols,
                                  Activation act, cudaStream_t stream);

// Softmax of each row in place, numerically stable (subtracts the row maximum first). One thread
// block per row. rows == 0 enqueues nothing.
absl::Status LaunchRowSoftmax(float* y, int64_t rows, int64_t cols, cudaStream_t stream);

// 16-bit floating-point storage formats.
enum class HalfType {
  kBf16,  // bfloat16: FP32's exponent range, 8-bit mantissa
  kFp16,  // IEEE binary16: 11-bit mantissa, max 65504
};

// out[i] = in[i] rounded to the nearest `type` value (ties to even; beyond fp16's range: ±inf).
// `out` holds n 2-byte values. n == 0 enqueues nothing.
absl::Status LaunchFloatToHalf(const float* in, void* out, int64_t n, HalfType type,
                               cudaStream_t stream);
// out[i] = in[i] widened exactly to FP32. n == 0 enqueues nothing.
absl::Status LaunchHalfToFloat(const void* in, float* out, int64_t n, HalfType type,
                               cudaStream_t stream);

// Launches one empty kernel on the calling thread's current device and waits for it: the warm-up
// every GPU path runs at load. It loads this binary's kernels for the device (CUDA loads modules
// lazily; the first launch pays for it) and fails with FailedPrecondition naming the device's
// compute capability and the architectures ferry was built for when the build has no kernel
// image for it (cudaErrorNoKernelImageForDevice), so such a GPU fails at load, not on every
// request.
absl::Status ProbeKernelImage(cudaStream_t stream);

// Tests only: launches a kernel that traps, which poisons the device's CUDA context for the rest
// of the process (a sticky error). Use it only in a child process (a death test).
absl::Status LaunchTrapForTest(cudaStream_t stream);

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_KERNELS_H_
