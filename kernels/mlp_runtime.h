// The `mlp` runtime (platform "ferry_mlp"): a stack of dense layers loaded from a .safetensors
// file. Layer i reads tensors `layers.{i}.weight` [out, in] and `layers.{i}.bias` [out] (the
// PyTorch nn.Linear convention), i = 0..L-1; F32, F16, BF16 or F64 weights are converted to f32
// at load. y = activation_i(x W_i^T + b_i). The CPU path uses OpenBLAS; the GPU path uses
// cuda::GpuMlp (cuBLAS + fused bias/activation kernels).
#ifndef FERRY_KERNELS_MLP_RUNTIME_H_
#define FERRY_KERNELS_MLP_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cuda/gpu_mlp.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"

namespace ferry::kernels {

enum class Activation { kNone, kRelu, kGelu, kTanh, kSigmoid, kSoftmax };

// "none" | "relu" | "gelu" | "tanh" | "sigmoid" | "softmax".
std::string_view ActivationName(Activation a);
// Inverse of ActivationName; false for unknown names.
bool ActivationFromName(std::string_view name, Activation* out);

class MlpRuntime : public Runtime {
 public:
  struct Layer {
    int64_t in = 0;
    int64_t out = 0;
    std::vector<float> weight;  // [out, in], row-major
    std::vector<float> bias;    // [out]
    Activation activation = Activation::kNone;
  };

  struct Options {
    std::string model_path;  // .safetensors file
    // One per layer; empty = relu between layers and none after the last. gelu is the exact
    // (erf) form; softmax is over each row and allowed only on the last layer.
    std::vector<Activation> activations;
    std::string input_name = "input";
    std::string output_name = "output";
    // Run on GPU `gpu_index` (weights uploaded once at Create) instead of OpenBLAS.
    bool use_gpu = false;
    int gpu_index = 0;
    // GPU only: rows staged per transfer (spec.batching.maxBatchSize); larger batches run in
    // chunks.
    int64_t gpu_max_rows = 256;
  };

  // Reads spec.config (`activations`, `inputName`, `outputName`) and spec.model_path. Errors
  // name the manifest file and field.
  static absl::StatusOr<Options> ParseOptions(const FunctionSpec& spec);
  // Loads and checks the model: every tensor is a layer weight or bias, layers contiguous from
  // 0, dims chain (layer i's in == layer i-1's out), bias matches out, activations count. With
  // use_gpu, FailedPrecondition when no usable GPU (or a build without CUDA).
  static absl::StatusOr<std::unique_ptr<MlpRuntime>> Create(const Options& options);

  const ModelSignature& signature() const override { return signature_; }
  // Stacks every request's rows into one [rows, in] matrix, runs the layers with one sgemm each
  // (OpenBLAS, or cuBLAS on the GPU), and splits the result back per request. Thread-safe: the
  // weights are immutable and scratch buffers are per thread; GPU batches of one runtime are
  // serialised on its stream.
  absl::Status Execute(absl::Span<RuntimeCall> batch) override;

  const std::vector<Layer>& layers() const { return layers_; }
  bool on_gpu() const { return gpu_ != nullptr; }

 private:
  MlpRuntime() = default;
  // Runs every layer on the calling thread's stacked rows (OpenBLAS), leaving the result there.
  void RunCpu(int64_t total_rows) const;

  Options options_;
  std::vector<Layer> layers_;
  ModelSignature signature_;
  std::unique_ptr<cuda::GpuMlp> gpu_;  // set when running on a GPU
};

// The registry's factory for spec.runtime == "mlp". With context.use_gpu the model runs on that
// GPU, or creation fails with FailedPrecondition (no GPU, or a build without CUDA) rather than
// silently serving a GPU placement on the CPU.
absl::StatusOr<std::unique_ptr<Runtime>> CreateMlpRuntime(const FunctionSpec& spec,
                                                          const RuntimeContext& context);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_MLP_RUNTIME_H_
