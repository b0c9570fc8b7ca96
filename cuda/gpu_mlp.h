// A multi-layer perceptron held on one GPU: the GPU path of the `mlp` runtime.
//
// Plain C++ (no CUDA headers). The weights are uploaded once by Create() into a cuda::LinearStack
// (cuda/linear.h: cuBLASLt GEMMs at the chosen precision, bias and ReLU fused in the epilogue),
// shared by every slot. A slot is one independent set of per-batch resources: a non-blocking
// stream, pinned host input and output buffers, device input/output buffers, the stack's scratch
// (activations + fixed GEMM workspace), timing events and, when enabled, one CUDA graph per
// batch-size bucket (cuda/graph_cache.h). Batches in different slots overlap on the GPU and with
// the CPU work around them (batching/pipeline.h drives them through ferry::StagedRuntime).
//
// Slot protocol (the staged path):
//   slot = AcquireSlot()          blocks until a slot is free
//   write rows into slot_input(slot)          pinned memory: the only host-side copy
//   Launch(slot, rows, done)      H2D, layers, D2H on the slot's stream; returns at once; `done`
//                                 runs from a CUDA stream callback when the output is in
//                                 slot_output(slot) (or with the device error)
//   read slot_output(slot), SlotTimes(slot)
//   ReleaseSlot(slot)             after a failure, first waits for the slot's stream
// Forward() does all of this for one caller (blocking; no spinning: it sleeps until the callback).
//
// Ownership: the instance owns the stack, every slot's buffers, streams, events and graphs, and
// frees them in its destructor (after waiting for each slot's stream). Thread-safety: AcquireSlot,
// ReleaseSlot and Forward may be called from any thread; a slot's other methods only by the
// thread that holds it (one batch per slot at a time). Units: rows of input_dim()/output_dim()
// floats, times in microseconds.
//
// In a build without CUDA, Create() returns FailedPrecondition("ferry was built without CUDA").
#ifndef FERRY_CUDA_GPU_MLP_H_
#define FERRY_CUDA_GPU_MLP_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cuda/kernels.h"
#include "cuda/linear.h"

namespace ferry::cuda {

class GpuMlp {
 public:
  struct Layer {
    std::vector<float> weight;  // [out, in], row-major (PyTorch nn.Linear layout)
    std::vector<float> bias;    // [out], or empty for no bias
    int64_t in = 0;
    int64_t out = 0;
    Activation act = Activation::kNone;
    bool softmax = false;  // row softmax after the activation
  };

  struct Options {
    int device = 0;        // CUDA device ordinal
    int64_t max_rows = 0;  // rows per slot (> 0); larger Forward batches run in chunks
    int slots = 1;         // independent slots, >= 1 (the pipeline depth)
    Precision precision = Precision::kFp32;
    // Replay each batch as the CUDA graph of its size bucket (rows padded up to a power of two
    // or max_rows), captured for every bucket at Create. If capturing fails, the slots enqueue
    // the layers directly instead (graphs_enabled() says which).
    bool graphs = true;
  };

  // Device-measured times of a slot's last batch, microseconds (CUDA events on its stream).
  struct SlotTimes {
    int64_t h2d_us = 0;
    int64_t compute_us = 0;
    int64_t d2h_us = 0;
  };

  // Called once per successful Launch, from a CUDA driver thread (no CUDA call allowed there):
  // OK, or Internal with the CUDA error code of the failed stream.
  using Done = absl::AnyInvocable<void(absl::Status)>;

  // Validates the layer chain (InvalidArgument, before touching the GPU) and the options, then
  // uploads the weights to GPU `options.device` (the host vectors are consumed and freed) and
  // allocates every slot. FailedPrecondition("no GPU: ...") when no GPU is usable,
  // InvalidArgument for a device index out of range, ResourceExhausted when memory runs out.
  // Memory: the weights at the precision's width, plus per slot ≈ 4 bytes · max_rows · (2 ·
  // widest layer + input + output) on the device (+ the 32 MiB GEMM workspace) and 4 bytes ·
  // max_rows · (input + output) pinned on the host.
  static absl::StatusOr<std::unique_ptr<GpuMlp>> Create(const Options& options,
                                                        std::vector<Layer> layers);
  // One slot, FP32, graphs on.
  static absl::StatusOr<std::unique_ptr<GpuMlp>> Create(int device, std::vector<Layer> layers,
                                                        int64_t max_rows);

  ~GpuMlp();
  GpuMlp(const GpuMlp&) = delete;
  GpuMlp& operator=(const GpuMlp&) = delete;

  // host_in: rows × input_dim() floats, row-major; host_out: rows × output_dim() floats, written
  // on success. Both are ordinary host memory owned by the caller. Takes a free slot (waits for
  // one), runs the batch through it in chunks of max_rows() and sleeps until each chunk's
  // callback; up to num_slots() calls run at once. rows == 0 is a no-op. Errors: InvalidArgument
  // for rows < 0 or null pointers with rows > 0, Internal for a CUDA failure.
  absl::Status Forward(const float* host_in, int64_t rows, float* host_out);

  // --- The staged path (see the slot protocol above). ---
  // Blocks until a slot is free and returns it; the caller holds it until ReleaseSlot.
  int AcquireSlot();
  // Frees a held slot. If its last batch failed (or was never waited for), first waits for its
  // stream, so the next user never shares the buffers with unfinished work.
  void ReleaseSlot(int slot);
  // Pinned host staging buffers of a held slot: max_rows() × input_dim() and max_rows() ×
  // output_dim() floats.
  float* slot_input(int slot) const;
  const float* slot_output(int slot) const;
  // Enqueues the held slot's batch of `rows` (1..max_rows()) rows from slot_input() and returns
  // without waiting. On OK, `done` is called exactly once when slot_output() holds the result (or
  // the stream failed). On error, `done` is not called and the stream has been waited for.
  absl::Status Launch(int slot, int64_t rows, Done done);
  // The device times of the held slot's last completed batch.
  absl::StatusOr<SlotTimes> LastTimes(int slot) const;

  int device() const { return device_; }
  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return output_dim_; }
  int64_t max_rows() const { return max_rows_; }
  int64_t num_layers() const { return num_layers_; }
  int num_slots() const { return num_slots_; }
  Precision precision() const { return precision_; }
  bool graphs_enabled() const { return graphs_enabled_; }

 private:
  struct Slot;  // CUDA handles and buffers; defined in gpu_mlp.cc
  struct Impl;

  GpuMlp(const Options& options, int64_t input_dim, int64_t output_dim, int64_t num_layers,
         std::unique_ptr<Impl> impl);

  const int device_;
  const int64_t input_dim_;
  const int64_t output_dim_;
  const int64_t max_rows_;
  const int64_t num_layers_;
  const int num_slots_;
  const Precision precision_;
  bool graphs_enabled_ = false;
  std::unique_ptr<Impl> impl_;  // immutable after Create except per-slot state (see Slot)

  absl::Mutex mu_;
  absl::CondVar slot_freed_;
  std::vector<int> free_slots_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_GPU_MLP_H_
