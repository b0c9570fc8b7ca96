#include "node-agent/kserve_json.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "simdjson.h"

namespace ferry::agent {
namespace {

// ---------------------------------------------------------------------------------------------
// Writing JSON. Responses are written by hand rather than through a json DOM: building a DOM for
// every output element and dumping it costs several times more than appending to one string.

// Length of the well-formed UTF-8 sequence that starts at s[i] (Unicode table 3-7: no overlong
// forms, no surrogates, nothing above U+10FFFF), or 0 when there is none; then *bad is the length
// of the maximal ill-formed part, which is replaced as one U+FFFD.
size_t Utf8SequenceLength(std::string_view s, size_t i, size_t* bad) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t length = 0;
  unsigned char low = 0x80;  // range of the second byte
  unsigned char high = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    length = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    length = 3;
    if (c == 0xe0) low = 0xa0;
    if (c == 0xed) high = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    length = 4;
    if (c == 0xf0) low = 0x90;
    if (c == 0xf4) high = 0x8f;
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k < length; ++k) {
    const auto b = i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0;
    if (b < (k == 1 ? low : 0x80) || b > (k == 1 ? high : 0xbf)) {
      *bad = k;
      return 0;
    }
  }
  return length;
}

// Writes `s` as a JSON string. Invalid UTF-8 (BYTES elements may hold anything) becomes U+FFFD,
// as JSON text must be UTF-8; clients that need the exact bytes ask for binary outputs.
void AppendString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  static constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD
  out->push_back('"');
  size_t run = 0;  // start of the pending run of characters that need no escaping
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      size_t bad = 0;
      if (const size_t length = Utf8SequenceLength(s, i, &bad); length > 0) {
        i += length - 1;
        continue;
      }
      out->append(s.data() + run, i - run);
      out->append(kReplacement);
      i += bad - 1;
      run = i + 1;
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default: {
        const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xf]};
        out->append(esc, 6);
      }
    }
  }
  out->append(s.data() + run, s.size() - run);
  out->push_back('"');
}

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

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  float value;
  if (exp == 0) {
    value = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
  } else if (exp == 31) {
    value = mant == 0 ? std::numeric_limits<float>::infinity()
                      : std::numeric_limits<float>::quiet_NaN();
  } else {
    const uint32_t bits = ((exp - 15 + 127) << 23) | (mant << 13);
    std::memcpy(&value, &bits, sizeof(value));
  }
  return sign ? -value : value;
}

float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = uint32_t{h} << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

template <typename T>
T Load(const Tensor& t, int64_t i) {
  T v;
  std::memcpy(&v, t.data.data() + i * sizeof(T), sizeof(T));
  return v;
}

// Appends element `i` of `t` as a JSON value (FP16/BF16 widen to float).
void AppendElement(std::string* out, const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DataType::kBool:
      out->append(t.data[i] != 0 ? "true" : "false");
      break;
    case DataType::kUint8:
      AppendNumber(out, Load<uint8_t>(t, i));
      break;
    case DataType::kUint16:
      AppendNumber(out, Load<uint16_t>(t, i));
      break;
    case DataType::kUint32:
      AppendNumber(out, Load<uint32_t>(t, i));
      break;
    case DataType::kUint64:
      AppendNumber(out, Load<uint64_t>(t, i));
      break;
    case DataType::kInt8:
      AppendNumber(out, Load<int8_t>(t, i));
      break;
    case DataType::kInt16:
      AppendNumber(out, Load<int16_t>(t, i));
      break;
    case DataType::kInt32:
      AppendNumber(out, Load<int32_t>(t, i));
      break;
    case DataType::kInt64:
      AppendNumber(out, Load<int64_t>(t, i));
      break;
    case DataType::kFp16:
      AppendNumber(out, HalfToFloat(Load<uint16_t>(t, i)));
      break;
    case DataType::kBf16:
      AppendNumber(out, Bf16ToFloat(Load<uint16_t>(t, i)));
      break;
    case DataType::kFp32:
      AppendNumber(out, Load<float>(t, i));
      break;
    case DataType::kFp64:
      AppendNumber(out, Load<double>(t, i));
      break;
    case DataType::kBytes:
      AppendString(out, t.bytes[i]);
      break;
    case DataType::kInvalid:
      out->append("null");
      break;
  }
}

// Number of elements the tensor actually holds, so that a malformed runtime output can never
// make the encoder read past its payload.
int64_t AvailableElements(const Tensor& t) {
  if (t.dtype == DataType::kBytes) return static_cast<int64_t>(t.bytes.size());
  const int64_t size = DataTypeSizeBytes(t.dtype);
  return size > 0 ? static_cast<int64_t>(t.data.size()) / size : 0;
}

void AppendFlatData(std::string* out, const Tensor& t) {
  const int64_t n = AvailableElements(t);
  out->push_back('[');
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0) out->push_back(',');
    AppendElement(out, t, i);
  }
  out->push_back(']');
}

void AppendShape(std::string* out, const std::vector<int64_t>& shape) {
  out->push_back('[');
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out->push_back(',');
    AppendNumber(out, shape[i]);
  }
  out->push_back(']');
}

