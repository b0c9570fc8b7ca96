// The embedding APIs embedding users already call, on the agent's HTTP front end:
// Hugging Face TEI's `POST /embed` and OpenAI's `POST /v1/embeddings` (docs/http-api.md). Both
// become one ordinary InferenceRequest (one BYTES row per text) for a function whose signature is
// one BYTES input and an FP32 [-1, dim] output, such as the `sentence-embedding` runtime, so they
// go through the same batcher as KServe requests. Pure functions; thread-safe.
#ifndef FERRY_NODE_AGENT_EMBED_API_H_
#define FERRY_NODE_AGENT_EMBED_API_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ferry/inference.h"
#include "node-agent/serving_core.h"

namespace ferry::agent {

enum class EmbedApi { kTei, kOpenAi };

struct EmbedQuery {
  EmbedApi api = EmbedApi::kTei;
  std::string model;  // OpenAI "model" (required); empty for TEI
  std::vector<std::string> texts;
  bool base64 = false;  // OpenAI encoding_format "base64"
};

// The platform of the `sentence-embedding` runtime: TEI requests without a model pick the only
// loaded function of it.
inline constexpr std::string_view kSentenceEmbeddingPlatform = "ferry_sentence_embedding";
// Response parameter (int64) in which a text runtime reports the tokens it embedded; OpenAI's
// usage counts it.
inline constexpr std::string_view kTokensParameter = "tokens";

// Parse a body; InvalidArgument (HTTP 400) for malformed JSON, wrong types, unknown
// encoding_format, normalize=false (ferry's embeddings are always L2-normalised) or no text.
// `readable_past_end` as for json_reader::JsonDocument::Parse.
absl::StatusOr<EmbedQuery> ParseTeiEmbed(std::string_view body, size_t readable_past_end);
absl::StatusOr<EmbedQuery> ParseOpenAiEmbeddings(std::string_view body, size_t readable_past_end);

// The request for `metadata`'s function: its single BYTES input with one row per text.
// InvalidArgument when the function does not have an embedding signature.
absl::StatusOr<InferenceRequest> MakeEmbedRequest(const EmbedQuery& query,
                                                  const ModelMetadata& metadata);

// Success bodies. Internal when the response lacks an FP32 [n, dim] output for the n texts.
absl::StatusOr<std::string> EncodeEmbedResponse(const EmbedQuery& query,
                                                const InferenceResponse& response);

// Error bodies in each API's own shape: TEI {"error": msg, "error_type": type}; OpenAI
// {"error": {"message", "type", "param": null, "code"}}. `http_status` picks the type.
std::string EncodeEmbedError(EmbedApi api, int http_status, std::string_view message);

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_EMBED_API_H_
