// What the protocol front ends (HTTP: KServe v2 + Clipper predict; gRPC: KServe v2) see of the
// node agent: health, metadata and asynchronous inference. Front ends translate wire formats
// into ferry::InferenceRequest and errors into protocol codes (see status_codes.h); they hold
// no model state.
#ifndef FERRY_NODE_AGENT_SERVING_CORE_H_
#define FERRY_NODE_AGENT_SERVING_CORE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ferry/inference.h"
#include "ferry/runtime.h"
#include "ferry/signature.h"

namespace ferry::agent {

struct ServerMetadata {
  std::string name = "ferry";
  std::string version;
  std::vector<std::string> extensions;
};

struct ModelMetadata {
  std::string name;
  std::vector<std::string> versions;
  std::string platform;
  // Shapes as clients should send them: a batched model's leading dim is -1.
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  // Manifest facts front ends need (Clipper predict, limits).
  int64_t max_batch_size = 0;
  bool batched = true;
  bool has_default_output = false;  // SLO onOverload: default-output is configured
};

// Called exactly once per Infer call: inline (validation errors, overload) or later from a
// batcher thread. Must not block.
using InferDone = std::function<void(absl::StatusOr<InferenceResponse>)>;

// Thread-safe.
class ServingCore {
 public:
  virtual ~ServingCore() = default;

  virtual bool IsLive() const = 0;
  // The agent not stopping; a function that failed to load leaves it ready (see ModelReady).
  virtual bool IsReady() const = 0;
  virtual ServerMetadata GetServerMetadata() const = 0;
  // NotFound for an unknown model or version.
  virtual absl::StatusOr<ModelMetadata> GetModelMetadata(const std::string& name,
                                                         const std::string& version) const = 0;
  // The same for the request path, without a copy: front ends check each request's header
  // against it before decoding. The pointer stays valid while held, even if the model is
  // unloaded meanwhile. The default copies GetModelMetadata's answer; AgentCore shares the
  // loaded function's own.
  virtual absl::StatusOr<std::shared_ptr<const ModelMetadata>> FindModelMetadata(
      const std::string& name, const std::string& version) const {
    auto metadata = GetModelMetadata(name, version);
    if (!metadata.ok()) return metadata.status();
    return std::make_shared<const ModelMetadata>(*std::move(metadata));
  }
  // The loaded functions' names, sorted: for front ends that pick a function by its kind
  // (POST /embed). The default knows none.
  virtual std::vector<std::string> ListModels() const { return {}; }
  // OK when ready; NotFound (unknown) or Unavailable (loading, failed to load, stopping).
  virtual absl::Status ModelReady(const std::string& name, const std::string& version) const = 0;

  // Validates and enqueues. Errors: NotFound (model), InvalidArgument (inputs; the message
  // names the tensor), ResourceExhausted (queue full or deadline cannot be met: retry later),
  // Unavailable (stopping), or the runtime's error. With the SLO's onOverload: default-output,
  // overload answers OK with InferenceResponse::is_default set instead.
  virtual void Infer(std::unique_ptr<InferenceRequest> request, InferDone done) = 0;

  // A front end refused a request for `name` before calling Infer (its body or inputs do not
  // match the function: bad JSON, datatype, shape, size). Counted on that function's metrics as
  // a refusal by the function itself would be: InvalidArgument is reason "invalid"; other codes
  // and unknown functions are not counted. Non-blocking. The default counts nothing.
  virtual void RecordRejected(const std::string& /*name*/, const std::string& /*version*/,
                              const absl::Status& /*status*/) {}
};

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_SERVING_CORE_H_