void AppendParameterValue(std::string* out, const ParameterValue& v) {
  if (const bool* b = std::get_if<bool>(&v)) {
    out->append(*b ? "true" : "false");
  } else if (const int64_t* i = std::get_if<int64_t>(&v)) {
    AppendNumber(out, *i);
  } else if (const double* d = std::get_if<double>(&v)) {
    AppendNumber(out, *d);
  } else {
    AppendString(out, std::get<std::string>(v));
  }
}

void AppendParameters(std::string* out, const Parameters& params) {
  out->push_back('{');
  bool first = true;
  for (const auto& [key, value] : params) {
    if (!first) out->push_back(',');
    first = false;
    AppendString(out, key);
    out->push_back(':');
    AppendParameterValue(out, value);
  }
  out->push_back('}');
}

void AppendTensorSpec(std::string* out, const kernels::TensorSpec& spec) {
  out->append("{\"name\":");
  AppendString(out, spec.name);
  out->append(",\"datatype\":");
  AppendString(out, DataTypeName(spec.dtype));
  out->append(",\"shape\":");
  AppendShape(out, spec.shape);
  out->push_back('}');
}

// Appends the nested JSON array of `dims` elements of `t` starting at element `*index`.
void AppendNested(std::string* out, const Tensor& t, const int64_t* dims, size_t rank,
                  int64_t* index, int64_t available) {
  if (rank == 0) {
    if (*index < available) {
      AppendElement(out, t, *index);
    } else {
      out->append("null");
    }
    ++*index;
    return;
  }
  out->push_back('[');
  for (int64_t i = 0; i < dims[0]; ++i) {
    if (i > 0) out->push_back(',');
    AppendNested(out, t, dims + 1, rank - 1, index, available);
  }
  out->push_back(']');
}

// ---------------------------------------------------------------------------------------------
// Reading JSON, with simdjson's DOM parser: it validates the whole document (UTF-8 included) in
// one SIMD pass, and the conversions below walk its tape.

namespace dom = simdjson::dom;

static_assert(kJsonPaddingBytes >= simdjson::SIMDJSON_PADDING);

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
  // kJsonPaddingBytes the text is parsed in place; otherwise it is first copied into the parser's
  // padded buffer.
  absl::StatusOr<dom::element> Parse(std::string_view text, size_t readable_past_end) {
    dom::parser& parser = ThreadParser();
    simdjson::error_code error = simdjson::SUCCESS;
    if (parser.capacity() == 0) error = parser.allocate(kInitialCapacityBytes, kMaxJsonDepth);
    dom::element root;
    if (!error) {
      error =
          parser.parse(text.data(), text.size(), readable_past_end < kJsonPaddingBytes).get(root);
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

std::string_view TypeName(dom::element j) {
  switch (j.type()) {
    case dom::element_type::NULL_VALUE:
      return "null";
    case dom::element_type::BOOL:
      return "bool";
    case dom::element_type::INT64:
    case dom::element_type::UINT64:
      return "integer";
    case dom::element_type::DOUBLE:
      return "number";
    case dom::element_type::STRING:
      return "string";
    case dom::element_type::ARRAY:
      return "array";
    case dom::element_type::OBJECT:
      return "object";
  }
  return "value";
}

// The first member named `key`; later duplicates are ignored (RFC 8259 leaves them to the reader).
std::optional<dom::element> Find(dom::object object, std::string_view key) {
  dom::element value;
  if (object.at_key(key).get(value)) return std::nullopt;
  return value;
}

absl::Status Invalid(std::string_view what, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": ", std::string(message)));
}

absl::StatusOr<ParameterValue> ParseParameterValue(dom::element j, std::string_view what) {
  switch (j.type()) {
    case dom::element_type::BOOL:
      return ParameterValue(j.get_bool().value_unsafe());
    case dom::element_type::INT64:
      return ParameterValue(j.get_int64().value_unsafe());
    case dom::element_type::UINT64:  // only values above INT64_MAX are UINT64
      return Invalid(
          what, absl::StrCat("value ", j.get_uint64().value_unsafe(), " does not fit an int64"));
    case dom::element_type::DOUBLE:
      return ParameterValue(j.get_double().value_unsafe());
    case dom::element_type::STRING:
      return ParameterValue(std::string(j.get_string().value_unsafe()));
    default:
      return Invalid(
          what, absl::StrCat("must be a bool, number or string, got ", std::string(TypeName(j))));
  }
}

absl::StatusOr<Parameters> ParseParameters(dom::element j, std::string_view what) {
  dom::object object;
  if (j.get(object)) {
    return Invalid(what,
                   absl::StrCat("parameters must be an object, got ", std::string(TypeName(j))));
  }
  Parameters params;
  for (const dom::key_value_pair field : object) {
    auto v = ParseParameterValue(
        field.value, absl::StrCat(std::string(what), ": parameter '", std::string(field.key), "'"));
    if (!v.ok()) return v.status();
    params.emplace(std::string(field.key), *std::move(v));
  }
  if (absl::Status s = CheckParameters(params, what); !s.ok()) return s;
  return params;
}
absl::StatusOr<int64_t> NonNegativeInt(const Parameters& params, const std::string& key,
                                       std::string_view what) {
  auto it = params.find(key);
  if (it == params.end()) return 0;
  const int64_t* v = std::get_if<int64_t>(&it->second);
  if (v == nullptr || *v < 0) {
    return Invalid(what, absl::StrCat("parameter '", key, "' must be a non-negative integer"));
  }
  return *v;
}

