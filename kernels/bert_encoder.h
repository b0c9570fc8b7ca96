// A BERT encoder for sentence embeddings on the CPU (all-MiniLM-L6-v2 and other BERT-family
// sentence-transformers models): embeddings + LayerNorm, N post-LN transformer layers (exact-erf
// GELU), masked mean pooling over the tokens, then optional L2 normalisation.
//
// A batch is packed, not padded: the token rows of every sequence are stacked into one matrix, so
// the dense layers (QKV, attention output, FFN; FP32 with weights packed once at load,
// kernels/cpu_gemm.h) do no work on padding, and attention runs per sequence over its own rows
// (which is what BERT's attention mask computes).
// Each product's bias (and the FFN's GELU) is applied in the product's store; residual+LayerNorm
// is one vectorised kernel (kernels/cpu_gemm.h).
#ifndef FERRY_KERNELS_BERT_ENCODER_H_
#define FERRY_KERNELS_BERT_ENCODER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cpu_gemm.h"
#include "nlohmann/json.hpp"

namespace ferry::kernels {

struct BertConfig {
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int intermediate_size = 0;
  int max_position_embeddings = 0;
  int type_vocab_size = 0;
  float layer_norm_eps = 1e-12f;

  // InvalidArgument naming the field when a size is not positive or hidden_size is not a
  // multiple of num_heads.
  absl::Status Validate() const;
};

// Reads a Hugging Face BERT config.json: model_type must be "bert", hidden_act "gelu",
// position_embedding_type (if present) "absolute"; every size present. Errors name the file and
// the key.
absl::StatusOr<BertConfig> ReadBertConfig(const std::string& path);

// Weights in FP32, PyTorch nn.Linear layout ([out, in]) with Q, K and V concatenated.
struct BertLayerWeights {
  std::vector<float> qkv_weight;                      // [3H, H]: query rows, then key, then value
  std::vector<float> qkv_bias;                        // [3H]
  std::vector<float> attn_out_weight, attn_out_bias;  // [H, H], [H]
  std::vector<float> attn_ln_gamma, attn_ln_beta;     // [H]
  std::vector<float> ffn_in_weight, ffn_in_bias;      // [I, H], [I]
  std::vector<float> ffn_out_weight, ffn_out_bias;    // [H, I], [H]
  std::vector<float> out_ln_gamma, out_ln_beta;       // [H]
};

struct BertWeights {
  std::vector<float> word_embeddings;                        // [vocab, H]
  std::vector<float> position_embeddings;                    // [max_position, H]
  std::vector<float> token_type_embeddings;                  // [type_vocab, H]; type 0 is used
  std::vector<float> embedding_ln_gamma, embedding_ln_beta;  // [H]
  std::vector<BertLayerWeights> layers;
};

// Loads every tensor of a BERT encoder (names as HF BertModel saves them, with or without a
// "bert." prefix) from a safetensors file, converting to FP32. NotFound / InvalidArgument naming
// the file and the missing or misshapen tensor.
absl::StatusOr<BertWeights> LoadBertWeights(const std::string& safetensors_path,
                                            const BertConfig& config);

class BertEncoder {
 public:
  // Takes the weights; InvalidArgument when a tensor's size does not match `config`.
  static absl::StatusOr<std::unique_ptr<BertEncoder>> Create(const BertConfig& config,
                                                             BertWeights weights);

  // Embeds each sequence of token ids (already [CLS] … [SEP]; 1 to max_position_embeddings ids,
  // each in [0, vocab_size)) into `out` ([sequences.size(), hidden_size], row-major), mean pooled
  // over all of the sequence's tokens and L2-normalised when `normalize`. InvalidArgument for a
  // bad id or length. Blocking and thread-safe: working memory is per call (reused per thread),
  // so several executor threads may embed at once.
  absl::Status Embed(absl::Span<const std::vector<int32_t>> sequences, bool normalize,
                     float* out) const;

  const BertConfig& config() const { return config_; }
  // The FP32 weights (for uploading them to a GPU: cuda/gpu_bert.h); immutable, owned here.
  const BertWeights& weights() const { return weights_; }
  // Floating-point operations (2 per multiply-add) per token of a `length`-token sequence, for
  // throughput reports.
  double FlopsPerToken(int length) const;

 private:
  BertEncoder() = default;
  // One pass over sequences whose tokens are packed into one matrix (Embed bounds its size).
  absl::Status EmbedPacked(absl::Span<const std::vector<int32_t>> sequences, bool normalize,
                           float* out) const;

  BertConfig config_;
  BertWeights weights_;
  // Each layer's dense weights packed once at Create for the CPU kernels (kernels/cpu_gemm.h),
  // next to weights_ (which the GPU path uploads): about the layers' size again in memory.
  struct PackedLayer {
    PackedLinear qkv, attn_out, ffn_in, ffn_out;
  };
  std::vector<PackedLayer> packed_;
};

// The JSON object in the file at `path`: NotFound when it cannot be read, InvalidArgument when it
// is not a JSON object. Shared by the model-folder readers (config.json and its neighbours).
absl::StatusOr<nlohmann::json> ReadJsonObjectFile(const std::string& path);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_BERT_ENCODER_H_
