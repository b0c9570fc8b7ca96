// The function runtime interface: what a model looks like to the node agent. A runtime knows no
// batcher and no network; the agent hands it batches of already-validated requests.
#ifndef FERRY_KERNELS_RUNTIME_H_
#define FERRY_KERNELS_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ferry/inference.h"
#include "ferry/manifest.h"
#include "ferry/tensor.h"

namespace ferry::kernels {

// One input or output as the model declares it. Dims of -1 are variable. The first dim is the
// per-request batch dimension when ModelSignature::batched is true.
struct TensorSpec {
  std::string name;
  DataType dtype = DataType::kInvalid;
  std::vector<int64_t> shape;
};

struct ModelSignature {
  std::string platform;  // e.g. "ferry_wordfilter"; reported in model metadata
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  // true: every input and output has a leading batch dim (reported as -1), requests are stacked
  // along it, and a request's cost is that dim.
  bool batched = true;
};

// Checks one request against a signature: every declared input present exactly once (no
// unknown ones), datatype equal, rank equal, fixed dims equal, payload consistent, and all
// inputs agreeing on the batch dim; requested outputs must exist. InvalidArgument names the
// input and what was expected.
absl::Status ValidateRequest(const ModelSignature& signature, const InferenceRequest& request);

// Batch units a validated request costs: its batch dim when batched, else 1.
int64_t RequestCost(const ModelSignature& signature, const InferenceRequest& request);

// One request of a batch. The runtime fills `response->outputs` (every declared output; the
// agent filters to the requested ones) or sets `status` to fail only this request.
struct RuntimeCall {
  const InferenceRequest* request = nullptr;
  InferenceResponse* response = nullptr;
  absl::Status status;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual const ModelSignature& signature() const = 0;
  // Runs a batch of validated requests. Thread-safe: may be called from several executor
  // threads at once. A non-OK return fails the whole batch.
  virtual absl::Status Execute(absl::Span<RuntimeCall> batch) = 0;
};

// Where runtimes may look for files and what hardware they may use.
struct RuntimeContext {
  bool use_gpu = false;  // the agent placed this replica on a GPU
  int gpu_index = 0;
};

// Creates the runtime named by spec.runtime ("echo", "wordfilter", "mlp"), validating
// spec.config and loading spec.model_path. Errors name the manifest file and field path.
absl::StatusOr<std::unique_ptr<Runtime>> CreateRuntime(const FunctionSpec& spec,
                                                       const RuntimeContext& context);

// Names CreateRuntime knows, for messages and `GET /v2`.
std::vector<std::string> RuntimeNames();

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_RUNTIME_H_