absl::Status OutOfRange(std::string_view input, int64_t index, std::string_view value,
                        DataType dtype) {
  return absl::InvalidArgumentError(
      absl::StrCat("input '", std::string(input), "': element ", index, " (", std::string(value),
                   ") is out of range for ", std::string(DataTypeName(dtype))));
}

// Converts one JSON scalar to the tensor's datatype and appends it. Errors name the input and the
// element index.
template <typename T>
absl::Status AppendInteger(dom::element j, std::string* data, std::string_view input,
                           DataType dtype, int64_t index) {
  T value;
  if (j.type() == dom::element_type::UINT64) {  // above INT64_MAX
    const uint64_t u = j.get_uint64().value_unsafe();
    if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
      return OutOfRange(input, index, absl::StrCat(u), dtype);
    }
    value = static_cast<T>(u);
  } else if (j.type() == dom::element_type::INT64) {
    const int64_t s = j.get_int64().value_unsafe();
    if constexpr (std::is_unsigned_v<T>) {
      if (s < 0 ||
          static_cast<uint64_t>(s) > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        return OutOfRange(input, index, absl::StrCat(s), dtype);
      }
    } else {
      if (s < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
          s > static_cast<int64_t>(std::numeric_limits<T>::max())) {
        return OutOfRange(input, index, absl::StrCat(s), dtype);
      }
    }
    value = static_cast<T>(s);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", std::string(input), "': element ", index, " must be an integer for ",
        std::string(DataTypeName(dtype)), ", got ", std::string(TypeName(j))));
  }
  data->append(reinterpret_cast<const char*>(&value), sizeof(T));
  return absl::OkStatus();
}

template <typename T>
absl::Status AppendFloat(dom::element j, std::string* data, std::string_view input, DataType dtype,
                         int64_t index) {
  double d;  // integers convert too
  if (j.get(d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", std::string(input), "': element ", index, " must be a number for ",
                     std::string(DataTypeName(dtype)), ", got ", std::string(TypeName(j))));
  }
  if constexpr (std::is_same_v<T, float>) {
    if (std::fabs(d) > std::numeric_limits<float>::max()) {
      return OutOfRange(input, index, absl::StrCat(d), dtype);
    }
  }
  const T value = static_cast<T>(d);
  data->append(reinterpret_cast<const char*>(&value), sizeof(T));
  return absl::OkStatus();
}

absl::Status AppendScalar(dom::element j, Tensor* t, int64_t index) {
  switch (t->dtype) {
    case DataType::kBool: {
      bool b;
      if (j.get(b)) {
        return absl::InvalidArgumentError(absl::StrCat("input '", t->name, "': element ", index,
                                                       " must be a JSON bool for BOOL, got ",
                                                       std::string(TypeName(j))));
      }
      t->data.push_back(b ? 1 : 0);
      return absl::OkStatus();
    }
    case DataType::kUint8:
      return AppendInteger<uint8_t>(j, &t->data, t->name, t->dtype, index);
    case DataType::kUint16:
      return AppendInteger<uint16_t>(j, &t->data, t->name, t->dtype, index);
    case DataType::kUint32:
      return AppendInteger<uint32_t>(j, &t->data, t->name, t->dtype, index);
    case DataType::kUint64:
      return AppendInteger<uint64_t>(j, &t->data, t->name, t->dtype, index);
    case DataType::kInt8:
      return AppendInteger<int8_t>(j, &t->data, t->name, t->dtype, index);
    case DataType::kInt16:
      return AppendInteger<int16_t>(j, &t->data, t->name, t->dtype, index);
    case DataType::kInt32:
      return AppendInteger<int32_t>(j, &t->data, t->name, t->dtype, index);
    case DataType::kInt64:
      return AppendInteger<int64_t>(j, &t->data, t->name, t->dtype, index);
    case DataType::kFp32:
      return AppendFloat<float>(j, &t->data, t->name, t->dtype, index);
    case DataType::kFp64:
      return AppendFloat<double>(j, &t->data, t->name, t->dtype, index);
    case DataType::kBytes: {
      std::string_view s;
      if (j.get(s)) {
        return absl::InvalidArgumentError(absl::StrCat("input '", t->name, "': element ", index,
                                                       " must be a string for BYTES, got ",
                                                       std::string(TypeName(j))));
      }
      t->bytes.emplace_back(s);
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t->name, "': ", std::string(DataTypeName(t->dtype)),
                       " data must be sent in binary form (binary tensor data extension)"));
  }
}

