// The function runtime contract: what a model looks like to the node agent. A runtime knows no
// batcher and no network; the agent hands it batches of already-validated requests. Runtimes are
// created by name through the registry (ferry/runtime_registry.h).
#ifndef FERRY_RUNTIME_H_
#define FERRY_RUNTIME_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "ferry/inference.h"
#include "ferry/signature.h"

namespace ferry {

class StagedRuntime;  // ferry/staged_runtime.h

// One request of a batch. The runtime fills `response->outputs` (every declared output; the
// agent filters to the requested ones) or sets `status` to fail only this request. Both pointers
// are owned by the caller and outlive the Execute call.
struct RuntimeCall {
  const InferenceRequest* request = nullptr;
  InferenceResponse* response = nullptr;
  absl::Status status;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  // Fixed for the runtime's lifetime.
  virtual const ModelSignature& signature() const = 0;
  // Runs a batch of validated requests (blocking). Thread-safe: may be called from several
  // executor threads at once. A non-OK return fails the whole batch.
  virtual absl::Status Execute(absl::Span<RuntimeCall> batch) = 0;
  // Work `request` adds to a batch, in the runtime's own unit, counted against the manifest's
  // batching.maxBatchTokens: tokens (after tokenisation, [CLS]/[SEP] included) for text
  // runtimes. The default is the request's rows (RequestCost), i.e. one unit per row. Called
  // once per request on the submitting (front-end) thread, after validation and before
  // queueing, so it must be cheap, non-blocking and thread-safe; it never fails: a request
  // Execute will reject may return any estimate >= 1. Returns >= 1.
  virtual int64_t Cost(const InferenceRequest& request) const {
    return RequestCost(signature(), request);
  }
  // The staged form of this runtime (ferry/staged_runtime.h), or nullptr. When non-null, the
  // agent runs batches through its Pack/Launch/Unpack stages, overlapped across batches
  // (batching/pipeline.h), instead of Execute. Owned by the runtime; fixed for its lifetime.
  virtual StagedRuntime* staged() { return nullptr; }
};

// What hardware a runtime may use, as placed by the agent.
class WeightCache;  // ferry/weight_cache.h

struct RuntimeContext {
  bool use_gpu = false;  // the agent placed this replica on a GPU
  int gpu_index = 0;     // CUDA device ordinal when use_gpu
  // The node's cache of prepared weights (not owned; outlives the runtime), or nullptr. A
  // runtime that loads large weights looks them up there by WeightCache::FileKey so that a
  // reload of the same files (scale to zero and back) skips reading and preparing them.
  WeightCache* weight_cache = nullptr;
};

}  // namespace ferry

#endif  // FERRY_RUNTIME_H_
