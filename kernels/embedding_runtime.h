// The `sentence-embedding` runtime (platform "ferry_sentence_embedding"): a sentence-transformers
// BERT model (all-MiniLM-L6-v2 and its family) served on the CPU (OpenBLAS, FP32) or, on a replica
// placed on a GPU, by cuda::GpuBert (cuBLAS GEMMs at config.precision, fused kernels, packed
// attention, pooling on the GPU; tokenization stays on the CPU).
//
// spec.model.uri names a folder holding config.json (model_type "bert"), model.safetensors,
// vocab.txt (uncased WordPiece) and sentence_bert_config.json (max_seq_length); optional
// 1_Pooling/config.json must ask for mean pooling, optional tokenizer_config.json for
// lower-casing. Signature: input BYTES "text" [-1] (one UTF-8 sentence per row), output FP32
// "embedding" [-1, hidden] (mean pooled over the tokens, L2-normalised). Texts longer than
// max_seq_length tokens are truncated, as sentence-transformers does. A row that is not UTF-8
// fails its request with InvalidArgument (HTTP 400) naming the row and byte. Each response carries
// the parameter "tokens" (int64): the tokens its rows were embedded with.
//
// spec.config: inputName (default "text"), outputName ("embedding"), maxSeqLength (at most the
// model's max_seq_length; default that), precision (GPU only: fp32 | tf32 | fp16 | bf16, default
// fp16; the CPU path is always FP32).
#ifndef FERRY_KERNELS_EMBEDDING_RUNTIME_H_
#define FERRY_KERNELS_EMBEDDING_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cuda/gpu_bert.h"
#include "cuda/linear.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"
#include "ferry/staged_runtime.h"
#include "kernels/bert_encoder.h"
#include "kernels/wordpiece.h"

namespace ferry::kernels {

// Tokenizer + encoder of a sentence-transformers folder. Immutable after Load; thread-safe.
class SentenceEncoder {
 public:
  // Loads `model_dir` as described above. `max_seq_length` 0 means the model's own. Errors name
  // the file and what is missing or unsupported.
  static absl::StatusOr<std::unique_ptr<SentenceEncoder>> Load(const std::string& model_dir,
                                                               int max_seq_length);

  // Token ids of `text` ([CLS] … [SEP], truncated); InvalidArgument when not UTF-8.
  absl::Status Tokenize(std::string_view text, std::vector<int32_t>* ids) const {
    return tokenizer_->Encode(text, ids);
  }
  // Embeds tokenized sequences into out[sequences.size() * dim()] (blocking).
  absl::Status Embed(absl::Span<const std::vector<int32_t>> sequences, float* out) const {
    return encoder_->Embed(sequences, /*normalize=*/true, out);
  }

  int dim() const { return encoder_->config().hidden_size; }
  int max_seq_length() const { return tokenizer_->max_seq_length(); }
  const WordPieceTokenizer& tokenizer() const { return *tokenizer_; }
  const BertEncoder& encoder() const { return *encoder_; }

 private:
  SentenceEncoder() = default;
  std::unique_ptr<WordPieceTokenizer> tokenizer_;
  std::unique_ptr<BertEncoder> encoder_;
};

// On a GPU the runtime is also a ferry::StagedRuntime (staged() returns it): the agent's pipeline
// (batching/pipeline.h) tokenizes and packs batch k+1 straight into a GPU slot's pinned memory
// while batch k runs, and scatters each batch's embeddings as soon as it completes.
class EmbeddingRuntime : public Runtime, public StagedRuntime {
 public:
  struct Options {
    std::string model_dir;
    int max_seq_length = 0;  // 0 = the model's
    std::string input_name = "text";
    std::string output_name = "embedding";
    // Where the loaded tokenizer and encoder are kept for reuse (not owned), or nullptr.
    WeightCache* weight_cache = nullptr;
    // Run the encoder on GPU `gpu_index` (weights uploaded once at Create) instead of OpenBLAS.
    bool use_gpu = false;
    int gpu_index = 0;
    // GPU only (config.precision): storage and GEMM precision of the GPU encoder.
    cuda::Precision precision = cuda::Precision::kFp16;
    // GPU only: tokens per GPU pass (sizes the device buffers; larger batches run in passes) and
    // concurrent batches on the GPU (one stream and buffer set each).
    int64_t gpu_max_tokens = 16384;
    // GPU slots: batches in flight on the GPU (the pipeline's depth; Execute callers share them).
    int gpu_slots = 2;
  };

  // Reads spec.model.uri (required) and spec.config; errors name the manifest file and field.
  static absl::StatusOr<Options> ParseOptions(const FunctionSpec& spec);
  // Loads the folder (through the weight cache when given). With use_gpu, also uploads the
  // encoder to the GPU: FailedPrecondition when no GPU or cuBLAS is usable (or the build has no
  // CUDA), ResourceExhausted when its memory runs out.
  static absl::StatusOr<std::unique_ptr<EmbeddingRuntime>> Create(const Options& options);