// Flattens (possibly nested) JSON data into `t`, counting elements in `*count`.
absl::Status AppendData(dom::element j, Tensor* t, int64_t* count, int64_t limit) {
  if (dom::array items; !j.get(items)) {
    for (dom::element e : items) {
      if (absl::Status s = AppendData(e, t, count, limit); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // Stop converting once past what the shape allows; the count check reports it.
  if (*count >= limit) {
    ++*count;
    return absl::OkStatus();
  }
  if (absl::Status s = AppendScalar(j, t, *count); !s.ok()) return s;
  ++*count;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> ParseShape(dom::element j, std::string_view input) {
  dom::array dims;
  if (j.get(dims)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", std::string(input), "': 'shape' must be an array of integers"));
  }
  std::vector<int64_t> shape;
  shape.reserve(dims.size());
  for (dom::element d : dims) {
    int64_t dim;
    const bool is_int64 = !d.get(dim);
    if (!is_int64 || dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", std::string(input), "': 'shape' must hold non-negative integers, got ",
          is_int64 ? std::to_string(dim) : std::string(TypeName(d))));
    }
    shape.push_back(dim);
  }
  if (ElementCount(shape) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("input '", std::string(input), "': shape ",
                                                   ShapeToString(shape), " is too large"));
  }
  return shape;
}
// Resolves a model input's declared shape (dims of -1 variable) for `count` elements. At most one
// variable dim can be inferred.
absl::StatusOr<std::vector<int64_t>> ResolveShape(const kernels::TensorSpec& spec, int64_t count) {
  std::vector<int64_t> shape = spec.shape;
  int64_t fixed = 1;
  int variable = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      if (variable >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", spec.name, "': a body without a JSON header cannot give shape ",
            ShapeToString(spec.shape), " (more than one variable dim); send a JSON header"));
      }
      variable = static_cast<int>(i);
    } else {
      fixed *= shape[i];
    }
  }
  if (variable >= 0) {
    if (fixed == 0 || count % fixed != 0) {
      return absl::InvalidArgumentError(absl::StrCat("input '", spec.name, "': ", count,
                                                     " elements do not fit shape ",
                                                     ShapeToString(spec.shape)));
    }
    shape[variable] = count / fixed;
  } else if (fixed != count) {
    return absl::InvalidArgumentError(absl::StrCat("input '", spec.name, "': shape ",
                                                   ShapeToString(spec.shape), " needs ", fixed,
                                                   " elements, got ", count));
  }
  return shape;
}

absl::StatusOr<InferenceRequest> ParseRawBody(std::string_view body, const std::string& model,
                                              const ModelMetadata& metadata) {
  if (metadata.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Inference-Header-Content-Length 0 (a body that is one raw tensor) needs a model with "
        "exactly one input; '",
        model, "' has ", metadata.inputs.size()));
  }
  const kernels::TensorSpec& spec = metadata.inputs[0];
  Tensor t;
  t.name = spec.name;
  t.dtype = spec.dtype;
  int64_t count = 0;
  if (spec.dtype == DataType::kBytes) {
    auto elements = DecodeBytesElements(body, -1, absl::StrCat("input '", spec.name, "'"));
    if (!elements.ok()) return elements.status();
    t.bytes = *std::move(elements);
    count = static_cast<int64_t>(t.bytes.size());
  } else {
    const int64_t size = DataTypeSizeBytes(spec.dtype);
    if (size <= 0 || static_cast<int64_t>(body.size()) % size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", spec.name, "': ", body.size(), " bytes are not a whole number of ",
          std::string(DataTypeName(spec.dtype)), " elements"));
    }
    count = static_cast<int64_t>(body.size()) / size;
    t.data.assign(body.data(), body.size());
  }
  auto shape = ResolveShape(spec, count);
  if (!shape.ok()) return shape.status();
  t.shape = *std::move(shape);
  InferenceRequest request;
  request.inputs.push_back(std::move(t));
  return request;
}

