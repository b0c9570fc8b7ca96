// The function runtime interface: what a model looks like to the node agent. A runtime knows no
// batcher and no network; the agent hands it batches of already-validated requests.
#ifndef FERRY_KERNELS_RUNTIME_H_
#define FERRY_KERNELS_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ferry/inference.h"
#include "ferry/manifest.h"
#include "ferry/signature.h"
#include "ferry/tensor.h"

namespace ferry::kernels {

// The signature contract (TensorSpec, ModelSignature, ValidateRequest, CheckDeclaredInput,
// RequestCost) lives in the SDK (ferry/signature.h) so that front ends can check requests
// without linking any runtime.
using ::ferry::CheckDeclaredInput;
using ::ferry::DeclaredInput;
using ::ferry::ModelSignature;
using ::ferry::RequestCost;
using ::ferry::TensorSpec;
using ::ferry::ValidateRequest;

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