  const ModelSignature& signature() const override { return signature_; }
  // Tokenizes every row of every request, embeds all of them in one packed pass, and scatters
  // the rows back. A request with a non-UTF-8 row fails alone. Thread-safe.
  absl::Status Execute(absl::Span<RuntimeCall> batch) override;
  // Tokens of the request: the sum over its rows of the ids Execute will embed ([CLS] and [SEP]
  // included, truncated at max_seq_length). It tokenises the rows: an exact count keeps the
  // token budget (batching.maxBatchTokens) meaningful, where a byte-length bound overestimates
  // English text about four-fold, and the contract hands Execute a const request, so there is
  // no place to keep the ids without a side table. The extra pass is cheap next to the encoder
  // (well under a microsecond per token against hundreds of CPU-microseconds to encode one)
  // and runs on the submitting thread, not the executor. A row that is not UTF-8 counts its
  // byte-length bound; Execute rejects that request anyway.
  int64_t Cost(const InferenceRequest& request) const override;

  // The staged path: `this` on a GPU, nullptr on the CPU.
  StagedRuntime* staged() override { return gpu_ != nullptr ? this : nullptr; }
  // StagedRuntime (GPU only). Slots are the GpuBert's; each stage call touches only its slot's
  // state, so different slots run on different threads at once.
  int num_slots() const override;
  // Tokenizes every request (a request with a bad row fails alone), takes a GpuBert slot and
  // packs the token ids into its pinned memory. A batch larger than one GPU pass (more than
  // gpu_max_tokens tokens: only a request that alone exceeds batching.maxBatchTokens) is kept
  // on the host and run pass by pass, synchronously, in Launch: correct, but it holds the
  // launching thread while it runs.
  absl::Status Pack(int slot, absl::Span<RuntimeCall> batch) override;
  // Enqueues copy in, encoder and copy out on the slot's stream and returns.
  absl::Status Launch(int slot, StageDone done) override;
  // Copies each request's embeddings from the slot's pinned output into its response.
  absl::Status Unpack(int slot, absl::Span<RuntimeCall> batch) override;
  void Release(int slot) override;
  DeviceStageTimes StageTimes(int slot) override;

  const SentenceEncoder& encoder() const { return *encoder_; }
  // The GPU encoder, or nullptr on the CPU path.
  cuda::GpuBert* gpu() const { return gpu_.get(); }

 private:
  EmbeddingRuntime() = default;
  // Embeds on the GPU when there is one, else on the CPU; out has sequences.size() · dim floats.
  absl::Status EmbedSequences(absl::Span<const std::vector<int32_t>> sequences, float* out) const;

  // The texts of a batch, tokenized: call c's rows are sequences[first_row[c] ..
  // first_row[c] + rows[c]); a call whose input is bad has its status set and no rows.
  struct Tokenized {
    std::vector<std::vector<int32_t>> sequences;
    std::vector<size_t> first_row;
    std::vector<size_t> rows;
  };
  void TokenizeBatch(absl::Span<RuntimeCall> batch, Tokenized* out) const;
  // Fills each OK call's response from `embeddings` ([sequences, dim], the batch's order).
  void Scatter(absl::Span<RuntimeCall> batch, const Tokenized& t, const float* embeddings) const;

  // Per pipeline slot: the GpuBert slot held between Pack and Release and the batch's tokens.
  // Only the current holder of a pipeline slot touches its entry (the slot protocol), so no
  // lock is needed; the vector's size is fixed at Create.
  struct SlotState {
    int gpu_slot = -1;
    bool one_pass = true;  // the batch fits one GPU pass: packed in Pack, run async in Launch
    bool launched_async = false;
    Tokenized tokens;
    std::vector<float> host_out;  // the result of a batch run pass by pass (see Pack)
  };
  std::vector<SlotState> slots_;

  Options options_;
  ModelSignature signature_;
  // Shared with the node's weight cache (and other functions loaded from the same folder).
  std::shared_ptr<const SentenceEncoder> encoder_;
  // This replica's copy of the weights on its GPU (device memory is per replica, not cached).
  std::unique_ptr<cuda::GpuBert> gpu_;
};

// The registry's factory for "sentence-embedding": on the GPU when context.use_gpu, with GPU
// passes of spec.batching.maxBatchTokens tokens (clamped to [512, 65536]; 16384 when it is 0) and
// max(spec.batching.pipelineDepth, spec.batching.instances) GPU slots (at most 8).
absl::StatusOr<std::unique_ptr<Runtime>> CreateEmbeddingRuntime(const FunctionSpec& spec,
                                                                const RuntimeContext& context);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_EMBEDDING_RUNTIME_H_
