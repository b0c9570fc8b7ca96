#include "cuda/cublas_loader.h"

#include <dlfcn.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace ferry::cuda {
namespace {

// dlopen of `stem`.so.<cuBLAS major>: the loader's search path, then the toolkit's folder.
absl::StatusOr<void*> OpenLibrary(const char* stem, const char* what) {
  const std::string name = absl::StrCat(stem, ".so.", CUBLAS_VER_MAJOR);
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  std::string first_error = lib == nullptr ? dlerror() : "";
#ifdef FERRY_CUDA_LIBRARY_DIR
  if (lib == nullptr) {
    lib = dlopen(absl::StrCat(FERRY_CUDA_LIBRARY_DIR, "/", name).c_str(), RTLD_NOW | RTLD_LOCAL);
  }
#endif
  if (lib == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load ", what, " (", name, "): ", first_error, "; install the CUDA ",
                     "toolkit's cuBLAS or add its folder to LD_LIBRARY_PATH"));
  }
  return lib;
}

// Resolves `symbol` into `*fn`; FailedPrecondition naming it when the library lacks it.
template <typename Fn>
absl::Status Resolve(void* lib, const char* what, Fn* fn, const char* symbol) {
  void* p = dlsym(lib, symbol);
  if (p == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " library lacks ", symbol, ": ", dlerror()));
  }
  *fn = reinterpret_cast<Fn>(p);
  return absl::OkStatus();
}

absl::StatusOr<CublasApi> Load() {
  absl::StatusOr<void*> opened = OpenLibrary("libcublas", "cuBLAS");
  if (!opened.ok()) return opened.status();
  void* lib = *opened;
  CublasApi api;
  auto resolve = [lib](auto* fn, const char* symbol) { return Resolve(lib, "cuBLAS", fn, symbol); };
  for (absl::Status s :
       {resolve(&api.create, "cublasCreate_v2"), resolve(&api.destroy, "cublasDestroy_v2"),
        resolve(&api.set_stream, "cublasSetStream_v2"),
        resolve(&api.set_math_mode, "cublasSetMathMode"), resolve(&api.sgemm, "cublasSgemm_v2"),
        resolve(&api.gemm_ex, "cublasGemmEx"),
        resolve(&api.status_string, "cublasGetStatusString")}) {
    if (!s.ok()) return s;
  }
  return api;  // `lib` stays loaded for the life of the process
}

absl::StatusOr<CublasLtApi> LoadLt() {
  absl::StatusOr<void*> opened = OpenLibrary("libcublasLt", "cuBLASLt");
  if (!opened.ok()) return opened.status();
  void* lib = *opened;
  CublasLtApi api;
  auto resolve = [lib](auto* fn, const char* symbol) {
    return Resolve(lib, "cuBLASLt", fn, symbol);
  };
  for (absl::Status s :
       {resolve(&api.create, "cublasLtCreate"), resolve(&api.destroy, "cublasLtDestroy"),
        resolve(&api.desc_create, "cublasLtMatmulDescCreate"),
        resolve(&api.desc_destroy, "cublasLtMatmulDescDestroy"),
        resolve(&api.desc_set, "cublasLtMatmulDescSetAttribute"),
        resolve(&api.layout_create, "cublasLtMatrixLayoutCreate"),
        resolve(&api.layout_destroy, "cublasLtMatrixLayoutDestroy"),
        resolve(&api.pref_create, "cublasLtMatmulPreferenceCreate"),
        resolve(&api.pref_destroy, "cublasLtMatmulPreferenceDestroy"),
        resolve(&api.pref_set, "cublasLtMatmulPreferenceSetAttribute"),
        resolve(&api.heuristic, "cublasLtMatmulAlgoGetHeuristic"),
        resolve(&api.matmul, "cublasLtMatmul"),
        resolve(&api.status_string, "cublasLtGetStatusString")}) {
    if (!s.ok()) return s;
  }
  return api;  // `lib` stays loaded for the life of the process
}

}  // namespace

absl::StatusOr<const CublasLtApi*> LoadCublasLt() {
  static const absl::StatusOr<CublasLtApi>* const api = new absl::StatusOr<CublasLtApi>(LoadLt());
  if (!api->ok()) return api->status();
  return &**api;
}

absl::StatusOr<const CublasApi*> LoadCublas() {
  static const absl::StatusOr<CublasApi>* const api = new absl::StatusOr<CublasApi>(Load());
  if (!api->ok()) return api->status();
  return &**api;
}

}  // namespace ferry::cuda
