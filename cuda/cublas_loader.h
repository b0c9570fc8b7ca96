// cuBLAS and cuBLASLt, loaded on first use. Internal to cuda/ (it includes CUDA headers).
//
// Why not link libcublas: its static initialisers (libcublasLt) cost every process about 150 MiB
// of resident memory at start, before any GPU is touched; a node agent that serves only CPU
// functions, or runs on a machine without a GPU, must not pay that. So ferry resolves the few
// entry points it uses with dlopen/dlsym the first time a GPU path needs them.
#ifndef FERRY_CUDA_CUBLAS_LOADER_H_
#define FERRY_CUDA_CUBLAS_LOADER_H_

#include <cublasLt.h>
#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace ferry::cuda {

struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasSgemm_v2) sgemm = nullptr;
  // GpuBert: FP16/BF16 GEMMs, FP32 accumulation. cublasGemmEx has a C++ overload (cudaDataType
  // for the compute type), so the C entry point is named by its signature.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

// Loads libcublas.so.<major> (the loader's search path, then the CUDA toolkit this was built
// with) once per process. Thread-safe; the result never changes and is never freed.
// FailedPrecondition naming the library when it cannot be loaded.
absl::StatusOr<const CublasApi*> LoadCublas();

// cuBLASLt (libcublasLt.so.<major>, which libcublas itself depends on): the matmul with fused
// epilogues that LinearStack uses. Loaded the same way, once per process, on first use.
struct CublasLtApi {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtDestroy) destroy = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  decltype(&cublasLtGetStatusString) status_string = nullptr;
};

// FailedPrecondition naming the library when it cannot be loaded. Thread-safe.
absl::StatusOr<const CublasLtApi*> LoadCublasLt();

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_CUBLAS_LOADER_H_
