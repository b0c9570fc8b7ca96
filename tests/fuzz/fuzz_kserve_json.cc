// KServe v2 JSON infer request bodies (no binary part, Inference-Header-Content-Length absent),
// as the HTTP front end decodes them, then what an accepted request meets next: validation
// against each model's signature and, when valid, encoding of an echoed response.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/signature.h"
#include "node-agent/kserve_codec.h"
#include "tests/fuzz/fuzz_models.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ferry::agent::kJsonPaddingBytes;
  using ferry::agent::ParseInferRequest;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const auto& models = ferry::fuzz::FuzzModels();
  const ferry::agent::ModelMetadata& metadata = models.front().metadata;

  // The copying path (no bytes readable past the end)...
  auto copied = ParseInferRequest(body, -1, metadata.name, "", metadata, 0);
  // ...and the in-place path the HTTP server takes with spare capacity after the body.
  std::string padded(body);
  padded.resize(size + kJsonPaddingBytes);
  auto in_place = ParseInferRequest(std::string_view(padded.data(), size), -1, metadata.name, "",
                                    metadata, kJsonPaddingBytes);
  // Both paths parse the same text: they must agree.
  if (copied.ok() != in_place.ok()) __builtin_trap();
  if (!copied.ok()) return 0;

  for (const auto& model : models) {
    if (!ferry::ValidateRequest(model.signature, *copied).ok()) continue;
    ferry::agent::EncodedBody encoded =
        ferry::agent::EncodeInferResponse(ferry::fuzz::EchoResponse(*copied), *copied);
    if (encoded.json_length > static_cast<int64_t>(encoded.body.size())) __builtin_trap();
  }
  return 0;
}
