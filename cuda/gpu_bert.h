// A BERT sentence encoder held on one GPU: the GPU path of the `sentence-embedding` runtime
// (all-MiniLM-L6-v2 and its family). Plain C++ (no CUDA headers).
//
// The same computation as the CPU encoder (kernels/bert_encoder.h): embeddings + LayerNorm, N
// post-LN layers with exact-erf GELU, mean pooling over each sequence's tokens, optional L2
// normalisation. A batch is packed, never padded: the tokens of all its sequences form one
// matrix, so the four dense layers of each transformer layer are one cuBLAS GEMM each over every
// token of the batch, and attention (cuda/bert_kernels.h) runs per (sequence, head) over that
// sequence's own tokens. Bias+GELU and bias+residual+LayerNorm are fused kernels; pooling and
// normalisation run on the GPU, so only [sequences, hidden] floats come back.
//
// Precision (the manifest's `config.precision`, cuda/linear.h's names): fp32 (plain FP32 GEMMs,
// no TF32: agrees with the CPU path to rounding), tf32 (FP32 storage, GEMM inputs rounded to TF32
// on tensor cores), fp16 or bf16 (weight matrices and embedding tables stored on the GPU in that
// format, activations too; GEMMs on tensor cores with FP32 accumulation). LayerNorm, softmax, GELU
// and pooling always compute in FP32; biases and LayerNorm parameters stay FP32.
//
// Slots: an instance owns the weights (read-only after Create) and `num_slots` independent sets of
// working memory, each with its own CUDA stream, cuBLAS handle, device activation buffers sized
// for `max_tokens` tokens, pinned host staging for the packed token ids and the pooled output,
// and timing events. Different slots may be used from different threads at once; one slot is
// used by one thread at a time. A slot runs one batch as Pack (CPU: validate and write the ids
// straight into the slot's pinned memory) → Launch (enqueue copy in, encoder, copy out; returns
// at once) → Wait → Output. That is the shape of a CPU/GPU pipeline: while slot k's batch runs on
// the GPU, another thread packs slot k+1. Embed() is the synchronous form over a free slot.
//
// In a build without CUDA, Create() returns FailedPrecondition("ferry was built without CUDA");
// the packing functions below work everywhere (they are plain CPU code).
#ifndef FERRY_CUDA_GPU_BERT_H_
#define FERRY_CUDA_GPU_BERT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "cuda/bert_kernels.h"
#include "cuda/linear.h"

namespace ferry::cuda {

// "fp32" | "fp16" | "bf16".
std::string_view BertDTypeName(BertDType t);
// false for any other name (callers report kBertPrecisionChoices).
bool BertDTypeFromName(std::string_view name, BertDType* out);

// Storage format of activations and weight matrices at a precision (tf32 stores FP32).
BertDType BertStorage(Precision p);

// ---- Packing (CPU) -----------------------------------------------------------------------------

struct BertPackLimits {
  int vocab_size = 0;
  int max_len = 0;            // longest sequence accepted (tokens)
  int64_t max_tokens = 0;     // tokens of one pass
  int64_t max_sequences = 0;  // sequences of one pass
};

// Where the sections of one packed pass lie in its int32 buffer (offsets in int32 elements):
//   ids[tokens] | positions[tokens] | offsets[num_seqs + 1] | tiles[2 · num_tiles]
// positions are each token's index within its sequence; offsets[s] is the first row of sequence
// s; a tile {s, q} covers queries q .. q + kBertAttentionTileQueries − 1 of sequence s.
struct BertPackedBatch {
  int num_seqs = 0;
  int64_t tokens = 0;
  int max_len = 0;  // longest sequence of the pass
  int num_tiles = 0;
  size_t ids = 0;
  size_t positions = 0;
  size_t offsets = 0;
  size_t tiles = 0;
  size_t total = 0;  // int32 elements used
};

// int32 elements a pass within `limits` can need (the pinned buffer's size).
size_t BertPackCapacity(const BertPackLimits& limits);

// Writes `seqs` as one pass into dst[0 .. capacity) and describes it in *out. InvalidArgument
// (naming the sequence) for an empty or too long sequence, an id outside [0, vocab_size), more
// tokens or sequences than the limits, or a buffer too small. Pure CPU; thread-safe.
absl::Status PackBertBatch(absl::Span<const std::vector<int32_t>> seqs,
                           const BertPackLimits& limits, int32_t* dst, size_t capacity,
                           BertPackedBatch* out);

// Splits `seqs` into consecutive runs [begin, end) that each fit one pass: at most max_tokens
// tokens and max_sequences sequences (a single sequence longer than max_tokens gets a run of its
// own, which PackBertBatch then refuses). Empty input gives no runs.
std::vector<std::pair<size_t, size_t>> SplitBertPasses(absl::Span<const std::vector<int32_t>> seqs,
                                                       int64_t max_tokens, int64_t max_sequences);

// ---- The encoder
// ---------------------------------------------------------------------------------

// The model as FP32 host arrays (PyTorch nn.Linear layout [out, in]; Q, K, V concatenated as in
// kernels::BertLayerWeights). Views: read only during GpuBert::Create.
struct GpuBertLayer {
  absl::Span<const float> qkv_weight, qkv_bias;            // [3H, H], [3H]
  absl::Span<const float> attn_out_weight, attn_out_bias;  // [H, H], [H]
  absl::Span<const float> attn_ln_gamma, attn_ln_beta;     // [H]
  absl::Span<const float> ffn_in_weight, ffn_in_bias;      // [I, H], [I]
  absl::Span<const float> ffn_out_weight, ffn_out_bias;    // [H, I], [H]
  absl::Span<const float> out_ln_gamma, out_ln_beta;       // [H]
};

struct GpuBertModel {
  int vocab_size = 0;
  int hidden_size = 0;
  int num_heads = 0;
  int intermediate_size = 0;
  int max_position_embeddings = 0;
  float layer_norm_eps = 1e-12f;
  absl::Span<const float> word_embeddings;      // [vocab, H]
  absl::Span<const float> position_embeddings;  // [max_position, H]
  absl::Span<const float> token_type0;          // [H]: row 0 of the token-type table
  absl::Span<const float> embedding_ln_gamma, embedding_ln_beta;  // [H]
  std::vector<GpuBertLayer> layers;
};

// Device times of one slot's last batch, microseconds (CUDA events).
struct GpuBertTimes {
  int64_t h2d_us = -1;
  int64_t compute_us = -1;
  int64_t d2h_us = -1;
};

class GpuBert {
 public:
  struct Options {
    int device = 0;  // CUDA device ordinal
    Precision precision = Precision::kFp16;
    int64_t max_tokens = 16384;    // tokens per pass (sizes the activation buffers)
    int64_t max_sequences = 4096;  // sequences per pass (sizes the output buffers)
    int num_slots = 2;
  };

