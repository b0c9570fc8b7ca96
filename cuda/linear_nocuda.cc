// LinearStack in a build without CUDA: it exists so callers need no #ifdef, but cannot be made.
#include "cuda/linear.h"

namespace ferry::cuda {

struct LinearStack::Impl {};

LinearScratch::~LinearScratch() = default;
LinearStack::~LinearStack() = default;

absl::StatusOr<std::unique_ptr<LinearStack>> LinearStack::Create(const Options&,
                                                                 std::vector<LinearSpec> layers) {
  if (absl::Status s = ValidateLinearChain(layers); !s.ok()) return s;
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::StatusOr<std::unique_ptr<LinearScratch>> LinearStack::CreateScratch(int64_t) const {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::Status LinearStack::Enqueue(const float*, int64_t, float*, LinearScratch&,
                                  cudaStream_t) const {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

}  // namespace ferry::cuda
