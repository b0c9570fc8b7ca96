// safetensors files (8-byte header length, JSON header, tensor data), parsed from an exactly
// sized buffer so that any read past the end is caught; every accepted tensor is then read.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ferry::kernels::SafetensorsFile;
  auto file = SafetensorsFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size),
                                         "fuzz.safetensors");
  if (!file.ok()) return 0;
  uint64_t covered = 0;
  for (const auto& tensor : (*file)->tensors()) {
    if ((*file)->Find(tensor.name) == nullptr) __builtin_trap();
    const std::string_view raw = (*file)->Data(tensor);
    if (raw.size() != tensor.end - tensor.begin) __builtin_trap();
    // Touch every byte so that a bad offset is an out-of-bounds read, not a silent one.
    unsigned sum = 0;
    for (char c : raw) sum += static_cast<unsigned char>(c);
    [[maybe_unused]] static volatile unsigned sink;
    sink = sum;
    covered += raw.size();
    auto floats = (*file)->ReadFloat32(tensor);
    if (floats.ok() && static_cast<int64_t>(floats->size()) != tensor.element_count) {
      __builtin_trap();
    }
  }
  if (covered > size) __builtin_trap();
  return 0;
}
