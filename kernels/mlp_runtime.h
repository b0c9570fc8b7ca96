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
#include "cuda/linear.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"
#include "ferry/staged_runtime.h"

namespace ferry::kernels {

enum class Activation { kNone, kRelu, kGelu, kTanh, kSigmoid, kSoftmax };

// "none" | "relu" | "gelu" | "tanh" | "sigmoid" | "softmax".
std::string_view ActivationName(Activation a);
// Inverse of ActivationName; false for unknown names.
bool ActivationFromName(std::string_view name, Activation* out);

// On a GPU the runtime is also a ferry::StagedRuntime (staged() returns it): the agent packs
// requests straight into a GpuMlp slot's pinned memory, launches the slot asynchronously and
// scatters the results, overlapping batches (batching/pipeline.h). On the CPU it has only
// Execute.
class MlpRuntime : public Runtime, public StagedRuntime {
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
    // GPU only (config.precision: fp32 | tf32 | bf16 | fp16, default fp32): the GEMMs' precision
    // (cuda/linear.h). The CPU path is always FP32.
    cuda::Precision precision = cuda::Precision::kFp32;
    // GPU only: independent GpuMlp slots (stream, pinned and device buffers), i.e. how many
    // batches the pipeline may have in flight (spec.batching.pipelineDepth), >= 1.
    int gpu_slots = 2;
  };

  // Reads spec.config (`activations`, `inputName`, `outputName`, `precision`) and
  // spec.model_path. Errors
  // name the manifest file and field.
  static absl::StatusOr<Options> ParseOptions(const FunctionSpec& spec);
  // Loads and checks the model: every tensor is a layer weight or bias, layers contiguous from
  // 0, dims chain (layer i's in == layer i-1's out), bias matches out, activations count. With
  // use_gpu, FailedPrecondition when no usable GPU (or a build without CUDA).
  static absl::StatusOr<std::unique_ptr<MlpRuntime>> Create(const Options& options);

  const ModelSignature& signature() const override { return signature_; }
  // Stacks every request's rows into one [rows, in] matrix, runs the layers with one sgemm each
  // (OpenBLAS, or cuBLASLt on the GPU), and splits the result back per request. Thread-safe: the
  // weights are immutable and scratch buffers are per thread; a GPU batch takes a free GpuMlp
  // slot (waiting for one), so up to gpu_slots batches run at once.
  absl::Status Execute(absl::Span<RuntimeCall> batch) override;

  // The staged path: `this` on a GPU, nullptr on the CPU.
  StagedRuntime* staged() override { return gpu_ != nullptr ? this : nullptr; }
  // StagedRuntime (GPU only; ferry/staged_runtime.h). Slots are options.gpu_slots; each stage
  // call touches only its slot's state, so different slots run on different threads at once.
  int num_slots() const override;
  // Validates each request (a bad one fails alone), takes a GpuMlp slot and copies every
  // request's rows straight into its pinned input. InvalidArgument if the batch has more rows
  // than the slot (gpu_max_rows).
  absl::Status Pack(int slot, absl::Span<RuntimeCall> batch) override;
  // Enqueues H2D, the layers and D2H on the slot's stream (a batch of zero rows completes at once).
  absl::Status Launch(int slot, StageDone done) override;
  // Copies each request's rows from the slot's pinned output into its response.
  absl::Status Unpack(int slot, absl::Span<RuntimeCall> batch) override;
  void Release(int slot) override;
  DeviceStageTimes StageTimes(int slot) override;

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
  // Per pipeline slot: the GpuMlp slot it holds between Pack and Release, and where each
  // request's rows are in it (-1: the request failed its own check). Only the holder of a
  // pipeline slot touches its entry.
  struct SlotState {
    int gpu_slot = -1;
    int64_t rows = 0;
    std::vector<int64_t> offsets;  // first row of each request in the slot
    std::vector<int64_t> counts;   // rows of each request
  };
  std::vector<SlotState> slots_;
};

// The registry's factory for spec.runtime == "mlp". With context.use_gpu the model runs on that
// GPU, or creation fails with FailedPrecondition (no GPU, or a build without CUDA) rather than
// silently serving a GPU placement on the CPU.
absl::StatusOr<std::unique_ptr<Runtime>> CreateMlpRuntime(const FunctionSpec& spec,
                                                          const RuntimeContext& context);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_MLP_RUNTIME_H_
