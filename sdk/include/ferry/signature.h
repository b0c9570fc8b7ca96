// A model's signature as clients see it (inputs and outputs with datatypes and shapes) and the
// checks every front end and runtime share: what a request declares, checked before its data is
// decoded, and the full check of a decoded request. Pure functions; thread-safe.
#ifndef FERRY_SIGNATURE_H_
#define FERRY_SIGNATURE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ferry/inference.h"
#include "ferry/tensor.h"

namespace ferry {

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

// What a request declares about one input, checked before any of its data is decoded: the
// checks of ValidateRequest that need no data (name, datatype, rank, fixed dims, a non-empty
// batch dim, the batch dim against `max_batch_size` when > 0) plus the element count and byte
// size the shape implies, computed without overflow. Front ends call it before they allocate
// anything for the input, so no client number ever sizes an allocation unchecked.
struct DeclaredInput {
  const TensorSpec* spec = nullptr;  // points into `inputs`
  int64_t element_count = 0;
  int64_t byte_size = -1;  // fixed-size datatypes; -1 for BYTES
};
absl::StatusOr<DeclaredInput> CheckDeclaredInput(const std::vector<TensorSpec>& inputs,
                                                 bool batched, int64_t max_batch_size,
                                                 std::string_view name, DataType dtype,
                                                 const std::vector<int64_t>& shape);

// Caps on what a response echoes back from its request (the id, and parameters, which front
// ends carry through), so that a client cannot make the agent hold and copy unbounded metadata
// per request. Bodies are bounded as a whole elsewhere; these bound the parts that are echoed.
inline constexpr size_t kMaxRequestIdBytes = 1024;
inline constexpr size_t kMaxParameters = 64;
inline constexpr size_t kMaxParameterNameBytes = 256;
inline constexpr size_t kMaxParameterStringBytes = 4096;

// InvalidArgument naming the field when `id` or one of `parameters` (of `what`: "request",
// "input 'x'") is over the caps above.
absl::Status CheckRequestId(std::string_view id);
absl::Status CheckParameters(const Parameters& parameters, std::string_view what);

// Batch units a validated request costs: its batch dim when batched, else 1.
int64_t RequestCost(const ModelSignature& signature, const InferenceRequest& request);

}  // namespace ferry

#endif  // FERRY_SIGNATURE_H_
