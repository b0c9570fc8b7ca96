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
};

// What hardware a runtime may use, as placed by the agent.
struct RuntimeContext {
  bool use_gpu = false;  // the agent placed this replica on a GPU
  int gpu_index = 0;     // CUDA device ordinal when use_gpu
};

}  // namespace ferry

#endif  // FERRY_RUNTIME_H_
