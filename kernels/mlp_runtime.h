// The `mlp` runtime (platform "ferry_mlp"): a stack of dense layers loaded from a .safetensors
// file. Layer i reads tensors `layers.{i}.weight` [out, in] and `layers.{i}.bias` [out] (the
// PyTorch nn.Linear convention), i = 0..L-1; F32, F16, BF16 or F64 weights are converted to f32
// at load. y = activation_i(x W_i^T + b_i). The CPU path uses OpenBLAS; the GPU path uses
// cuda::GpuMlp (cuBLAS + fused bias/activation kernels).
//
// The FP32 host weights are immutable once loaded and, when the agent passes its WeightCache
// (RuntimeContext::weight_cache), shared through it: keyed by the file's path, size and
// modification time (WeightCache::FileKey), so a replica loaded again from the same file (scale
// to zero and back, a second function on one file) skips reading and converting it, and a
// replaced file is read afresh. Activations, names and precision are not part of the key: they
// do not change the host weights.
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
#include "ferry/weight_cache.h"

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
  // One dense layer as read from the model file, converted to FP32.
  struct Layer {
    int64_t in = 0;
    int64_t out = 0;
    std::vector<float> weight;  // [out, in], row-major
    std::vector<float> bias;    // [out]
  };
  // Every layer of one model file: what the weight cache holds (as shared_ptr<const Weights>).
  // Immutable once loaded, so any number of replicas and threads read one copy.
  struct Weights {
    std::vector<Layer> layers;
    // Host bytes of the weights and biases (what the cache charges for the entry).
    int64_t bytes() const;
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
    // The node's weight cache (not owned; outlives the runtime), or nullptr to load privately.
    WeightCache* weight_cache = nullptr;
  };

  // Reads spec.config (`activations`, `inputName`, `outputName`, `precision`) and
  // spec.model_path. Errors
  // name the manifest file and field.
  static absl::StatusOr<Options> ParseOptions(const FunctionSpec& spec);
  // Reads and checks a model file: every tensor is a layer weight or bias, layers contiguous
  // from 0, dims chain (layer i's in == layer i-1's out), bias matches out. InvalidArgument (or
  // the reader's error) naming the file.
  static absl::StatusOr<std::unique_ptr<Weights>> LoadWeights(const std::string& model_path);
  // Gets the weights (from options.weight_cache when set, else LoadWeights), checks the
  // activations against them and builds the runtime. A CPU replica keeps a reference to the
  // shared weights; a GPU replica uploads from them and drops its reference, so the host copy
  // stays only as an idle cache entry within the cache's budget. With use_gpu,
  // FailedPrecondition when no usable GPU (or a build without CUDA).
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

  // The host weights the CPU path runs (shared with the weight cache and other replicas of the
  // same file); nullptr on a GPU, whose device holds them.
  const Weights* weights() const { return weights_.get(); }
  bool on_gpu() const { return gpu_ != nullptr; }

 private:
  MlpRuntime() = default;
  // Runs every layer on the calling thread's stacked rows (OpenBLAS), leaving the result there.
  void RunCpu(int64_t total_rows) const;

  Options options_;
  std::shared_ptr<const Weights> weights_;  // CPU only; null on a GPU
  std::vector<Activation> activations_;     // one per layer
  int64_t input_dim_ = 0;
  int64_t output_dim_ = 0;
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
