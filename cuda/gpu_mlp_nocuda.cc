// The CPU-only build: GpuMlp exists so callers need no #ifdef, but it can never be created.
#include "absl/status/status.h"
#include "cuda/gpu_mlp.h"

namespace ferry::cuda {

struct GpuMlp::Slot {};
struct GpuMlp::Impl {};

GpuMlp::GpuMlp(const Options& options, int64_t input_dim, int64_t output_dim, int64_t num_layers,
               std::unique_ptr<Impl> impl)
    : device_(options.device),
      input_dim_(input_dim),
      output_dim_(output_dim),
      max_rows_(options.max_rows),
      num_layers_(num_layers),
      num_slots_(options.slots),
      precision_(options.precision),
      impl_(std::move(impl)) {}

GpuMlp::~GpuMlp() = default;

absl::StatusOr<std::unique_ptr<GpuMlp>> GpuMlp::Create(const Options&, std::vector<Layer>) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::StatusOr<std::unique_ptr<GpuMlp>> GpuMlp::Create(int, std::vector<Layer>, int64_t) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::Status GpuMlp::Forward(const float*, int64_t, float*) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

int GpuMlp::AcquireSlot() { return 0; }

void GpuMlp::ReleaseSlot(int) {}

float* GpuMlp::slot_input(int) const { return nullptr; }

const float* GpuMlp::slot_output(int) const { return nullptr; }

absl::Status GpuMlp::Launch(int, int64_t, Done) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

absl::StatusOr<GpuMlp::SlotTimes> GpuMlp::LastTimes(int) const {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

}  // namespace ferry::cuda
