// Tensors as they travel through ferry: KServe v2 datatypes, row-major, little-endian.
#ifndef FERRY_TENSOR_H_
#define FERRY_TENSOR_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ferry {

enum class DataType {
  kInvalid = 0,
  kBool,
  kUint8,
  kUint16,
  kUint32,
  kUint64,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kFp16,
  kBf16,
  kFp32,
  kFp64,
  kBytes,
};

// "FP32", "BYTES", ... as the KServe v2 protocol spells them. kInvalid -> "INVALID".
std::string_view DataTypeName(DataType dtype);
// Inverse of DataTypeName; kInvalid for unknown names (case-sensitive, as the protocol is).
DataType DataTypeFromName(std::string_view name);
// Bytes per element; 0 for kBytes (variable) and kInvalid.
int64_t DataTypeSizeBytes(DataType dtype);

// Product of dims; -1 if any dim is negative or the product overflows int64.
int64_t ElementCount(const std::vector<int64_t>& shape);
// "[2,3]" for messages.
std::string ShapeToString(const std::vector<int64_t>& shape);

// A named tensor. Fixed-size datatypes keep their elements in `data` (raw little-endian,
// row-major, exactly ElementCount(shape) * DataTypeSizeBytes(dtype) bytes); BYTES tensors keep
// one std::string per element in `bytes` and leave `data` empty. Plain value type; not
// thread-safe for concurrent mutation.
struct Tensor {
  std::string name;
  DataType dtype = DataType::kInvalid;
  std::vector<int64_t> shape;
  std::string data;
  std::vector<std::string> bytes;

  int64_t element_count() const { return ElementCount(shape); }
  // Checks that the payload size matches dtype and shape. The error names the tensor.
  absl::Status CheckConsistent() const;

  // Typed views over `data` (caller guarantees dtype matches T).
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data.data());
  }
  template <typename T>
  T* mutable_as() {
    return reinterpret_cast<T*>(data.data());
  }
};

// Serialises BYTES elements as the binary tensor extension does: each element is a 4-byte
// little-endian length followed by its bytes.
std::string EncodeBytesElements(const std::vector<std::string>& elements);
// Inverse of EncodeBytesElements; `expected_count` < 0 accepts any count. Errors name `what`.
absl::StatusOr<std::vector<std::string>> DecodeBytesElements(std::string_view raw,
                                                             int64_t expected_count,
                                                             std::string_view what);

}  // namespace ferry

#endif  // FERRY_TENSOR_H_
