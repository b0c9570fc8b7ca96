#include "kernels/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace ferry::kernels {
namespace {

// The reference implementation refuses headers above 100 MB; so do we, which also bounds the
// memory a hostile file can make the JSON parser allocate.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeSize {
  std::string_view name;
  int64_t size;
};
constexpr DtypeSize kDtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
};

absl::Status Bad(const std::string& path, std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("safetensors file '", path, "': ", std::string(message)));
}

absl::Status BadTensor(const std::string& path, const std::string& name, std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("safetensors file '", path, "': tensor '", name, "': ", std::string(message)));
}

// A JSON value that is a non-negative integer fitting in int64.
bool AsNonNegative(const nlohmann::json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = u;
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    *out = static_cast<uint64_t>(i);
    return true;
  }
  return false;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
  } else if (exponent == 31) {
    value = mantissa == 0 ? std::numeric_limits<float>::infinity()
                          : std::numeric_limits<float>::quiet_NaN();
  } else {
    value = std::ldexp(static_cast<float>(mantissa | 0x400), static_cast<int>(exponent) - 25);
  }
  return sign ? -value : value;
}

}  // namespace

int64_t SafetensorsFile::DtypeSizeBytes(std::string_view dtype) {
  for (const DtypeSize& d : kDtypes) {
    if (d.name == dtype) return d.size;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string message =
        absl::StrCat("safetensors file '", path, "': cannot open: ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    return absl::PermissionDeniedError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Bad(path, absl::StrCat("cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Bad(path, "not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Bad(path,
               absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps its own reference to the file
  if (map == MAP_FAILED) return Bad(path, absl::StrCat("mmap failed: ", std::strerror(map_err)));
  file->map_ = map;  // owned from here on: the destructor unmaps on every error path
  file->map_size_ = size;
  if (absl::Status s = file->Parse(static_cast<const unsigned char*>(map), size); !s.ok()) {
    return s;
  }
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(std::string contents,
                                                                            std::string name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(name);
  file->contents_ = std::move(contents);
  const uint64_t size = file->contents_.size();
  if (size < 8) {
    return Bad(file->path_,
               absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  }
  if (absl::Status s =
          file->Parse(reinterpret_cast<const unsigned char*>(file->contents_.data()), size);
      !s.ok()) {
    return s;
  }
  return file;
}

absl::Status SafetensorsFile::Parse(const unsigned char* bytes, uint64_t size) {
  const std::string& path = path_;
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > size - 8) {
    return Bad(path, absl::StrCat("header length ", header_size, " exceeds the ", size - 8,
                                  " bytes after the length field"));
  }
  if (header_size > kMaxHeaderBytes) {
    return Bad(path, absl::StrCat("header length ", header_size, " exceeds the limit of ",
                                  kMaxHeaderBytes, " bytes"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  data_ = header + header_size;
  const uint64_t data_size = size - 8 - header_size;

  nlohmann::json root;
  try {
    root = nlohmann::json::parse(header, header + header_size, /*cb=*/nullptr,
                                 /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    return Bad(path, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (root.is_discarded()) return Bad(path, "header is not valid JSON");
  if (!root.is_object()) {
    return Bad(path, absl::StrCat("header must be a JSON object, got ", root.type_name()));
  }

  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Bad(path, "__metadata__ must be an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return Bad(path, absl::StrCat("__metadata__.", key, " must be a string, got ",
                                        value.type_name()));
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) {
      return BadTensor(path, name, absl::StrCat("expected an object, got ", entry.type_name()));
    }
    for (const auto& [key, value] : entry.items()) {
      if (key != "dtype" && key != "shape" && key != "data_offsets") {
        return BadTensor(
            path, name,
            absl::StrCat("unknown field '", key, "'; expected dtype, shape and data_offsets"));
      }
    }
    SafetensorsTensor t;
    t.name = name;

    auto dtype = entry.find("dtype");
    if (dtype == entry.end() || !dtype->is_string()) {
      return BadTensor(path, name, "missing string field 'dtype'");
    }
    t.dtype = dtype->get<std::string>();
    const int64_t element_size = DtypeSizeBytes(t.dtype);
    if (element_size == 0) {
      return BadTensor(path, name,
                       absl::StrCat("unknown dtype '", t.dtype,
                                    "'; expected one of BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, "
                                    "U16, F16, BF16, I32, U32, F32, F64, I64, U64"));
    }

    auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array()) {
      return BadTensor(path, name, "missing array field 'shape'");
    }
    // Track the byte count with overflow checks: a hostile shape must not wrap around to
    // match the offsets.
    uint64_t element_count = 1;
    bool overflow = false;
    for (const nlohmann::json& dim : *shape) {
      uint64_t d = 0;
      if (!AsNonNegative(dim, &d)) {
        return BadTensor(
            path, name,
            absl::StrCat("shape entries must be non-negative integers, got ", dim.dump()));
      }
      t.shape.push_back(static_cast<int64_t>(d));
      if (d != 0 &&
          element_count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / d) {
        overflow = true;
      }
      element_count *= d;
    }
    if (overflow || element_count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) /
                                        static_cast<uint64_t>(element_size)) {
      // A zero dim makes the product 0 whatever overflowed before it.
      bool has_zero = false;
      for (int64_t d : t.shape) has_zero = has_zero || d == 0;
      if (!has_zero) return BadTensor(path, name, "shape is too large");
      element_count = 0;
    }
    t.element_count = static_cast<int64_t>(element_count);

    auto offsets = entry.find("data_offsets");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
        !AsNonNegative((*offsets)[0], &t.begin) || !AsNonNegative((*offsets)[1], &t.end)) {
      return BadTensor(path, name,
                       "'data_offsets' must be [begin, end] with non-negative integers");
    }
    if (t.begin > t.end) {
      return BadTensor(path, name,
                       absl::StrCat("data_offsets [", t.begin, ", ", t.end, "]: begin > end"));
    }
    if (t.end > data_size) {
      return BadTensor(path, name,
                       absl::StrCat("data_offsets [", t.begin, ", ", t.end,
                                    "] run past the data section of ", data_size, " bytes"));
    }
    const uint64_t want = element_count * static_cast<uint64_t>(element_size);
    if (t.end - t.begin != want) {
      return BadTensor(path, name,
                       absl::StrCat("shape [", absl::StrJoin(t.shape, ","), "] of ", t.dtype,
                                    " needs ", want, " bytes, but data_offsets [", t.begin, ", ",
                                    t.end, "] hold ", t.end - t.begin));
    }
    tensors_.push_back(std::move(t));
  }

  std::sort(tensors_.begin(), tensors_.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t expected = 0;
  for (const SafetensorsTensor& t : tensors_) {
    if (t.begin < expected) {
      return BadTensor(path, t.name,
                       absl::StrCat("data_offsets [", t.begin, ", ", t.end,
                                    "] overlap the previous tensor, which ends at ", expected));
    }
    if (t.begin > expected) {
      return BadTensor(
          path, t.name,
          absl::StrCat("data_offsets [", t.begin, ", ", t.end, "] leave a gap after byte ",
                       expected, " (tensors must cover the data section contiguously)"));
    }
    expected = t.end;
  }
  if (expected != data_size) {
    return Bad(path, absl::StrCat("tensors cover ", expected, " bytes but the data section has ",
                                  data_size, " (truncated or trailing bytes)"));
  }
  return absl::OkStatus();
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  for (const SafetensorsTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string_view SafetensorsFile::Data(const SafetensorsTensor& tensor) const {
  return std::string_view(data_ + tensor.begin, tensor.end - tensor.begin);
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadFloat32(
    const SafetensorsTensor& tensor) const {
  const std::string_view raw = Data(tensor);
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  const size_t n = static_cast<size_t>(tensor.element_count);
  std::vector<float> out(n);
  if (tensor.dtype == "F32") {
    if (n > 0) std::memcpy(out.data(), p, n * sizeof(float));
  } else if (tensor.dtype == "F16") {
    for (size_t i = 0; i < n; ++i) {
      out[i] = HalfToFloat(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
    }
  } else if (tensor.dtype == "BF16") {
    for (size_t i = 0; i < n; ++i) {
      const uint32_t bits = static_cast<uint32_t>(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
      std::memcpy(&out[i], &bits, sizeof(float));
    }
  } else if (tensor.dtype == "F64") {
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, p + 8 * i, sizeof(double));
      out[i] = static_cast<float>(d);
    }
  } else {
    return BadTensor(path_, tensor.name,
                     absl::StrCat("dtype ", tensor.dtype,
                                  " is not a float type; expected F32, "
                                  "F16, BF16 or F64"));
  }
  return out;
}

}  // namespace ferry::kernels
