// CUDA kernels of the GPU backend, callable from plain C++ (this header includes no CUDA header).
//
// Every launcher enqueues work on `stream` and returns without waiting for it: the result is
// ready once the stream is synchronised (or an event recorded after it has fired). Pointers are
// DEVICE pointers owned by the caller, which must keep them alive until the work is done. A
// launcher returns InvalidArgument for bad shapes or null pointers, and Internal when the launch
// itself fails (cudaGetLastError); asynchronous faults inside a kernel show up at the next
// synchronisation, not here. Launchers are thread-safe (they hold no state); two launches on the
// same buffers must be ordered by the caller (same stream or events).
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

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_KERNELS_H_