// `json_bytes`: the size of the JSON text, which bounds how many elements its 'data' can hold.
absl::Status ParseInput(dom::element j, std::string_view binary, size_t* binary_offset,
                        bool has_header, size_t json_bytes, const ModelMetadata& metadata,
                        Tensor* t) {
  dom::object input;
  if (j.get(input)) {
    return absl::InvalidArgumentError(
        absl::StrCat("each entry of 'inputs' must be an object, got ", std::string(TypeName(j))));
  }
  std::string_view name;
  if (auto field = Find(input, "name"); !field || field->get(name)) {
    return absl::InvalidArgumentError("an input has no 'name' string");
  }
  t->name = std::string(name);
  const std::string what = absl::StrCat("input '", t->name, "'");

  std::string_view datatype;
  if (auto field = Find(input, "datatype"); !field || field->get(datatype)) {
    return Invalid(what, "'datatype' is missing or not a string");
  }
  t->dtype = DataTypeFromName(datatype);
  if (t->dtype == DataType::kInvalid) {
    return Invalid(what, absl::StrCat("unknown datatype '", std::string(datatype), "'"));
  }
  const std::optional<dom::element> shape_field = Find(input, "shape");
  if (!shape_field) return Invalid(what, "'shape' is missing");
  auto shape = ParseShape(*shape_field, t->name);
  if (!shape.ok()) return shape.status();
  t->shape = *std::move(shape);
  // Everything the header part says is checked against the model before any data is decoded.
  auto declared = CheckDeclaredInput(metadata.inputs, metadata.batched, metadata.max_batch_size,
                                     t->name, t->dtype, t->shape);
  if (!declared.ok()) return declared.status();
  const int64_t count = declared->element_count;

  int64_t binary_size = -1;
  if (const std::optional<dom::element> params = Find(input, "parameters")) {
    auto parsed = ParseParameters(*params, what);
    if (!parsed.ok()) return parsed.status();
    if (parsed->count("binary_data_size") > 0) {
      auto size = NonNegativeInt(*parsed, "binary_data_size", what);
      if (!size.ok()) return size.status();
      binary_size = *size;
    }
  }

  const std::optional<dom::element> data = Find(input, "data");
  if (binary_size >= 0) {
    if (!has_header) {
      return Invalid(what,
                     "parameters.binary_data_size needs the Inference-Header-Content-Length "
                     "header");
    }
    if (data) return Invalid(what, "has both 'data' and binary_data_size");
    if (binary.size() - *binary_offset < static_cast<uint64_t>(binary_size)) {
      return Invalid(what,
                     absl::StrCat("binary_data_size ", binary_size, " but only ",
                                  binary.size() - *binary_offset, " bytes of binary data remain"));
    }
    const std::string_view raw = binary.substr(*binary_offset, binary_size);
    *binary_offset += binary_size;
    if (t->dtype == DataType::kBytes) {
      auto elements = DecodeBytesElements(raw, count, what);
      if (!elements.ok()) return elements.status();
      t->bytes = *std::move(elements);
    } else {
      const int64_t want = declared->byte_size;
      if (binary_size != want) {
        return Invalid(what, absl::StrCat("shape ", ShapeToString(t->shape), " of ",
                                          std::string(DataTypeName(t->dtype)), " needs ", want,
                                          " bytes, binary_data_size is ", binary_size));
      }
      t->data.assign(raw.data(), raw.size());
    }
    return absl::OkStatus();
  }

  if (!data) return Invalid(what, "has neither 'data' nor parameters.binary_data_size");
  // Each JSON element takes at least one byte of text, so a count beyond the text's size cannot
  // be there; refusing it here keeps the reservations below bounded by the body.
  if (static_cast<uint64_t>(count) > json_bytes) {
    return Invalid(what,
                   absl::StrCat("shape ", ShapeToString(t->shape), " needs ", count,
                                " elements but the JSON text has only ", json_bytes, " bytes"));
  }
  if (t->dtype == DataType::kBytes) {
    t->bytes.reserve(count, 0);
  } else {
    t->data.reserve(count * DataTypeSizeBytes(t->dtype));
  }
  int64_t got = 0;
  if (absl::Status s = AppendData(*data, t, &got, count); !s.ok()) return s;
  if (got != count) {
    return Invalid(what, absl::StrCat("shape ", ShapeToString(t->shape), " needs ", count,
                                      " elements, got ", got));
  }
  return absl::OkStatus();
}

absl::Status ParseRequestedOutput(dom::element j, RequestedOutput* out) {
  dom::object output;
  if (j.get(output)) {
    return absl::InvalidArgumentError(
        absl::StrCat("each entry of 'outputs' must be an object, got ", std::string(TypeName(j))));
  }
  std::string_view name;
  if (auto field = Find(output, "name"); !field || field->get(name)) {
    return absl::InvalidArgumentError("a requested output has no 'name' string");
  }
  out->name = std::string(name);
  if (const std::optional<dom::element> params = Find(output, "parameters")) {
    const std::string what = absl::StrCat("output '", out->name, "'");
    auto parsed = ParseParameters(*params, what);
    if (!parsed.ok()) return parsed.status();
    out->parameters = *std::move(parsed);
    if (auto it = out->parameters.find("binary_data"); it != out->parameters.end()) {
      const bool* b = std::get_if<bool>(&it->second);
      if (b == nullptr) return Invalid(what, "parameter 'binary_data' must be a bool");
      out->binary_data = *b;
    }
  }
  return absl::OkStatus();
}
// Whether `output` goes to the binary part of the response.
bool WantsBinary(const std::string& output, const InferenceRequest& request) {
  for (const RequestedOutput& r : request.outputs) {
    if (r.name != output) continue;
    if (r.parameters.count("binary_data") > 0) return r.binary_data;
    return r.binary_data || request.binary_data_output;
  }
  return request.binary_data_output;
}

// ---- Clipper ----

// Shape of a Clipper query value, from the first element at each nesting level.
void InferShape(dom::element j, std::vector<int64_t>* dims) {
  dom::array items;
  while (!j.get(items)) {
    dims->push_back(static_cast<int64_t>(items.size()));
    if (items.begin() == items.end()) break;
    j = *items.begin();
  }
}

