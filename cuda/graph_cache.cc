#include "cuda/graph_cache.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ferry::cuda {
namespace {

absl::Status CudaError(cudaError_t err, const char* what) {
  (void)cudaGetLastError();
  return absl::InternalError(absl::StrCat("graph cache: ", what, ": ", cudaGetErrorString(err)));
}

}  // namespace

struct GraphCache::Impl {
  int device = 0;
  std::vector<cudaGraphExec_t> execs;  // one per bucket; null until captured

  ~Impl() {
    if (cudaSetDevice(device) != cudaSuccess) return;
    // A replay may still be queued: let it finish before its executable graph goes.
    (void)cudaDeviceSynchronize();
    for (cudaGraphExec_t e : execs) {
      if (e != nullptr) (void)cudaGraphExecDestroy(e);
    }
    (void)cudaGetLastError();
  }
};

GraphCache::GraphCache(Options options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {}

GraphCache::~GraphCache() = default;

absl::StatusOr<std::unique_ptr<GraphCache>> GraphCache::Create(Options options) {
  if (options.buckets.empty() || options.buckets.front() < 1 ||
      !std::is_sorted(options.buckets.begin(), options.buckets.end()) ||
      std::adjacent_find(options.buckets.begin(), options.buckets.end()) != options.buckets.end()) {
    return absl::InvalidArgumentError("graph cache: buckets must be >= 1, ascending, distinct");
  }
  if (!options.enqueue) return absl::InvalidArgumentError("graph cache: no enqueue function");
  std::unique_ptr<GraphCache> cache(new GraphCache(std::move(options)));
  cache->impl_->device = cache->options_.device;
  cache->impl_->execs.assign(cache->options_.buckets.size(), nullptr);
  return cache;
}

int GraphCache::captured() const {
  return static_cast<int>(
      std::count_if(impl_->execs.begin(), impl_->execs.end(), [](auto e) { return e != nullptr; }));
}

absl::Status GraphCache::Capture(size_t bucket, cudaStream_t stream) {
  if (cudaError_t err = cudaSetDevice(options_.device); err != cudaSuccess) {
    return CudaError(err, "cudaSetDevice");
  }
  // Thread-local mode: other threads (other slots, other functions) keep using CUDA freely while
  // this thread records; only this thread must not make capture-unsafe calls meanwhile.
  cudaError_t err = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  if (err != cudaSuccess) return CudaError(err, "cudaStreamBeginCapture");
  absl::Status recorded = options_.enqueue(options_.buckets[bucket], stream);
  cudaGraph_t graph = nullptr;
  err = cudaStreamEndCapture(stream, &graph);  // always end, so the stream leaves capture mode
  if (!recorded.ok()) {
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    return recorded;
  }
  if (err != cudaSuccess) return CudaError(err, "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  err = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);  // the executable graph is independent of it
  if (err != cudaSuccess) return CudaError(err, "cudaGraphInstantiate");
  impl_->execs[bucket] = exec;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> GraphCache::Launch(int64_t rows, cudaStream_t stream) {
  absl::StatusOr<int64_t> bucket_rows = BucketFor(options_.buckets, rows);
  if (!bucket_rows.ok()) return bucket_rows.status();
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(options_.buckets.begin(), options_.buckets.end(), *bucket_rows) -
      options_.buckets.begin());
  if (impl_->execs[bucket] == nullptr) {
    if (absl::Status s = Capture(bucket, stream); !s.ok()) return s;
  }
  if (cudaError_t err = cudaSetDevice(options_.device); err != cudaSuccess) {
    return CudaError(err, "cudaSetDevice");
  }
  if (cudaError_t err = cudaGraphLaunch(impl_->execs[bucket], stream); err != cudaSuccess) {
    return CudaError(err, "cudaGraphLaunch");
  }
  return *bucket_rows;
}

absl::Status GraphCache::Prepare(cudaStream_t stream) {
  for (size_t b = 0; b < options_.buckets.size(); ++b) {
    if (impl_->execs[b] != nullptr) continue;
    if (absl::Status s = Capture(b, stream); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace ferry::cuda
