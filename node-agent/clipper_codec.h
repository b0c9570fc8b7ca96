// The HTTP front end's Clipper-style predict codec: `{"input": ...}` / `{"input_batch": [...]}`
// bodies to one KServe InferenceRequest, and the response back. Pure functions; thread-safe.
// Every malformed request is an InvalidArgument status whose message names the offending field.
#ifndef FERRY_NODE_AGENT_CLIPPER_CODEC_H_
#define FERRY_NODE_AGENT_CLIPPER_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "ferry/inference.h"
#include "node-agent/kserve_codec.h"
#include "node-agent/serving_core.h"

namespace ferry::agent {

// A decoded Clipper predict body: one KServe request whose single input stacks the queries.
struct ClipperQuery {
  InferenceRequest request;
  bool is_batch = false;  // "input_batch" (answer with batch_predictions)
  int64_t rows = 1;       // queries in the request
  bool batched = true;    // the model's leading dim stacks the queries
};

// Decodes `{"input": X}` (one query) or `{"input_batch": [X, ...]}` for a model with exactly one
// input. With a batched model X is one row of that input: a string for a BYTES input whose row
// shape is [], a (nested) array of strings or numbers otherwise; the rows are stacked along the
// leading dim. With an unbatched model X is the whole input and input_batch is refused.
// `readable_past_end` as for ParseInferRequest.
absl::StatusOr<ClipperQuery> ParseClipperPredict(std::string_view body,
                                                 const ModelMetadata& metadata,
                                                 size_t readable_past_end = 0);

// Encodes the Clipper answer: `{"query_id": N, "output": V, "default": false}` for one query,
// `{"batch_predictions": [{"query_id": N + i, "output": V_i, "default": ...}, ...]}` for a batch.
// V is the row of the single output (string, number or nested array), or an object
// {output_name: row} when the response has several outputs. A default response
// (is_default) answers "default": true with the parsed JSON of its "default_output" parameter.
// The response's outputs are split along their leading dim into `query.rows` rows when the
// model is batched.
std::string EncodeClipperResponse(const InferenceResponse& response, const ClipperQuery& query,
                                  int64_t first_query_id);

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_CLIPPER_CODEC_H_
