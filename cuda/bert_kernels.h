// CUDA kernels of the GPU BERT encoder (cuda/gpu_bert.h), callable from plain C++: this header
// includes no CUDA header.
//
// Activations and weight matrices are stored in one of three formats (BertDType): FP32, IEEE half
// or bfloat16; every kernel computes in FP32 (sums, LayerNorm statistics, softmax, GELU) and
// rounds once when it stores. Small per-feature vectors (biases, LayerNorm gamma/beta) are always
// FP32. Typed buffers are passed as `void*` with their BertDType, as in cuda/kernels.h.
//
// A batch is PACKED: the token rows of all sequences are stacked into one [tokens, hidden] matrix
// without padding; `offsets` (int32, device memory, num_seqs + 1 entries, offsets[0] == 0,
// non-decreasing, offsets[num_seqs] == tokens) says where each sequence starts.
//
// Rules shared by every launcher (as in cuda/kernels.h): work is enqueued on `stream` and the
// launcher returns without waiting; pointers are DEVICE pointers owned by the caller, kept alive
// until the stream has run the work; InvalidArgument for bad shapes or null pointers, Internal
// when the launch fails (cudaGetLastError); faults inside a kernel surface at the next
// synchronisation. Launchers hold no state and are thread-safe; work on shared buffers must be
// ordered by the caller (one stream, or events). Nothing here allocates or synchronises, so every
// launcher can be captured into a CUDA graph.
//
// Defined only in builds with CUDA (FERRY_HAVE_CUDA): call them only from code compiled under it.
#ifndef FERRY_CUDA_BERT_KERNELS_H_
#define FERRY_CUDA_BERT_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

// Identical to the typedef in CUDA's driver_types.h (see cuda/kernels.h).
typedef struct CUstream_st* cudaStream_t;

namespace ferry::cuda {

// Storage format of activations and weight matrices.
enum class BertDType {
  kFp32,
  kFp16,  // IEEE binary16: 11-bit mantissa, |x| < 65504
  kBf16,  // bfloat16: FP32's range, 8-bit mantissa
};

// Bytes of one element.
inline constexpr size_t BertDTypeSize(BertDType t) { return t == BertDType::kFp32 ? 4 : 2; }

// The largest head dimension and sequence length LaunchPackedAttention handles. Keys and values of
// one (sequence, head) sit in shared memory as FP32: about 139 KiB at 512 tokens × 32 dims,
// which sm_80 (164 KiB per block) and sm_90 (227 KiB) both allow.
inline constexpr int kBertMaxHeadDim = 64;
inline constexpr int kBertMaxAttentionLength = 512;
// Shared memory (bytes) the attention kernel takes for sequences of up to `max_len` tokens and a
// head dimension of `head_dim`.
inline constexpr int kBertAttentionWarps = 4;
inline constexpr size_t PackedAttentionSharedBytes(int max_len, int head_dim) {
  // keys [len][dim+1] (padded against bank conflicts), values [len][dim], and per warp one query
  // [dim] and one row of probabilities [len].
  return sizeof(float) * (static_cast<size_t>(max_len) * (2 * head_dim + 1) +
                          static_cast<size_t>(kBertAttentionWarps) * (head_dim + max_len));
}

// out[i] = in[i] converted to `type` (round to nearest even; beyond FP16's range: ±inf). `out`
// holds n elements of `type`; for kFp32 it is a plain copy. n == 0 enqueues nothing.
absl::Status LaunchConvertFromFloat(const float* in, void* out, int64_t n, BertDType type,
                                    cudaStream_t stream);
// out[i] = in[i] widened to FP32 (exact).
absl::Status LaunchConvertToFloat(const void* in, float* out, int64_t n, BertDType type,
                                  cudaStream_t stream);

// Embeddings then LayerNorm, one row per token:
//   out[t] = LN(word[ids[t]] + position[positions[t]] + token_type0) · gamma + beta
// ids, positions: int32 [tokens]; word [vocab, hidden], position [max_pos, hidden], token_type0
// [hidden] in `type`; gamma, beta FP32 [hidden]; out [tokens, hidden] in `type`. Ids and
// positions must be in range (the caller validates them on the host). tokens == 0 enqueues
// nothing.
absl::Status LaunchEmbeddingLayerNorm(const int32_t* ids, const int32_t* positions,
                                      const void* word, const void* position,
                                      const void* token_type0, const float* gamma,
                                      const float* beta, int64_t tokens, int hidden, float eps,
                                      void* out, BertDType type, cudaStream_t stream);

// y[r][c] = GELU(y[r][c] + bias[c]) in place, exact form 0.5·x·(1 + erf(x/√2)). bias FP32 [cols].
absl::Status LaunchBiasGelu(void* y, const float* bias, int64_t rows, int cols, BertDType type,
                            cudaStream_t stream);

// out[r] = LN(y[r] + bias + residual[r]) · gamma + beta, row by row over `cols` columns. `out`
// may be `residual` (a row is read whole before it is written); `y` is not modified.
absl::Status LaunchBiasResidualLayerNorm(const void* y, const float* bias, const void* residual,
                                         const float* gamma, const float* beta, int64_t rows,
                                         int cols, float eps, void* out, BertDType type,
                                         cudaStream_t stream);

// Multi-head self-attention over packed sequences, each attending only to its own tokens (what
// BERT's padding mask computes, without the padding):
//   for each sequence s, head h, query token i of s:
//     ctx[i, h·d : (h+1)·d] = softmax_j((q_i · k_j) / √d) · v_j   over the tokens j of s
// where q, k, v are read from qkv [tokens, 3·heads·d] (query block, then key, then value, each
// head-major) plus qkv_bias FP32 [3·heads·d] (may be null: no bias). ctx [tokens, heads·d].
// head_dim in [1, kBertMaxHeadDim]; max_len >= the longest sequence, <= kBertMaxAttentionLength
// (it sizes the shared memory). Work items: `tiles` (int32 pairs {sequence, first query}, device
// memory, num_tiles of them) each cover up to kBertAttentionTileQueries queries of one sequence
// for every head; PackBertBatch (cuda/gpu_bert.h) builds them. Head dimension 32 (MiniLM) runs a
// register-blocked variant (four queries per warp at once) where its shared memory fits the GPU
// (always up to 256 tokens); other dimensions, and 512 tokens on sm_80, the general kernel.
inline constexpr int kBertAttentionTileQueries = 32;
// `allow_fast` false forces the general kernel (tests compare the two).
absl::Status LaunchPackedAttention(const void* qkv, const float* qkv_bias, const int32_t* offsets,
                                   const int32_t* tiles, int num_tiles, int heads, int head_dim,
                                   int max_len, void* ctx, BertDType type, cudaStream_t stream,
                                   bool allow_fast = true);

// Mean over each sequence's token rows of x [tokens, hidden] (`type`), then, when `normalize`,
// division by max(‖mean‖₂, 1e-12): out FP32 [num_seqs, hidden]. A sequence with no tokens gives
// a zero row. num_seqs == 0 enqueues nothing.
absl::Status LaunchMeanPoolNormalize(const void* x, const int32_t* offsets, int num_seqs,
                                     int hidden, bool normalize, float* out, BertDType type,
                                     cudaStream_t stream);

}  // namespace ferry::cuda

#endif  // FERRY_CUDA_BERT_KERNELS_H_
