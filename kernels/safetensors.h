// A reader for the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON mapping each tensor name to {"dtype", "shape",
// "data_offsets": [begin, end]} (offsets relative to the byte after the header) plus an optional
// "__metadata__" object of strings, then the tensor bytes. The file is memory-mapped read-only.
// Open validates everything before returning, so later accessors cannot read out of bounds.
#ifndef FERRY_KERNELS_SAFETENSORS_H_
#define FERRY_KERNELS_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::kernels {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;  // as in the file: "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;
  int64_t element_count = 0;
  // Offsets into the data section (after the header), begin <= end.
  uint64_t begin = 0;
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`: the file is at least 8 bytes, N fits in the file (and is at most
  // 100 MB), the header is a JSON object, every entry has exactly dtype/shape/data_offsets of
  // the right types, dtype is known, the shape's byte size equals end - begin, and the entries,
  // sorted by offset, cover the data section exactly without gaps or overlap. Errors are
  // InvalidArgument (NotFound when the file cannot be opened) naming the file and tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // The same validation over a file's contents held in memory (the object keeps them; `name`
  // stands for the path in messages and path()). Lets tests and fuzzers check the parser with
  // exactly sized buffers, where a read past the end is caught.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(std::string contents,
                                                                    std::string name);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // In data-offset order.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const SafetensorsTensor* Find(std::string_view name) const;
  // The tensor's raw little-endian bytes, valid while this object lives. Not necessarily
  // aligned for the element type: copy (memcpy) before reading multi-byte values.
  std::string_view Data(const SafetensorsTensor& tensor) const;

  // The tensor converted to float32: F32 copied, F16/BF16/F64 converted. InvalidArgument for
  // other dtypes, naming the file and tensor.
  absl::StatusOr<std::vector<float>> ReadFloat32(const SafetensorsTensor& tensor) const;

  // Bytes per element of a safetensors dtype name; 0 for unknown names.
  static int64_t DtypeSizeBytes(std::string_view dtype);

 private:
  SafetensorsFile() = default;
  // Validates the `size` bytes at `bytes` (size >= 8) and fills data_, tensors_ and metadata_.
  absl::Status Parse(const unsigned char* bytes, uint64_t size);

  std::string path_;
  std::string contents_;  // FromBytes only
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const char* data_ = nullptr;  // start of the data section inside the mapping
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_SAFETENSORS_H_
