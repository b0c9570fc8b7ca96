// GraphCache in a build without CUDA: the bucket functions work, the cache cannot be made.
#include "cuda/graph_cache.h"

namespace ferry::cuda {

struct GraphCache::Impl {};

GraphCache::GraphCache(Options options) : options_(std::move(options)) {}
GraphCache::~GraphCache() = default;

absl::StatusOr<std::unique_ptr<GraphCache>> GraphCache::Create(Options) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}
int GraphCache::captured() const { return 0; }
absl::Status GraphCache::Capture(size_t, cudaStream_t) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}
absl::StatusOr<int64_t> GraphCache::Launch(int64_t, cudaStream_t) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}
absl::Status GraphCache::Prepare(cudaStream_t) {
  return absl::FailedPreconditionError("ferry was built without CUDA");
}

}  // namespace ferry::cuda
