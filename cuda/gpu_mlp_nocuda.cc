// The CPU-only build: GpuMlp exists so callers need no #ifdef, but it can never be created.
#include "absl/status/status.h"
#include "cuda/gpu_mlp.h"

namespace ferry::cuda {

struct GpuMlp::Impl {};

GpuMlp::GpuMlp(int device, int64_t input_dim, int64_t output_dim, int64_t max_rows,
               int64_t num_layers, std::unique_ptr<Impl> impl)
    : device_(device),
      input_dim_(input_dim),
      output_dim_(output_dim),
      max_rows_(max_rows),
      num_layers_(num_layers),
      impl_(std::move(impl)) {}

GpuMlp::~GpuMlp() = default;

absl::StatusOr<std::unique_ptr<GpuMlp>> GpuMlp::Create(int, std::vector<Layer>, int64_t) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::Status GpuMlp::Forward(const float*, int64_t, float*) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::Status GpuMlp::ForwardChunk(const float*, int64_t, float*) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

}  // namespace ferry::cuda
