// The CPU-only build: GpuBert exists so callers need no #ifdef, but it can never be created. The
// packing functions (gpu_bert_plan.cc) are compiled in both builds.
#include "absl/status/status.h"
#include "cuda/gpu_bert.h"

namespace ferry::cuda {

struct GpuBert::Impl {};

GpuBert::~GpuBert() = default;

absl::StatusOr<std::unique_ptr<GpuBert>> GpuBert::Create(const Options&, const GpuBertModel&) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

// Unreachable (no instance exists); defined so that callers link.
bool GpuBert::HasFreeSlot() const { return false; }
int GpuBert::AcquireSlot() { return 0; }
void GpuBert::ReleaseSlot(int) {}

absl::Status GpuBert::Embed(absl::Span<const std::vector<int32_t>>, bool, float*) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}
absl::Status GpuBert::EmbedOnSlot(int, absl::Span<const std::vector<int32_t>>, bool, float*) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}
absl::Status GpuBert::Pack(int, absl::Span<const std::vector<int32_t>>) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}
absl::Status GpuBert::Launch(int, bool, absl::AnyInvocable<void()>) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}
absl::Status GpuBert::Wait(int) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}
const float* GpuBert::Output(int) const { return nullptr; }
int GpuBert::packed_sequences(int) const { return 0; }
int64_t GpuBert::packed_tokens(int) const { return 0; }
GpuBertTimes GpuBert::Times(int) const { return {}; }

}  // namespace ferry::cuda
