// The `sentence-embedding` runtime (platform "ferry_sentence_embedding"): a sentence-transformers
// BERT model (all-MiniLM-L6-v2 and its family) served on the CPU.
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
// model's max_seq_length; default that).
#ifndef FERRY_KERNELS_EMBEDDING_RUNTIME_H_
#define FERRY_KERNELS_EMBEDDING_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ferry/manifest.h"
#include "ferry/runtime.h"
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

class EmbeddingRuntime : public Runtime {
 public:
  struct Options {
    std::string model_dir;
    int max_seq_length = 0;  // 0 = the model's
    std::string input_name = "text";
    std::string output_name = "embedding";
  };

  // Reads spec.model.uri (required) and spec.config; errors name the manifest file and field.
  static absl::StatusOr<Options> ParseOptions(const FunctionSpec& spec);
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

  const SentenceEncoder& encoder() const { return *encoder_; }

 private:
  EmbeddingRuntime() = default;

  Options options_;
  ModelSignature signature_;
  std::unique_ptr<SentenceEncoder> encoder_;
};

// The registry's factory for "sentence-embedding". Runs on the CPU also when context.use_gpu.
absl::StatusOr<std::unique_ptr<Runtime>> CreateEmbeddingRuntime(const FunctionSpec& spec,
                                                                const RuntimeContext& context);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_EMBEDDING_RUNTIME_H_
