#include "node-agent/json_reader.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

namespace ferry::agent::json_reader {

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

std::optional<dom::element> Find(dom::object object, std::string_view key) {
  dom::element value;
  if (object.at_key(key).get(value)) return std::nullopt;
  return value;
}

absl::Status Invalid(std::string_view what, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": ", std::string(message)));
}

namespace {

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

}  // namespace

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

}  // namespace ferry::agent::json_reader
