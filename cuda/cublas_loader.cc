#include "cuda/cublas_loader.h"

#include <dlfcn.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace ferry::cuda {
namespace {

absl::StatusOr<CublasApi> Load() {
  const std::string name = absl::StrCat("libcublas.so.", CUBLAS_VER_MAJOR);
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  std::string first_error = lib == nullptr ? dlerror() : "";
#ifdef FERRY_CUDA_LIBRARY_DIR
  if (lib == nullptr) {
    lib = dlopen(absl::StrCat(FERRY_CUDA_LIBRARY_DIR, "/", name).c_str(), RTLD_NOW | RTLD_LOCAL);
  }
#endif
  if (lib == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load cuBLAS (", name, "): ", first_error,
                     "; install the CUDA toolkit's cuBLAS or add its folder to LD_LIBRARY_PATH"));
  }
  CublasApi api;
  auto resolve = [lib](auto* fn, const char* symbol) -> absl::Status {
    void* p = dlsym(lib, symbol);
    if (p == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("cuBLAS library lacks ", symbol, ": ", dlerror()));
    }
    *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(p);
    return absl::OkStatus();
  };
  for (absl::Status s :
       {resolve(&api.create, "cublasCreate_v2"), resolve(&api.destroy, "cublasDestroy_v2"),
        resolve(&api.set_stream, "cublasSetStream_v2"),
        resolve(&api.set_math_mode, "cublasSetMathMode"), resolve(&api.sgemm, "cublasSgemm_v2"),
        resolve(&api.status_string, "cublasGetStatusString")}) {
    if (!s.ok()) return s;
  }
  return api;  // `lib` stays loaded for the life of the process
}

}  // namespace

absl::StatusOr<const CublasApi*> LoadCublas() {
  static const absl::StatusOr<CublasApi>* const api = new absl::StatusOr<CublasApi>(Load());
  if (!api->ok()) return api->status();
  return &**api;
}

}  // namespace ferry::cuda
