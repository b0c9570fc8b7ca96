// A minimal safetensors writer for tests: builds the header JSON in the same layout as the
// reference implementation (tensors laid out back to back in the given order).
#ifndef FERRY_KERNELS_TEST_SAFETENSORS_WRITER_H_
#define FERRY_KERNELS_TEST_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace ferry::kernels::testing {

struct TestTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

inline std::string FloatBytes(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// The header JSON for `tensors` laid out back to back.
inline nlohmann::json SafetensorsHeader(const std::vector<TestTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const TestTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  return header;
}

// The whole file for `header` (dumped as is) followed by `data`.
inline std::string SafetensorsBytes(const std::string& header_json, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header_json + data;
}

inline std::string SafetensorsBytes(const std::vector<TestTensor>& tensors) {
  std::string data;
  for (const TestTensor& t : tensors) data += t.bytes;
  return SafetensorsBytes(SafetensorsHeader(tensors).dump(), data);
}

inline void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
}

}  // namespace ferry::kernels::testing

#endif  // FERRY_KERNELS_TEST_SAFETENSORS_WRITER_H_