// Appends the elements of a query whose shape is `dims`, rejecting ragged arrays.
absl::Status AppendRow(dom::element j, const int64_t* dims, size_t rank, Tensor* t, int64_t* count,
                       std::string_view what) {
  dom::array items;
  const bool is_array = !j.get(items);
  if (rank == 0) {
    if (is_array) return Invalid(what, "is a ragged array (rows of different lengths)");
    if (absl::Status s = AppendScalar(j, t, *count); !s.ok()) return s;
    ++*count;
    return absl::OkStatus();
  }
  if (!is_array || static_cast<int64_t>(items.size()) != dims[0]) {
    return Invalid(what, "is a ragged array (rows of different lengths)");
  }
  for (dom::element e : items) {
    if (absl::Status s = AppendRow(e, dims + 1, rank - 1, t, count, what); !s.ok()) return s;
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<InferenceRequest> ParseInferRequest(std::string_view body, int64_t header_length,
                                                   const std::string& model_name,
                                                   const std::string& model_version,
                                                   const ModelMetadata& metadata,
                                                   size_t readable_past_end) {
  if (header_length == 0) {
    auto request = ParseRawBody(body, model_name, metadata);
    if (request.ok()) {
      request->model_name = model_name;
      request->model_version = model_version;
    }
    return request;
  }
  std::string_view json_text = body;
  std::string_view binary;
  const bool has_header = header_length > 0;
  if (has_header) {
    if (static_cast<uint64_t>(header_length) > body.size()) {
      return absl::InvalidArgumentError(absl::StrCat("Inference-Header-Content-Length ",
                                                     header_length, " exceeds the body size ",
                                                     body.size()));
    }
    json_text = body.substr(0, header_length);
    binary = body.substr(header_length);
  }
  JsonDocument document;
  auto parsed = document.Parse(json_text, binary.size() + readable_past_end);
  if (!parsed.ok()) return parsed.status();
  dom::object root;
  if (parsed->get(root)) {
    return absl::InvalidArgumentError(absl::StrCat("the request body must be a JSON object, got ",
                                                   std::string(TypeName(*parsed))));
  }

  InferenceRequest request;
  request.model_name = model_name;
  request.model_version = model_version;
  if (const std::optional<dom::element> id = Find(root, "id")) {
    std::string_view text;
    if (id->get(text)) return absl::InvalidArgumentError("'id' must be a string");
    if (absl::Status st = CheckRequestId(text); !st.ok()) return st;
    request.id = std::string(text);
  }
  if (const std::optional<dom::element> params = Find(root, "parameters")) {
    auto p = ParseParameters(*params, "request");
    if (!p.ok()) return p.status();
    request.parameters = *std::move(p);
    auto priority = NonNegativeInt(request.parameters, "priority", "request");
    if (!priority.ok()) return priority.status();
    request.priority = *priority;
    auto timeout = NonNegativeInt(request.parameters, "timeout", "request");
    if (!timeout.ok()) return timeout.status();
    request.timeout_us = *timeout;
    if (auto it = request.parameters.find("binary_data_output"); it != request.parameters.end()) {
      const bool* b = std::get_if<bool>(&it->second);
      if (b == nullptr) {
        return absl::InvalidArgumentError("request: parameter 'binary_data_output' must be a bool");
      }
      request.binary_data_output = *b;
    }
  }

  dom::array inputs;
  if (auto field = Find(root, "inputs"); !field || field->get(inputs)) {
    return absl::InvalidArgumentError("the request has no 'inputs' array");
  }
  request.inputs.resize(inputs.size());
  size_t binary_offset = 0;
  size_t i = 0;
  for (dom::element input : inputs) {
    if (absl::Status s = ParseInput(input, binary, &binary_offset, has_header, json_text.size(),
                                    metadata, &request.inputs[i++]);
        !s.ok()) {
      return s;
    }
  }
  if (binary_offset != binary.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the binary part holds ", binary.size(),
                                                   " bytes but the inputs' ",
                                                   "binary_data_size add up to ", binary_offset));
  }

  if (const std::optional<dom::element> field = Find(root, "outputs")) {
    dom::array outputs;
    if (field->get(outputs)) return absl::InvalidArgumentError("'outputs' must be an array");
    request.outputs.resize(outputs.size());
    size_t o = 0;
    for (dom::element output : outputs) {
      if (absl::Status s = ParseRequestedOutput(output, &request.outputs[o++]); !s.ok()) return s;
    }
  }
  return request;
}

