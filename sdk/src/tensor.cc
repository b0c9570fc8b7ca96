#include "ferry/tensor.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ferry {
namespace {

struct TypeInfo {
  DataType dtype;
  std::string_view name;
  int64_t size_bytes;
};

constexpr std::array<TypeInfo, 14> kTypes = {{
    {DataType::kBool, "BOOL", 1},
    {DataType::kUint8, "UINT8", 1},
    {DataType::kUint16, "UINT16", 2},
    {DataType::kUint32, "UINT32", 4},
    {DataType::kUint64, "UINT64", 8},
    {DataType::kInt8, "INT8", 1},
    {DataType::kInt16, "INT16", 2},
    {DataType::kInt32, "INT32", 4},
    {DataType::kInt64, "INT64", 8},
    {DataType::kFp16, "FP16", 2},
    {DataType::kBf16, "BF16", 2},
    {DataType::kFp32, "FP32", 4},
    {DataType::kFp64, "FP64", 8},
    {DataType::kBytes, "BYTES", 0},
}};

}  // namespace

std::string_view DataTypeName(DataType dtype) {
  for (const auto& t : kTypes) {
    if (t.dtype == dtype) return t.name;
  }
  return "INVALID";
}

DataType DataTypeFromName(std::string_view name) {
  for (const auto& t : kTypes) {
    if (t.name == name) return t.dtype;
  }
  return DataType::kInvalid;
}

int64_t DataTypeSizeBytes(DataType dtype) {
  for (const auto& t : kTypes) {
    if (t.dtype == dtype) return t.size_bytes;
  }
  return 0;
}

int64_t ElementCount(const std::vector<int64_t>& shape) {
  // A zero dim makes the product 0 whatever the other dims are, so check it before overflow.
  bool has_zero = false;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d == 0) has_zero = true;
  }
  if (has_zero) return 0;
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / d) return -1;
    count *= d;
  }
  return count;
}

int64_t TensorByteSize(DataType dtype, const std::vector<int64_t>& shape) {
  const int64_t count = ElementCount(shape);
  if (count < 0) return -1;
  int64_t bytes = 0;
  if (__builtin_mul_overflow(count, DataTypeSizeBytes(dtype), &bytes)) return -1;
  return bytes;
}

BytesList::BytesList(std::initializer_list<std::string_view> elements) {
  for (std::string_view e : elements) push_back(e);
}

BytesList::BytesList(const std::vector<std::string>& elements) {
  for (const std::string& e : elements) push_back(e);
}

std::ostream& operator<<(std::ostream& os, const BytesList& list) {
  os << "[";
  for (size_t i = 0; i < list.size(); ++i) {
    if (i > 0) os << ", ";
    os << '"' << list[i] << '"';
  }
  return os << "]";
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::Status Tensor::CheckConsistent() const {
  if (dtype == DataType::kInvalid) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': invalid datatype"));
  }
  const int64_t count = ElementCount(shape);
  if (count < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': invalid shape ", ShapeToString(shape)));
  }
  if (dtype == DataType::kBytes) {
    if (static_cast<int64_t>(bytes.size()) != count) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': shape ",
                                                     ShapeToString(shape), " needs ", count,
                                                     " BYTES elements, got ", bytes.size()));
    }
    return absl::OkStatus();
  }
  const int64_t want = TensorByteSize(dtype, shape);
  if (want < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': shape ", ShapeToString(shape), " is too large"));
  }
  if (static_cast<int64_t>(data.size()) != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", name, "': shape ", ShapeToString(shape), " of ",
        std::string(DataTypeName(dtype)), " needs ", want, " bytes, got ", data.size()));
  }
  return absl::OkStatus();
}

std::string EncodeBytesElements(const BytesList& elements) {
  const size_t total = 4 * elements.size() + elements.total_bytes();
  std::string out;
  out.resize(total);
  char* p = out.data();
  for (std::string_view e : elements) {
    const uint32_t n = static_cast<uint32_t>(e.size());
    const unsigned char len[4] = {static_cast<unsigned char>(n), static_cast<unsigned char>(n >> 8),
                                  static_cast<unsigned char>(n >> 16),
                                  static_cast<unsigned char>(n >> 24)};
    std::memcpy(p, len, 4);
    std::memcpy(p + 4, e.data(), e.size());
    p += 4 + e.size();
  }
  return out;
}

absl::StatusOr<BytesList> DecodeBytesElements(std::string_view raw, int64_t expected_count,
                                              std::string_view what) {
  // Every element takes at least its 4-byte prefix, which bounds the count by the bytes present.
  const size_t most_elements = raw.size() / 4;
  if (expected_count >= 0 && static_cast<uint64_t>(expected_count) > most_elements) {
    return absl::InvalidArgumentError(absl::StrCat(
        std::string(what), ": expected ", expected_count, " BYTES elements, but ", raw.size(),
        " bytes hold at most ", most_elements, " (each element has a 4-byte length prefix)"));
  }
  BytesList out;
  out.reserve(expected_count >= 0 ? static_cast<size_t>(expected_count) : 0,
              raw.size() - 4 * static_cast<size_t>(std::max<int64_t>(expected_count, 0)));
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": BYTES element ",
                                                     out.size(),
                                                     " has a truncated 4-byte length prefix"));
    }
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data() + pos);
    const uint64_t n =
        uint64_t{p[0]} | (uint64_t{p[1]} << 8) | (uint64_t{p[2]} << 16) | (uint64_t{p[3]} << 24);
    pos += 4;
    if (raw.size() - pos < n) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), ": BYTES element ", out.size(), " declares ", n,
                       " bytes but only ", raw.size() - pos, " remain"));
    }
    out.emplace_back(raw.substr(pos, n));
    pos += n;
  }
  if (expected_count >= 0 && static_cast<int64_t>(out.size()) != expected_count) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": expected ", expected_count,
                                                   " BYTES elements, got ", out.size()));
  }
  return out;
}

}  // namespace ferry
