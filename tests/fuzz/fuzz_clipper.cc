// Clipper predict bodies ({"input": X} / {"input_batch": [X, ...]}) against each model, then
// validation and, when valid, the Clipper encoding of an echoed response.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ferry/signature.h"
#include "node-agent/clipper_codec.h"
#include "tests/fuzz/fuzz_models.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  for (const auto& model : ferry::fuzz::FuzzModels()) {
    auto query = ferry::agent::ParseClipperPredict(body, model.metadata);
    if (!query.ok()) continue;
    if (query->rows < 1) __builtin_trap();
    if (!ferry::ValidateRequest(model.signature, query->request).ok()) continue;
    (void)ferry::agent::EncodeClipperResponse(ferry::fuzz::EchoResponse(query->request), *query, 1);
  }
  return 0;
}
