// KServe v2 infer requests with the binary tensor data extension, and the BYTES element codec
// (4-byte little-endian length + bytes per element) that reads their BYTES tensors.
//
// Input layout (so that the header length is under the fuzzer's control):
//   byte 0      selector: low nibble picks the model (headerless bodies take its single
//               input's name, datatype and shape), high nibble - 1 is the element count
//               DecodeBytesElements expects (-1 = any)
//   bytes 1..4  Inference-Header-Content-Length, uint32 little-endian; values beyond the body
//               (plus a little, to keep the bound check covered) are taken modulo its size + 1
//   bytes 5..   the HTTP body
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ferry/signature.h"
#include "ferry/tensor.h"
#include "node-agent/kserve_codec.h"
#include "tests/fuzz/fuzz_models.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const uint8_t selector = data[0];
  uint64_t header_length = static_cast<uint64_t>(data[1]) | static_cast<uint64_t>(data[2]) << 8 |
                           static_cast<uint64_t>(data[3]) << 16 |
                           static_cast<uint64_t>(data[4]) << 24;
  const std::string_view body(reinterpret_cast<const char*>(data + 5), size - 5);
  if (header_length > body.size() + 16) header_length %= body.size() + 1;

  const auto& models = ferry::fuzz::FuzzModels();
  const ferry::fuzz::FuzzModel& model = models[(selector & 0x0f) % models.size()];
  auto request = ferry::agent::ParseInferRequest(body, static_cast<int64_t>(header_length),
                                                 model.metadata.name, "", model.metadata);
  if (request.ok() && ferry::ValidateRequest(model.signature, *request).ok()) {
    ferry::agent::EncodedBody encoded =
        ferry::agent::EncodeInferResponse(ferry::fuzz::EchoResponse(*request), *request);
    if (encoded.json_length > static_cast<int64_t>(encoded.body.size())) __builtin_trap();
  }

  const int64_t expected_count = static_cast<int64_t>(selector >> 4) - 1;
  auto elements = ferry::DecodeBytesElements(body, expected_count, "fuzz");
  if (elements.ok()) {
    if (expected_count >= 0 && static_cast<int64_t>(elements->size()) != expected_count) {
      __builtin_trap();
    }
    // The encoding is canonical: decoding then encoding gives back the input.
    if (ferry::EncodeBytesElements(*elements) != body) __builtin_trap();
  }
  return 0;
}
