// gpu-scale: a GPU function. y = scale * x + offset for FP32 rows of any width, computed by its
// own CUDA kernel (scale_kernel.cu) on the stream the agent hands it. Config: {"scale": S,
// "offset": B} (defaults 2 and 0). The output's width follows the input's, so Execute
// allocates it (device memory, like the input).
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ferry/function.hpp"
#include "gpu_scale/scale_kernel.h"
#include "nlohmann/json.hpp"

namespace {

class GpuScale {
 public:
  GpuScale(std::string_view config_json, const ferry::function::Device& device)
      : stream_(device.cuda_stream) {
    if (device.kind != FERRY_DEVICE_GPU) throw std::invalid_argument("gpu-scale needs a GPU");
    const nlohmann::json config = nlohmann::json::parse(config_json);
    if (!config.is_object()) throw std::invalid_argument("config: expected an object");
    for (const auto& [key, value] : config.items()) {
      if ((key != "scale" && key != "offset") || !value.is_number()) {
        throw std::invalid_argument("config." + key + ": expected scale or offset, as a number");
      }
      (key == "scale" ? scale_ : offset_) = value.get<float>();
    }
  }

  void Execute(ferry::function::Batch& batch) {
    const ferry::function::Input x = batch.input(0);
    const int64_t count = x.dim(0) * x.dim(1);
    auto* y = static_cast<float*>(
        batch.Allocate(0, {x.dim(0), x.dim(1)}, static_cast<uint64_t>(count) * sizeof(float)));
    const std::string error = LaunchScale(y, x.data<float>(), count, scale_, offset_, stream_);
    if (!error.empty()) throw std::runtime_error(error);
  }

 private:
  void* stream_;
  float scale_ = 2.0f;
  float offset_ = 0.0f;
};

}  // namespace

FERRY_DEFINE_FUNCTION(GpuScale, "gpu-scale", FERRY_DEVICE_GPU, {{"x", "FP32", {-1, -1}}},
                      {{"y", "FP32", {-1, -1}}}, "1.0.0");