EncodedBody EncodeInferResponse(const InferenceResponse& response,
                                const InferenceRequest& request) {
  EncodedBody result;
  std::string& out = result.body;
  size_t estimate = 128;
  for (const Tensor& t : response.outputs) {
    estimate += 96 + t.name.size() + t.data.size() * 3;
    estimate += t.bytes.total_bytes() + 8 * t.bytes.size();
  }
  out.reserve(estimate);

  const std::string& model_name =
      response.model_name.empty() ? request.model_name : response.model_name;
  const std::string& model_version =
      response.model_version.empty() ? request.model_version : response.model_version;
  const std::string& id = response.id.empty() ? request.id : response.id;
  out.append("{\"model_name\":");
  AppendString(&out, model_name);
  if (!model_version.empty()) {
    out.append(",\"model_version\":");
    AppendString(&out, model_version);
  }
  if (!id.empty()) {
    out.append(",\"id\":");
    AppendString(&out, id);
  }
  if (!response.parameters.empty()) {
    out.append(",\"parameters\":");
    AppendParameters(&out, response.parameters);
  }
  out.append(",\"outputs\":[");
  // Binary parts are collected first and appended after the JSON.
  std::vector<std::string_view> binary_views;
  std::vector<std::string> encoded_bytes;  // keeps BYTES outputs' binary form alive
  for (size_t i = 0; i < response.outputs.size(); ++i) {
    const Tensor& t = response.outputs[i];
    if (i > 0) out.push_back(',');
    out.append("{\"name\":");
    AppendString(&out, t.name);
    out.append(",\"datatype\":");
    AppendString(&out, DataTypeName(t.dtype));
    out.append(",\"shape\":");
    AppendShape(&out, t.shape);
    if (WantsBinary(t.name, request)) {
      std::string_view raw;
      if (t.dtype == DataType::kBytes) {
        encoded_bytes.push_back(EncodeBytesElements(t.bytes));
        raw = encoded_bytes.back();
      } else {
        raw = t.data;
      }
      binary_views.push_back(raw);
      out.append(",\"parameters\":{\"binary_data_size\":");
      AppendNumber(&out, raw.size());
      out.append("}}");
    } else {
      out.append(",\"data\":");
      AppendFlatData(&out, t);
      out.push_back('}');
    }
  }
  out.append("]}");
  if (!binary_views.empty()) {
    result.json_length = static_cast<int64_t>(out.size());
    size_t total = out.size();
    for (std::string_view v : binary_views) total += v.size();
    out.reserve(total);
    for (std::string_view v : binary_views) out.append(v);
  }
  return result;
}

std::string EncodeServerMetadata(const ServerMetadata& metadata) {
  std::string out = "{\"name\":";
  AppendString(&out, metadata.name);
  out.append(",\"version\":");
  AppendString(&out, metadata.version);
  out.append(",\"extensions\":[");
  bool has_binary = false;
  for (size_t i = 0; i < metadata.extensions.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendString(&out, metadata.extensions[i]);
    has_binary = has_binary || metadata.extensions[i] == kBinaryTensorDataExtension;
  }
  if (!has_binary) {
    if (!metadata.extensions.empty()) out.push_back(',');
    AppendString(&out, kBinaryTensorDataExtension);
  }
  out.append("]}");
  return out;
}

std::string EncodeModelMetadata(const ModelMetadata& metadata) {
  std::string out = "{\"name\":";
  AppendString(&out, metadata.name);
  out.append(",\"versions\":[");
  for (size_t i = 0; i < metadata.versions.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendString(&out, metadata.versions[i]);
  }
  out.append("],\"platform\":");
  AppendString(&out, metadata.platform);
  out.append(",\"inputs\":[");
  for (size_t i = 0; i < metadata.inputs.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendTensorSpec(&out, metadata.inputs[i]);
  }
  out.append("],\"outputs\":[");
  for (size_t i = 0; i < metadata.outputs.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendTensorSpec(&out, metadata.outputs[i]);
  }
  out.append("]}");
  return out;
}

std::string EncodeError(std::string_view message) {
  std::string out = "{\"error\":";
  AppendString(&out, message);
  out.push_back('}');
  return out;
}

