// Writing JSON by hand into one string: responses are appended rather than built through a JSON
// DOM, since building a DOM for every output element and dumping it costs several times more.
// Shared by the KServe and Clipper codecs. Pure functions; thread-safe.
#ifndef FERRY_NODE_AGENT_JSON_WRITER_H_
#define FERRY_NODE_AGENT_JSON_WRITER_H_

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ferry/inference.h"
#include "ferry/signature.h"
#include "ferry/tensor.h"

namespace ferry::agent::json_writer {

// Writes `s` as a JSON string. Invalid UTF-8 (BYTES elements may hold anything) becomes U+FFFD,
// as JSON text must be UTF-8; clients that need the exact bytes ask for binary outputs.
void AppendString(std::string* out, std::string_view s);

// Writes a number in its shortest round-trip form (non-finite floats as null).
template <typename T>
void AppendNumber(std::string* out, T value) {
  if constexpr (std::is_floating_point_v<T>) {
    // JSON has no NaN or infinity; null is what other JSON encoders emit for them.
    if (!std::isfinite(value)) {
      out->append("null");
      return;
    }
  }
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), value);
  out->append(buf, res.ptr - buf);
}

// Number of elements the tensor actually holds, so that a malformed runtime output can never
// make the encoder read past its payload.
int64_t AvailableElements(const Tensor& t);
// The tensor's elements as one flat JSON array.
void AppendFlatData(std::string* out, const Tensor& t);
// `[d0,d1,...]`.
void AppendShape(std::string* out, const std::vector<int64_t>& shape);
// `{"key":value,...}`.
void AppendParameters(std::string* out, const Parameters& params);
// `{"name","datatype","shape"}`.
void AppendTensorSpec(std::string* out, const TensorSpec& spec);
// Appends the nested JSON array of `dims` elements of `t` starting at element `*index`.
void AppendNested(std::string* out, const Tensor& t, const int64_t* dims, size_t rank,
                  int64_t* index, int64_t available);

}  // namespace ferry::agent::json_writer

#endif  // FERRY_NODE_AGENT_JSON_WRITER_H_
