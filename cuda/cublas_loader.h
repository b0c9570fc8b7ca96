// cuBLAS, loaded on first use. Internal to cuda/ (it includes CUDA headers).
//
// Why not link libcublas: its static initialisers (libcublasLt) cost every process about 150 MiB
// of resident memory at start, before any GPU is touched; a node agent that serves only CPU
// functions, or runs on a machine without a GPU, must not pay that. So ferry resolves the few
// entry points it uses with dlopen/dlsym the first time a GPU path needs them.
#ifndef FERRY_CUDA_CUBLAS_LOADER_H_
#define FERRY_CUDA_CUBLAS_LOADER_H_

#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace ferry::cuda {

struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasSgemm_v2) sgemm = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

// Loads libcublas.so.<major> (the loader's search path, then the CUDA toolkit this was built
// with) once per process. Thread-safe; the result never changes and is never freed.
// FailedPrecondition naming the library when it cannot be loaded.
absl::StatusOr<const CublasApi*> LoadCublas();

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_CUBLAS_LOADER_H_