absl::StatusOr<ClipperQuery> ParseClipperPredict(std::string_view body,
                                                 const ModelMetadata& metadata,
                                                 size_t readable_past_end) {
  if (metadata.inputs.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("predict needs a model with exactly one input; '", metadata.name, "' has ",
                     metadata.inputs.size()));
  }
  const kernels::TensorSpec& spec = metadata.inputs[0];
  JsonDocument document;
  auto parsed = document.Parse(body, readable_past_end);
  if (!parsed.ok()) return parsed.status();
  dom::object root;
  if (parsed->get(root)) {
    return absl::InvalidArgumentError(absl::StrCat("the request body must be a JSON object, got ",
                                                   std::string(TypeName(*parsed))));
  }
  const std::optional<dom::element> single = Find(root, "input");
  const std::optional<dom::element> batch = Find(root, "input_batch");
  if (single.has_value() == batch.has_value()) {
    return absl::InvalidArgumentError("the body needs exactly one of 'input' or 'input_batch'");
  }

  ClipperQuery query;
  query.batched = metadata.batched;
  query.is_batch = batch.has_value();
  std::vector<dom::element> rows;
  if (query.is_batch) {
    if (!metadata.batched) {
      return absl::InvalidArgumentError(absl::StrCat("'input_batch' needs a batched model; '",
                                                     metadata.name, "' takes one 'input'"));
    }
    dom::array queries;
    if (batch->get(queries) || queries.begin() == queries.end()) {
      return absl::InvalidArgumentError("'input_batch' must be a non-empty array of queries");
    }
    for (dom::element q : queries) rows.push_back(q);
  } else {
    rows.push_back(*single);
  }
  query.rows = static_cast<int64_t>(rows.size());

  // The part of the model's input shape that one query gives.
  std::vector<int64_t> row_spec = spec.shape;
  if (metadata.batched && !row_spec.empty()) row_spec.erase(row_spec.begin());

  Tensor t;
  t.name = spec.name;
  t.dtype = spec.dtype;
  std::vector<int64_t> row_dims;
  int64_t count = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    const std::string what = query.is_batch ? absl::StrCat("input_batch[", r, "]") : "input";
    std::vector<int64_t> dims;
    InferShape(rows[r], &dims);
    bool fits = dims.size() == row_spec.size();
    for (size_t d = 0; fits && d < dims.size(); ++d) {
      fits = row_spec[d] < 0 || row_spec[d] == dims[d];
    }
    if (!fits) {
      return Invalid(what,
                     absl::StrCat("has shape ", ShapeToString(dims), " but input '", spec.name,
                                  "' takes ", ShapeToString(row_spec), " per query"));
    }
    if (r == 0) {
      row_dims = dims;
      // Check the whole input the queries would make (rows against maxBatchSize, size overflow)
      // before reserving for it; the first row's shape is only a claim about the others.
      std::vector<int64_t> full = row_dims;
      if (metadata.batched) full.insert(full.begin(), query.rows);
      auto declared = CheckDeclaredInput(metadata.inputs, metadata.batched, metadata.max_batch_size,
                                         t.name, t.dtype, full);
      if (!declared.ok()) return declared.status();
      const int64_t n = declared->element_count;
      // Each element takes at least a byte of JSON text; a ragged batch fails in AppendRow.
      if (static_cast<uint64_t>(n) > body.size()) {
        return Invalid(
            what, absl::StrCat("the queries would need ", n, " elements but the body has only ",
                               body.size(), " bytes (a ragged batch?)"));
      }
      if (t.dtype == DataType::kBytes) {
        t.bytes.reserve(n, 0);
      } else {
        t.data.reserve(n * DataTypeSizeBytes(t.dtype));
      }
    } else if (dims != row_dims) {
      return Invalid(what,
                     absl::StrCat("has shape ", ShapeToString(dims), " but the first query has ",
                                  ShapeToString(row_dims), "; a batch needs equal shapes"));
    }
    if (absl::Status s = AppendRow(rows[r], dims.data(), dims.size(), &t, &count, what); !s.ok()) {
      return s;
    }
  }
  if (metadata.batched) {
    t.shape.push_back(query.rows);
  }
  t.shape.insert(t.shape.end(), row_dims.begin(), row_dims.end());
  query.request.model_name = metadata.name;
  query.request.inputs.push_back(std::move(t));
  return query;
}

std::string EncodeClipperResponse(const InferenceResponse& response, const ClipperQuery& query,
                                  int64_t first_query_id) {
  std::string out;
  out.reserve(64 + query.rows * 32);

  std::string default_value;
  if (response.is_default) {
    auto it = response.parameters.find("default_output");
    const std::string* text =
        it == response.parameters.end() ? nullptr : std::get_if<std::string>(&it->second);
    if (text == nullptr) {
      default_value = "null";
    } else if (JsonDocument().Parse(*text, 0).ok()) {
      default_value = *text;
    } else {
      AppendString(&default_value, *text);  // not JSON: send it as a string
    }
  }

  auto append_row = [&](int64_t row) {
    if (response.is_default) {
      out.append(default_value);
      return;
    }
    auto append_tensor_row = [&](const Tensor& t) {
      const int64_t available = AvailableElements(t);
      // Split along the leading dim only when it really holds one row per query.
      if (query.batched && !t.shape.empty() && t.shape[0] == query.rows) {
        const int64_t per_row = query.rows > 0 ? ElementCount(t.shape) / query.rows : 0;
        int64_t index = row * per_row;
        AppendNested(&out, t, t.shape.data() + 1, t.shape.size() - 1, &index, available);
      } else {
        int64_t index = 0;
        AppendNested(&out, t, t.shape.data(), t.shape.size(), &index, available);
      }
    };
    if (response.outputs.size() == 1) {
      append_tensor_row(response.outputs[0]);
      return;
    }
    out.push_back('{');
    for (size_t i = 0; i < response.outputs.size(); ++i) {
      if (i > 0) out.push_back(',');
      AppendString(&out, response.outputs[i].name);
      out.push_back(':');
      append_tensor_row(response.outputs[i]);
    }
    out.push_back('}');
  };
  auto append_prediction = [&](int64_t row) {
    out.append("{\"query_id\":");
    AppendNumber(&out, first_query_id + row);
    out.append(",\"output\":");
    append_row(row);
    out.append(response.is_default ? ",\"default\":true}" : ",\"default\":false}");
  };

  if (!query.is_batch) {
    append_prediction(0);
    return out;
  }
  out.append("{\"batch_predictions\":[");
  for (int64_t r = 0; r < query.rows; ++r) {
    if (r > 0) out.push_back(',');
    append_prediction(r);
  }
  out.append("]}");
  return out;
}

}  // namespace ferry::agent
