// Dense layers on one GPU at a chosen precision, through cuBLASLt, as plain C++ (no CUDA headers).
//
//   y = act(x · Wᵀ + b)   per layer, row-major x [rows, in], W [out, in] (nn.Linear), y [rows, out]
//
// Precision (the manifest's `config.precision`):
//   fp32  plain FP32 GEMM (no tensor-core rounding): agrees with a CPU FP32 reference to rounding.
//   tf32  FP32 storage, tensor cores with inputs rounded to TF32 (10-bit mantissa), FP32
//   accumulate. bf16  weights stored on the GPU as bfloat16 (half the bytes; never widened),
//   activations
//         converted to bfloat16 before each GEMM, FP32 accumulation and FP32 output.
//   fp16  as bf16 with IEEE half (more mantissa, less range: |values| must stay below 65504).
// Bias, and ReLU when the layer has it, run in the GEMM's epilogue (one kernel, no extra pass over
// y); GELU (exact erf form, unlike cuBLASLt's tanh approximation), tanh, sigmoid and the row
// softmax run as one extra kernel after it. Layer outputs are FP32 on the device.
//
// Ownership and threads: a LinearStack owns the device weights and the cuBLASLt handle; it is
// immutable after Create and may be shared by any number of threads. Each concurrent user needs its
// own LinearScratch (activation buffers and the fixed GEMM workspace) and its own stream; Enqueue
// never waits for the GPU. The host copies of the weights are released by Create (the caller's
// vectors are consumed), so only the device copy remains.
//
// In a build without CUDA, Create returns FailedPrecondition("ferry was built without CUDA");
// the precision names and tolerances work everywhere.
#ifndef FERRY_CUDA_LINEAR_H_
#define FERRY_CUDA_LINEAR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/kernels.h"

namespace ferry::cuda {

enum class Precision { kFp32, kTf32, kBf16, kFp16 };

// "fp32" | "tf32" | "bf16" | "fp16".
std::string_view PrecisionName(Precision p);
// false for any other name (callers report kPrecisionChoices).
bool PrecisionFromName(std::string_view name, Precision* out);
inline constexpr std::string_view kPrecisionChoices = "fp32, tf32, bf16 or fp16";

// The error bound of one layer at `p` against an exact (double) reference, for one output
// y = Σ w_i·x_i + b:  |got − want| <= atol + rtol · (Σ |w_i·x_i| + |b|).
// Rounding each of w and x to the storage format (relative error u: 2^-24 fp32, 2^-11 fp16,
// 2^-9 bf16, and 2^-10 tf32, whose inputs the tensor cores may truncate rather than round)
// perturbs each product by at most ≈2u of its magnitude; FP32 accumulation of
// `k` terms adds up to k·2^-24 in the worst case. Activations are 1-Lipschitz (or less), so the
// bound carries through them.
struct Tolerance {
  double atol = 0;
  double rtol = 0;
};
Tolerance PrecisionTolerance(Precision p, int64_t k);

// One layer as read from the model. `weight` and `bias` are consumed by LinearStack::Create.
struct LinearSpec {
  std::vector<float> weight;  // [out, in], row-major
  std::vector<float> bias;    // [out], or empty for no bias
  int64_t in = 0;
  int64_t out = 0;
  Activation act = Activation::kNone;
  bool softmax = false;  // row softmax after the activation
};

// Checks a layer chain before any GPU work: non-empty, positive sizes, weight/bias lengths, each
// layer's `in` == the previous `out`, sizes within cuBLAS's int range. InvalidArgument naming the
// layer.
absl::Status ValidateLinearChain(const std::vector<LinearSpec>& layers);

// Per-user working memory of a LinearStack: two FP32 activation buffers for `max_rows` rows of the
// widest layer, a half-precision input buffer (bf16/fp16 only) and the fixed cuBLASLt workspace
// (kGemmWorkspaceBytes), so no call allocates and a CUDA graph captured over it stays valid.
// Owned by its creator; freed (after its GPU work: the destructor synchronises the device) by
// its destructor. Not thread-safe: one stream uses it at a time.
class LinearScratch {
 public:
  ~LinearScratch();
  LinearScratch(const LinearScratch&) = delete;
  LinearScratch& operator=(const LinearScratch&) = delete;
  int64_t max_rows() const { return max_rows_; }
  size_t device_bytes() const { return device_bytes_; }

 private:
  friend class LinearStack;
  LinearScratch() = default;
  int device_ = 0;
  int64_t max_rows_ = 0;
  size_t device_bytes_ = 0;
  float* act_[2] = {nullptr, nullptr};
  void* half_ = nullptr;
  void* workspace_ = nullptr;
};

// cuBLASLt workspace per scratch: 32 MiB is what NVIDIA recommends for Hopper (4 MiB suffices on
// Ampere); a fixed size lets every call, and every graph replay, use the same buffer.
inline constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;

class LinearStack {
 public:
  struct Options {
    int device = 0;  // CUDA device ordinal
    Precision precision = Precision::kFp32;
  };

  // Validates (ValidateLinearChain), then uploads the weights to `options.device` in the storage
  // format of the precision and releases the host vectors. Runs one kernel first, so a GPU
  // whose architecture this build has no kernel image for fails here (FailedPrecondition naming
  // the compute capability), not at the first request. FailedPrecondition("no GPU: ...") without
  // a usable GPU or cuBLASLt, ResourceExhausted when device memory runs out.
  static absl::StatusOr<std::unique_ptr<LinearStack>> Create(const Options& options,
                                                             std::vector<LinearSpec> layers);
  ~LinearStack();
  LinearStack(const LinearStack&) = delete;
  LinearStack& operator=(const LinearStack&) = delete;

  // Working memory for batches of up to `max_rows` (>= 1) rows. Thread-safe.
  absl::StatusOr<std::unique_ptr<LinearScratch>> CreateScratch(int64_t max_rows) const;

  // Enqueues the whole stack on `stream` (a cudaStream_t on this stack's device; the calling
  // thread's current device is set to it): d_in is FP32 [rows, input_dim()] and d_out FP32
  // [rows, output_dim()], both device memory owned by the caller and distinct from the scratch.
  // 1 <= rows <= scratch.max_rows(). Does not wait: the output is ready when the stream reaches
  // this point. InvalidArgument for bad arguments; Internal for a launch or cuBLASLt failure
  // (asynchronous faults surface at the caller's next synchronisation). Thread-safe with
  // distinct scratches; capturable into a CUDA graph (no allocation, no synchronisation).
  absl::Status Enqueue(const float* d_in, int64_t rows, float* d_out, LinearScratch& scratch,
                       cudaStream_t stream) const;

  int device() const { return device_; }
  Precision precision() const { return precision_; }
  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return output_dim_; }
  int64_t num_layers() const { return num_layers_; }
  // Device memory the weights and biases take.
  size_t weight_bytes() const { return weight_bytes_; }
  // Floating-point operations of one row through every GEMM (2·in·out per layer).
  int64_t flops_per_row() const { return flops_per_row_; }

 private:
  struct Impl;  // cuBLASLt handle, device layers, plan cache; defined in linear.cc
  LinearStack() = default;

  int device_ = 0;
  Precision precision_ = Precision::kFp32;
  int64_t input_dim_ = 0;
  int64_t output_dim_ = 0;
  int64_t num_layers_ = 0;
  int64_t widest_ = 0;
  size_t weight_bytes_ = 0;
  int64_t flops_per_row_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_LINEAR_H_
