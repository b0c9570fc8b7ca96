// The HTTP front end's KServe v2 REST codec (JSON, with the binary tensor data extension), to and
// from ferry::InferenceRequest / InferenceResponse. Pure functions: no I/O, no shared state;
// thread-safe. Every malformed request is an InvalidArgument status whose message names the
// offending input or field.
#ifndef FERRY_NODE_AGENT_KSERVE_CODEC_H_
#define FERRY_NODE_AGENT_KSERVE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "ferry/inference.h"
#include "node-agent/serving_core.h"

namespace ferry::agent {

// Name of the binary tensor data extension in server metadata.
inline constexpr std::string_view kBinaryTensorDataExtension = "binary_tensor_data";
// HTTP header that carries the JSON part's length when a body has a binary part.
inline constexpr std::string_view kInferenceHeaderContentLength = "Inference-Header-Content-Length";

// The JSON reader reads up to this many bytes past the end of a JSON text. A caller whose buffer
// has at least this many allocated bytes after the body (e.g. spare std::string capacity) says so
// through `readable_past_end`, and the body is parsed in place; otherwise it is copied first.
inline constexpr size_t kJsonPaddingBytes = 64;

// A response body and, when it carries a binary part, the length of its leading JSON part
// (the value of Inference-Header-Content-Length); -1 when the body is JSON only.
struct EncodedBody {
  std::string body;
  int64_t json_length = -1;
};

// Decodes a KServe v2 infer request body.
//   header_length: the Inference-Header-Content-Length header, -1 when absent (body is all
//     JSON), 0 when the body is the model's single input tensor in raw binary form, N > 0 when
//     the first N bytes are JSON and the rest holds the inputs with parameters.binary_data_size.
//   model_name / model_version: from the URL; they fill the request's fields.
//   metadata: the target model; used only to give a headerless binary body its name, datatype
//     and shape. Full validation against the signature is the serving core's job.
//   readable_past_end: allocated bytes that follow `body` in memory (see kJsonPaddingBytes).
// Reserved parameters "priority", "timeout" (µs) and "binary_data_output" fill the request's
// scheduling fields (and stay in `parameters`). arrival_us is left 0.
absl::StatusOr<InferenceRequest> ParseInferRequest(std::string_view body, int64_t header_length,
                                                   const std::string& model_name,
                                                   const std::string& model_version,
                                                   const ModelMetadata& metadata,
                                                   size_t readable_past_end = 0);

// Encodes a response. An output goes to the binary part when its requested output says
// binary_data: true, or when the request asked binary_data_output: true and the requested output
// does not say binary_data: false. `request` needs only id, model name/version, outputs and
// binary_data_output (its inputs may have been moved away).
EncodedBody EncodeInferResponse(const InferenceResponse& response, const InferenceRequest& request);

// `{"name","version","extensions":[...]}`; "binary_tensor_data" is always listed.
std::string EncodeServerMetadata(const ServerMetadata& metadata);
// `{"name","versions","platform","inputs":[{"name","datatype","shape"}],"outputs":[...]}`.
std::string EncodeModelMetadata(const ModelMetadata& metadata);
// `{"error":"<message>"}`.
std::string EncodeError(std::string_view message);

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_KSERVE_CODEC_H_
