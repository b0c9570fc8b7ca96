// Reading JSON request bodies with simdjson's DOM parser: it validates the whole document
// (UTF-8 included) in one SIMD pass, and the conversions here walk its tape into tensors. Shared
// by the KServe and Clipper codecs; internal to the HTTP front end (callers include simdjson).
#ifndef FERRY_NODE_AGENT_JSON_READER_H_
#define FERRY_NODE_AGENT_JSON_READER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ferry/inference.h"
#include "ferry/tensor.h"
#include "simdjson.h"

namespace ferry::agent::json_reader {

namespace dom = simdjson::dom;

// Deeper documents are refused; no KServe or Clipper body needs more.
constexpr size_t kMaxJsonDepth = 128;
// A parser keeps buffers sized for the largest document it has read (about 15 bytes per byte of
// JSON). Beyond this document size they are released after use instead of staying with the
// thread.
constexpr size_t kRetainedParserCapacityBytes = size_t{1} << 20;

// A parsed document. A simdjson parser is fast because it reuses its buffers from one document
// to the next, and it is not thread-safe, so each thread has its own; the document lives in that
// parser's buffers. Hence at most one JsonDocument per thread at a time, and an element from it
// is valid only while it lives.
class JsonDocument {
 public:
  JsonDocument() = default;
  JsonDocument(const JsonDocument&) = delete;
  JsonDocument& operator=(const JsonDocument&) = delete;
  ~JsonDocument() {
    dom::parser& parser = ThreadParser();
    if (parser.capacity() > kRetainedParserCapacityBytes) parser = dom::parser();
  }

  // `readable_past_end`: how many allocated bytes follow `text` in memory. With at least
  // simdjson::SIMDJSON_PADDING the text is parsed in place; otherwise it is first copied into the
  // parser's padded buffer.
  absl::StatusOr<dom::element> Parse(std::string_view text, size_t readable_past_end) {
    dom::parser& parser = ThreadParser();
    simdjson::error_code error = simdjson::SUCCESS;
    if (parser.capacity() == 0) error = parser.allocate(kInitialCapacityBytes, kMaxJsonDepth);
    dom::element root;
    if (!error) {
      error = parser.parse(text.data(), text.size(), readable_past_end < simdjson::SIMDJSON_PADDING)
                  .get(root);
    }
    if (error) {
      return absl::InvalidArgumentError(
          absl::StrCat("malformed JSON: ", simdjson::error_message(error)));
    }
    return root;
  }

 private:
  static constexpr size_t kInitialCapacityBytes = 4096;

  static dom::parser& ThreadParser() {
    thread_local dom::parser parser;
    return parser;
  }
};

// "null", "bool", "integer", "number", "string", "array" or "object".
std::string_view TypeName(dom::element j);

// The first member named `key`; later duplicates are ignored (RFC 8259 leaves them to the reader).
std::optional<dom::element> Find(dom::object object, std::string_view key);

// InvalidArgument "<what>: <message>".
absl::Status Invalid(std::string_view what, std::string_view message);

// Converts one JSON scalar to the tensor's datatype and appends it as element `index`. Errors
// name the input and the element index.
absl::Status AppendScalar(simdjson::dom::element j, Tensor* t, int64_t index);

// Flattens (possibly nested) JSON data into `t`, counting elements in `*count`; at most `limit`.
absl::Status AppendData(simdjson::dom::element j, Tensor* t, int64_t* count, int64_t limit);

}  // namespace ferry::agent::json_reader

#endif  // FERRY_NODE_AGENT_JSON_READER_H_
