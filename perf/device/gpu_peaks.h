// Datasheet peak throughput of the GPUs the device benchmarks report a fraction of peak for.
#ifndef FERRY_PERF_DEVICE_GPU_PEAKS_H_
#define FERRY_PERF_DEVICE_GPU_PEAKS_H_

#include <string>

#include "cuda/linear.h"

namespace ferry::perf {

// Dense (no sparsity) peak TFLOP/s by precision: fp32 (CUDA cores), tf32, bf16, fp16 (tensor
// cores, FP32 accumulate), from NVIDIA's datasheets, for the device `gpu_name` (matched by
// substring, most specific first). 0 for a card not in the table.
inline double PeakTflops(const std::string& gpu_name, cuda::Precision p) {
  struct Peak {
    const char* name_part;
    double fp32, tf32, bf16, fp16;
  };
  static constexpr Peak kPeaks[] = {
      {"H200", 67, 494.7, 989.4, 989.4}, {"H100 PCIe", 51, 378, 756, 756},
      {"H100 NVL", 60, 417.5, 835, 835}, {"H100", 67, 494.7, 989.4, 989.4},
      {"A100", 19.5, 156, 312, 312},     {"L40S", 91.6, 183, 362, 362},
      {"L4", 30.3, 60, 121, 121},        {"A10", 31.2, 62.5, 125, 125},
  };
  for (const Peak& k : kPeaks) {
    if (gpu_name.find(k.name_part) == std::string::npos) continue;
    switch (p) {
      case cuda::Precision::kFp32:
        return k.fp32;
      case cuda::Precision::kTf32:
        return k.tf32;
      case cuda::Precision::kBf16:
        return k.bf16;
      case cuda::Precision::kFp16:
        return k.fp16;
    }
  }
  return 0;
}

}  // namespace ferry::perf

#endif  // FERRY_PERF_DEVICE_GPU_PEAKS_H_
