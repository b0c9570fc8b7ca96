#include "node-agent/json_writer.h"

#include <cstring>
#include <limits>
#include <utility>
#include <variant>

namespace ferry::agent::json_writer {

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

void AppendTensorSpec(std::string* out, const TensorSpec& spec) {
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

}  // namespace ferry::agent::json_writer