  // Checks the model's shapes (InvalidArgument naming the tensor; head dim at most
  // kBertMaxHeadDim) and the options, then uploads the weights in the chosen format and creates
  // the slots. FailedPrecondition("no GPU: ...") without a usable GPU or cuBLAS,
  // InvalidArgument for a device out of range, ResourceExhausted when memory runs out. Device
  // memory ≈ weights (2 or 4 bytes each) + num_slots · max_tokens · (6H + I) · (2 or 4) bytes
  // (≈ 126 MB per slot for MiniLM at fp16 and 16,384 tokens). Blocking.
  static absl::StatusOr<std::unique_ptr<GpuBert>> Create(const Options& options,
                                                         const GpuBertModel& model);
  ~GpuBert();
  GpuBert(const GpuBert&) = delete;
  GpuBert& operator=(const GpuBert&) = delete;

  // Embeds `seqs` (token ids, [CLS] … [SEP]) into out[seqs.size() · hidden()], in passes of at
  // most max_tokens tokens, on a free slot (waits for one). Blocking; thread-safe. Errors as
  // PackBertBatch (InvalidArgument) or Internal for a CUDA/cuBLAS failure.
  absl::Status Embed(absl::Span<const std::vector<int32_t>> seqs, bool normalize, float* out);
  // Embed on a slot the caller holds (AcquireSlot, or a pipeline's own slot): every pass runs on
  // it, one after the other. Blocking; one thread per slot.
  absl::Status EmbedOnSlot(int slot, absl::Span<const std::vector<int32_t>> seqs, bool normalize,
                           float* out);

  // Takes a free slot (blocks until one is) and gives it back: Embed does, and a caller that
  // drives slots itself on an instance that others Embed on must too. Thread-safe.
  int AcquireSlot();
  void ReleaseSlot(int slot);

  // The slot protocol (see the top of the file): per slot, Pack → Launch → Wait → Output, one
  // thread at a time per slot; any thread for different slots. Pack validates and packs one pass
  // (SplitBertPasses first for more). Launch enqueues the work and returns without waiting;
  // `done` (may be null) runs on a CUDA driver thread once the output is in host memory: it must
  // not call CUDA and must not block. Wait blocks until the slot's work is done and reports its
  // errors. Output points to the slot's pinned [num_seqs, hidden] floats, valid until the slot's
  // next Pack.
  absl::Status Pack(int slot, absl::Span<const std::vector<int32_t>> seqs);
  absl::Status Launch(int slot, bool normalize, absl::AnyInvocable<void()> done);
  absl::Status Wait(int slot);
  const float* Output(int slot) const;
  int packed_sequences(int slot) const;
  int64_t packed_tokens(int slot) const;
  // Device times of the slot's last batch, after Wait.
  GpuBertTimes Times(int slot) const;

  int device() const { return options_.device; }
  Precision precision() const { return options_.precision; }
  // Storage format of activations and weight matrices: FP32 for fp32 and tf32.
  BertDType dtype() const { return BertStorage(options_.precision); }
  int hidden() const { return hidden_; }
  int num_slots() const { return options_.num_slots; }
  int64_t max_tokens() const { return options_.max_tokens; }
  int64_t max_sequences() const { return options_.max_sequences; }
  const BertPackLimits& limits() const { return limits_; }
  // Device memory the weights take.
  size_t weight_bytes() const { return weight_bytes_; }

 private:
  struct Impl;  // device weights, slots; defined in gpu_bert.cc
  GpuBert() = default;
  bool HasFreeSlot() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Options options_;
  int hidden_ = 0;
  BertPackLimits limits_;
  size_t weight_bytes_ = 0;
  std::unique_ptr<Impl> impl_;
  absl::Mutex mu_;
  std::vector<bool> busy_ ABSL_GUARDED_BY(mu_);  // per slot: taken by AcquireSlot
};

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_GPU_BERT_H_
