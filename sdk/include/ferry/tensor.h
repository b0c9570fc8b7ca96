// Tensors as they travel through ferry: KServe v2 datatypes, row-major, little-endian.
#ifndef FERRY_TENSOR_H_
#define FERRY_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <ostream>
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
// Bytes a fixed-size tensor of `shape` needs: ElementCount(shape) * DataTypeSizeBytes(dtype);
// -1 when the shape is invalid or the product overflows int64. 0 for kBytes and kInvalid.
int64_t TensorByteSize(DataType dtype, const std::vector<int64_t>& shape);
// "[2,3]" for messages.
std::string ShapeToString(const std::vector<int64_t>& shape);

// The elements of a BYTES tensor: one contiguous buffer plus one end offset per element, so a
// tensor of a million one-byte strings costs about 9 MB rather than a million heap blocks, and
// its memory follows the bytes that arrived rather than the element count a client declared.
// Elements are read as std::string_view, valid until the list is next modified. Plain value
// type; not thread-safe for concurrent mutation.
class BytesList {
 public:
  class const_iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = std::string_view;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = std::string_view;

    const_iterator() = default;
    const_iterator(const BytesList* list, size_t index) : list_(list), index_(index) {}
    std::string_view operator*() const { return (*list_)[index_]; }
    std::string_view operator[](difference_type n) const { return (*list_)[index_ + n]; }
    const_iterator& operator++() {
      ++index_;
      return *this;
    }
    const_iterator operator++(int) {
      const_iterator old = *this;
      ++index_;
      return old;
    }
    const_iterator& operator--() {
      --index_;
      return *this;
    }
    const_iterator operator--(int) {
      const_iterator old = *this;
      --index_;
      return old;
    }
    const_iterator& operator+=(difference_type n) {
      index_ += n;
      return *this;
    }
    const_iterator& operator-=(difference_type n) {
      index_ -= n;
      return *this;
    }
    friend const_iterator operator+(const_iterator it, difference_type n) { return it += n; }
    friend const_iterator operator+(difference_type n, const_iterator it) { return it += n; }
    friend const_iterator operator-(const_iterator it, difference_type n) { return it -= n; }
    friend difference_type operator-(const const_iterator& a, const const_iterator& b) {
      return static_cast<difference_type>(a.index_) - static_cast<difference_type>(b.index_);
    }
    friend bool operator==(const const_iterator& a, const const_iterator& b) {
      return a.index_ == b.index_;
    }
    friend auto operator<=>(const const_iterator& a, const const_iterator& b) {
      return a.index_ <=> b.index_;
    }

   private:
    const BytesList* list_ = nullptr;
    size_t index_ = 0;
  };

  using value_type = std::string_view;
  using reference = std::string_view;
  using const_reference = std::string_view;
  using iterator = const_iterator;
  using size_type = size_t;
  using difference_type = std::ptrdiff_t;

  BytesList() = default;
  BytesList(std::initializer_list<std::string_view> elements);
  BytesList(const std::vector<std::string>& elements);  // NOLINT: implicit, for convenience

  size_t size() const { return ends_.size(); }
  bool empty() const { return ends_.empty(); }
  // Sum of the elements' lengths.
  size_t total_bytes() const { return buffer_.size(); }
  std::string_view operator[](size_t i) const {
    const size_t begin = i == 0 ? 0 : ends_[i - 1];
    return std::string_view(buffer_.data() + begin, ends_[i] - begin);
  }
  std::string_view front() const { return (*this)[0]; }
  std::string_view back() const { return (*this)[size() - 1]; }
  const_iterator begin() const { return const_iterator(this, 0); }
  const_iterator end() const { return const_iterator(this, size()); }

  void push_back(std::string_view element) {
    buffer_.append(element.data(), element.size());
    ends_.push_back(buffer_.size());
  }
  void emplace_back(std::string_view element) { push_back(element); }
  // Callers size these from bytes that actually arrived, never from a declared count alone.
  void reserve(size_t elements, size_t total_bytes) {
    ends_.reserve(elements);
    buffer_.reserve(total_bytes);
  }
  void clear() {
    buffer_.clear();
    ends_.clear();
  }
  void pop_back() {
    ends_.pop_back();
    buffer_.resize(ends_.empty() ? 0 : ends_.back());
  }
  std::vector<std::string> ToVector() const { return std::vector<std::string>(begin(), end()); }

  friend bool operator==(const BytesList& a, const BytesList& b) {
    return a.ends_ == b.ends_ && a.buffer_ == b.buffer_;
  }
  friend bool operator==(const BytesList& a, const std::vector<std::string>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < b.size(); ++i) {
      if (a[i] != b[i]) return false;
    }
    return true;
  }
  // Prints ["a", "b"] (for test failure messages).
  friend std::ostream& operator<<(std::ostream& os, const BytesList& list);

 private:
  std::string buffer_;
  std::vector<size_t> ends_;
};

// A named tensor. Fixed-size datatypes keep their elements in `data` (raw little-endian,
// row-major, exactly ElementCount(shape) * DataTypeSizeBytes(dtype) bytes); BYTES tensors keep
// their elements in `bytes` and leave `data` empty. Plain value type; not thread-safe for
// concurrent mutation.
struct Tensor {
  std::string name;
  DataType dtype = DataType::kInvalid;
  std::vector<int64_t> shape;
  std::string data;
  BytesList bytes;

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
std::string EncodeBytesElements(const BytesList& elements);
// Inverse of EncodeBytesElements; `expected_count` < 0 accepts any count. Memory is sized from
// `raw`, never from `expected_count`. Errors name `what`.
absl::StatusOr<BytesList> DecodeBytesElements(std::string_view raw, int64_t expected_count,
                                              std::string_view what);

}  // namespace ferry

#endif  // FERRY_TENSOR_H_
