#include "cuda/gpu_bert.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cuda/bert_kernels.h"
#include "cuda/cublas_loader.h"

namespace ferry::cuda {
namespace {

absl::Status CudaError(cudaError_t err, const char* what) {
  (void)cudaGetLastError();  // clear it so later checks do not see this failure again
  const std::string message = absl::StrCat("GpuBert: ", what, ": ", cudaGetErrorString(err));
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

#define FERRY_CUDA_RETURN_IF_ERROR(expr)                                \
  do {                                                                  \
    const cudaError_t ferry_err_ = (expr);                              \
    if (ferry_err_ != cudaSuccess) return CudaError(ferry_err_, #expr); \
  } while (false)

#define FERRY_RETURN_IF_ERROR(expr)                \
  do {                                             \
    absl::Status ferry_status_ = (expr);           \
    if (!ferry_status_.ok()) return ferry_status_; \
  } while (false)

absl::Status CublasError(const CublasApi* api, cublasStatus_t st, const char* what) {
  return absl::InternalError(absl::StrCat("GpuBert: ", what, ": ", api->status_string(st)));
}

cudaDataType CudaType(BertDType t) {
  switch (t) {
    case BertDType::kFp16:
      return CUDA_R_16F;
    case BertDType::kBf16:
      return CUDA_R_16BF;
    case BertDType::kFp32:
      break;
  }
  return CUDA_R_32F;
}

absl::Status CheckSize(const char* name, absl::Span<const float> v, int64_t want) {
  if (static_cast<int64_t>(v.size()) != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuBert: ", name, " has ", v.size(), " values, expected ", want));
  }
  return absl::OkStatus();
}

absl::Status Validate(const GpuBertModel& m, const GpuBert::Options& o) {
  if (m.vocab_size <= 0 || m.hidden_size <= 0 || m.num_heads <= 0 || m.intermediate_size <= 0 ||
      m.max_position_embeddings <= 0 || m.layers.empty()) {
    return absl::InvalidArgumentError("GpuBert: model sizes must be positive, with >= 1 layer");
  }
  if (m.hidden_size % m.num_heads != 0 || m.hidden_size / m.num_heads > kBertMaxHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuBert: hidden_size ", m.hidden_size, " / ", m.num_heads,
                     " heads must be a whole head dimension of at most ", kBertMaxHeadDim));
  }
  if (!(m.layer_norm_eps > 0.f)) {
    return absl::InvalidArgumentError("GpuBert: layer_norm_eps must be positive");
  }
  if (o.max_tokens <= 0 || o.max_tokens > (1 << 24) || o.max_sequences <= 0 || o.num_slots <= 0 ||
      o.num_slots > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GpuBert: max_tokens (", o.max_tokens, ") and max_sequences (", o.max_sequences,
        ") must be positive and num_slots (", o.num_slots, ") in [1, 64]"));
  }
  const int64_t h = m.hidden_size;
  const int64_t inter = m.intermediate_size;
  FERRY_RETURN_IF_ERROR(CheckSize("word_embeddings", m.word_embeddings, m.vocab_size * h));
  FERRY_RETURN_IF_ERROR(
      CheckSize("position_embeddings", m.position_embeddings, m.max_position_embeddings * h));
  FERRY_RETURN_IF_ERROR(CheckSize("token_type0", m.token_type0, h));
  FERRY_RETURN_IF_ERROR(CheckSize("embedding_ln_gamma", m.embedding_ln_gamma, h));
  FERRY_RETURN_IF_ERROR(CheckSize("embedding_ln_beta", m.embedding_ln_beta, h));
  for (const GpuBertLayer& l : m.layers) {
    FERRY_RETURN_IF_ERROR(CheckSize("qkv_weight", l.qkv_weight, 3 * h * h));
    FERRY_RETURN_IF_ERROR(CheckSize("qkv_bias", l.qkv_bias, 3 * h));
    FERRY_RETURN_IF_ERROR(CheckSize("attn_out_weight", l.attn_out_weight, h * h));
    FERRY_RETURN_IF_ERROR(CheckSize("attn_out_bias", l.attn_out_bias, h));
    FERRY_RETURN_IF_ERROR(CheckSize("attn_ln_gamma", l.attn_ln_gamma, h));
    FERRY_RETURN_IF_ERROR(CheckSize("attn_ln_beta", l.attn_ln_beta, h));
    FERRY_RETURN_IF_ERROR(CheckSize("ffn_in_weight", l.ffn_in_weight, inter * h));
    FERRY_RETURN_IF_ERROR(CheckSize("ffn_in_bias", l.ffn_in_bias, inter));
    FERRY_RETURN_IF_ERROR(CheckSize("ffn_out_weight", l.ffn_out_weight, h * inter));
    FERRY_RETURN_IF_ERROR(CheckSize("ffn_out_bias", l.ffn_out_bias, h));
    FERRY_RETURN_IF_ERROR(CheckSize("out_ln_gamma", l.out_ln_gamma, h));
    FERRY_RETURN_IF_ERROR(CheckSize("out_ln_beta", l.out_ln_beta, h));
  }
  return absl::OkStatus();
}

}  // namespace

struct GpuBert::Impl {
  struct Layer {
    void* qkv_w = nullptr;  // matrices in the instance's dtype
    void* attn_out_w = nullptr;
    void* ffn_in_w = nullptr;
    void* ffn_out_w = nullptr;
    float* qkv_b = nullptr;  // vectors in FP32
    float* attn_out_b = nullptr;
    float* attn_ln_g = nullptr;
    float* attn_ln_b = nullptr;
    float* ffn_in_b = nullptr;
    float* ffn_out_b = nullptr;
    float* out_ln_g = nullptr;
    float* out_ln_b = nullptr;
  };
  struct Slot {
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    cudaEvent_t events[4] = {nullptr, nullptr, nullptr, nullptr};  // start, h2d, compute, d2h
    int32_t* host_ids = nullptr;  // pinned, BertPackCapacity int32s
    float* host_out = nullptr;    // pinned, [max_sequences, H]
    int32_t* dev_ids = nullptr;
    void* x = nullptr;         // [T, H]
    void* qkv = nullptr;       // [T, 3H]
    void* ctx = nullptr;       // [T, H]
    void* tmp = nullptr;       // [T, H]
    void* ffn = nullptr;       // [T, I]
    float* dev_out = nullptr;  // [max_sequences, H]
    BertPackedBatch packed;
    bool launched = false;
    absl::AnyInvocable<void()> done;
  };

  int device = 0;
  BertDType dtype = BertDType::kFp16;
  // FP32 accumulation always; for tf32 the FP32 inputs are rounded to TF32 on tensor cores.
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  int hidden = 0;
  int heads = 0;
  int inter = 0;
  float eps = 1e-12f;
  const CublasApi* api = nullptr;
  std::vector<void*> allocations;  // every device buffer of the weights, freed at the end
  void* word = nullptr;
  void* position = nullptr;
  void* type0 = nullptr;
  float* emb_ln_g = nullptr;
  float* emb_ln_b = nullptr;
  std::vector<Layer> layers;
  std::vector<Slot> slots;
  size_t capacity = 0;  // int32s per slot's packed buffer

  ~Impl() {
    // Errors are ignored: nothing useful can be done with them while tearing down.
    if (cudaSetDevice(device) != cudaSuccess) return;
    for (Slot& s : slots) {
      if (s.stream != nullptr) (void)cudaStreamSynchronize(s.stream);
      for (void* p : {static_cast<void*>(s.dev_ids), s.x, s.qkv, s.ctx, s.tmp, s.ffn,
                      static_cast<void*>(s.dev_out)}) {
        (void)cudaFree(p);
      }
      (void)cudaFreeHost(s.host_ids);
      (void)cudaFreeHost(s.host_out);
      for (cudaEvent_t e : s.events) {
        if (e != nullptr) (void)cudaEventDestroy(e);
      }
      if (s.cublas != nullptr) (void)api->destroy(s.cublas);
      if (s.stream != nullptr) (void)cudaStreamDestroy(s.stream);
    }
    for (void* p : allocations) (void)cudaFree(p);
    (void)cudaGetLastError();
  }

  absl::StatusOr<void*> Alloc(size_t bytes) {
    void* p = nullptr;
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, std::max<size_t>(bytes, 1)));
    allocations.push_back(p);
    return p;
  }

  // Uploads an FP32 host vector as FP32 (vectors) or in `as` (matrices), through `staging` (a
  // device FP32 buffer at least v.size() long). Blocking (the host data is pageable).
  absl::StatusOr<void*> Upload(absl::Span<const float> v, BertDType as, float* staging,
                               size_t* bytes) {
    absl::StatusOr<void*> p = Alloc(v.size() * BertDTypeSize(as));
    if (!p.ok()) return p.status();
    *bytes += v.size() * BertDTypeSize(as);
    if (as == BertDType::kFp32) {
      FERRY_CUDA_RETURN_IF_ERROR(
          cudaMemcpy(*p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
      return p;
    }
    FERRY_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(staging, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
    FERRY_RETURN_IF_ERROR(LaunchConvertFromFloat(staging, *p, static_cast<int64_t>(v.size()), as,
                                                 /*stream=*/nullptr));
    FERRY_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    return p;
  }

  // y[rows, out] = x[rows, in] · Wᵀ (W [out, in], row-major). cuBLAS is column-major: row-major
  // x is column-major xᵀ [in, rows], W is Wᵀ [in, out], y is yᵀ [out, rows]; so yᵀ = op_T(Wᵀ)·xᵀ.
  absl::Status Gemm(Slot& s, const void* x, int64_t rows, int in, const void* w, int out,
                    void* y) const {
    const float alpha = 1.0f;
    const float beta = 0.0f;
    const cudaDataType t = CudaType(dtype);
    const cublasStatus_t st =
        api->gemm_ex(s.cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, static_cast<int>(rows), in, &alpha, w,
                     t, in, x, t, in, &beta, y, t, out, compute, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) return CublasError(api, st, "cublasGemmEx");
    return absl::OkStatus();
  }

  // The whole encoder for the slot's packed pass, enqueued on its stream.
  absl::Status Encode(Slot& s, bool normalize) const {
    const BertPackedBatch& b = s.packed;
    const int32_t* ids = s.dev_ids + b.ids;
    const int32_t* positions = s.dev_ids + b.positions;
    const int32_t* offsets = s.dev_ids + b.offsets;
    const int32_t* tiles = s.dev_ids + b.tiles;
    const int64_t t = b.tokens;
    FERRY_RETURN_IF_ERROR(LaunchEmbeddingLayerNorm(ids, positions, word, position, type0, emb_ln_g,
                                                   emb_ln_b, t, hidden, eps, s.x, dtype, s.stream));
    for (const Layer& l : layers) {
      FERRY_RETURN_IF_ERROR(Gemm(s, s.x, t, hidden, l.qkv_w, 3 * hidden, s.qkv));
      FERRY_RETURN_IF_ERROR(LaunchPackedAttention(s.qkv, l.qkv_b, offsets, tiles, b.num_tiles,
                                                  heads, hidden / heads, b.max_len, s.ctx, dtype,
                                                  s.stream));
      FERRY_RETURN_IF_ERROR(Gemm(s, s.ctx, t, hidden, l.attn_out_w, hidden, s.tmp));
      FERRY_RETURN_IF_ERROR(LaunchBiasResidualLayerNorm(s.tmp, l.attn_out_b, s.x, l.attn_ln_g,
                                                        l.attn_ln_b, t, hidden, eps, s.x, dtype,
                                                        s.stream));
      FERRY_RETURN_IF_ERROR(Gemm(s, s.x, t, hidden, l.ffn_in_w, inter, s.ffn));
      FERRY_RETURN_IF_ERROR(LaunchBiasGelu(s.ffn, l.ffn_in_b, t, inter, dtype, s.stream));
      FERRY_RETURN_IF_ERROR(Gemm(s, s.ffn, t, inter, l.ffn_out_w, hidden, s.tmp));
      FERRY_RETURN_IF_ERROR(LaunchBiasResidualLayerNorm(
          s.tmp, l.ffn_out_b, s.x, l.out_ln_g, l.out_ln_b, t, hidden, eps, s.x, dtype, s.stream));
    }
    return LaunchMeanPoolNormalize(s.x, offsets, b.num_seqs, hidden, normalize, s.dev_out, dtype,
                                   s.stream);
  }
};

absl::StatusOr<std::unique_ptr<GpuBert>> GpuBert::Create(const Options& options,
                                                         const GpuBertModel& model) {
  FERRY_RETURN_IF_ERROR(Validate(model, options));
  int count = 0;
  if (cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat("no GPU: ", cudaGetErrorString(err)));
  }
  if (count <= 0) return absl::FailedPreconditionError("no GPU: no CUDA device is visible");
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuBert: device ", options.device, " out of range (", count, " GPUs)"));
  }
  absl::StatusOr<const CublasApi*> api = LoadCublas();
  if (!api.ok()) return api.status();

  std::unique_ptr<GpuBert> bert(new GpuBert());
  bert->options_ = options;
  bert->options_.max_sequences = std::min(options.max_sequences, options.max_tokens);
  bert->hidden_ = model.hidden_size;
  bert->limits_.vocab_size = model.vocab_size;
  bert->limits_.max_len = std::min(model.max_position_embeddings, kBertMaxAttentionLength);
  bert->limits_.max_tokens = options.max_tokens;
  bert->limits_.max_sequences = bert->options_.max_sequences;
  {
    absl::MutexLock lock(&bert->mu_);
    bert->busy_.assign(options.num_slots, false);
  }
  bert->impl_ = std::make_unique<Impl>();
  Impl& m = *bert->impl_;
  m.device = options.device;
  m.dtype = BertStorage(options.precision);
  m.compute =
      options.precision == Precision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  m.hidden = model.hidden_size;
  m.heads = model.num_heads;
  m.inter = model.intermediate_size;
  m.eps = model.layer_norm_eps;
  m.api = *api;
  FERRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));

  // Weights: every tensor through one FP32 staging buffer as large as the largest.
  size_t largest = model.word_embeddings.size();
  for (const GpuBertLayer& l : model.layers) {
    largest = std::max({largest, l.qkv_weight.size(), l.ffn_in_weight.size()});
  }
  largest = std::max(largest, model.position_embeddings.size());
  float* staging = nullptr;
  FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&staging, largest * sizeof(float)));
  size_t bytes = 0;
  const BertDType dt = m.dtype;
  auto upload_status = [&]() -> absl::Status {
    auto matrix = [&](absl::Span<const float> v, void** dst) -> absl::Status {
      absl::StatusOr<void*> p = m.Upload(v, dt, staging, &bytes);
      if (!p.ok()) return p.status();
      *dst = *p;
      return absl::OkStatus();
    };
    auto vec = [&](absl::Span<const float> v, float** dst) -> absl::Status {
      absl::StatusOr<void*> p = m.Upload(v, BertDType::kFp32, staging, &bytes);
      if (!p.ok()) return p.status();
      *dst = static_cast<float*>(*p);
      return absl::OkStatus();
    };
    FERRY_RETURN_IF_ERROR(matrix(model.word_embeddings, &m.word));
    FERRY_RETURN_IF_ERROR(matrix(model.position_embeddings, &m.position));
    FERRY_RETURN_IF_ERROR(matrix(model.token_type0, &m.type0));
    FERRY_RETURN_IF_ERROR(vec(model.embedding_ln_gamma, &m.emb_ln_g));
    FERRY_RETURN_IF_ERROR(vec(model.embedding_ln_beta, &m.emb_ln_b));
    for (const GpuBertLayer& l : model.layers) {
      Impl::Layer& d = m.layers.emplace_back();
      FERRY_RETURN_IF_ERROR(matrix(l.qkv_weight, &d.qkv_w));
      FERRY_RETURN_IF_ERROR(matrix(l.attn_out_weight, &d.attn_out_w));
      FERRY_RETURN_IF_ERROR(matrix(l.ffn_in_weight, &d.ffn_in_w));
      FERRY_RETURN_IF_ERROR(matrix(l.ffn_out_weight, &d.ffn_out_w));
      FERRY_RETURN_IF_ERROR(vec(l.qkv_bias, &d.qkv_b));
      FERRY_RETURN_IF_ERROR(vec(l.attn_out_bias, &d.attn_out_b));
      FERRY_RETURN_IF_ERROR(vec(l.attn_ln_gamma, &d.attn_ln_g));
      FERRY_RETURN_IF_ERROR(vec(l.attn_ln_beta, &d.attn_ln_b));
      FERRY_RETURN_IF_ERROR(vec(l.ffn_in_bias, &d.ffn_in_b));
      FERRY_RETURN_IF_ERROR(vec(l.ffn_out_bias, &d.ffn_out_b));
      FERRY_RETURN_IF_ERROR(vec(l.out_ln_gamma, &d.out_ln_g));
      FERRY_RETURN_IF_ERROR(vec(l.out_ln_beta, &d.out_ln_b));
    }
    return absl::OkStatus();
  }();
  (void)cudaFree(staging);
  FERRY_RETURN_IF_ERROR(upload_status);
  bert->weight_bytes_ = bytes;

  // Slots.
  const int64_t t = options.max_tokens;
  const int64_t h = model.hidden_size;
  const size_t es = BertDTypeSize(dt);
  m.capacity = BertPackCapacity(bert->limits_);
  m.slots.resize(options.num_slots);
  for (Impl::Slot& s : m.slots) {
    FERRY_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    cublasStatus_t st = m.api->create(&s.cublas);
    if (st != CUBLAS_STATUS_SUCCESS) return CublasError(m.api, st, "cublasCreate");
    st = m.api->set_stream(s.cublas, s.stream);
    if (st != CUBLAS_STATUS_SUCCESS) return CublasError(m.api, st, "cublasSetStream");
    // fp32: plain FP32 (no TF32 rounding), to agree with the CPU path; tf32 asks for it through
    // the compute type instead. FP16/BF16 GEMMs use tensor cores whatever the mode, and the
    // compute type CUBLAS_COMPUTE_32F keeps their accumulation in FP32.
    st = m.api->set_math_mode(s.cublas, CUBLAS_DEFAULT_MATH);
    if (st != CUBLAS_STATUS_SUCCESS) return CublasError(m.api, st, "cublasSetMathMode");
    for (cudaEvent_t& e : s.events) FERRY_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMallocHost(&s.host_ids, m.capacity * sizeof(int32_t)));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMallocHost(
        &s.host_out, static_cast<size_t>(bert->options_.max_sequences * h) * sizeof(float)));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.dev_ids, m.capacity * sizeof(int32_t)));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.x, static_cast<size_t>(t * h) * es));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.qkv, static_cast<size_t>(3 * t * h) * es));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.ctx, static_cast<size_t>(t * h) * es));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.tmp, static_cast<size_t>(t * h) * es));
    FERRY_CUDA_RETURN_IF_ERROR(
        cudaMalloc(&s.ffn, static_cast<size_t>(t * model.intermediate_size) * es));
    FERRY_CUDA_RETURN_IF_ERROR(cudaMalloc(
        &s.dev_out, static_cast<size_t>(bert->options_.max_sequences * h) * sizeof(float)));
  }
  // One tiny pass at load: the kernels' modules load now (CUDA loads them lazily), a GPU this
  // build has no kernel image for fails here rather than on the first request, and cuBLAS picks
  // its kernels.
  const std::vector<std::vector<int32_t>> warm = {{0}};
  FERRY_RETURN_IF_ERROR(bert->Pack(0, warm));
  FERRY_RETURN_IF_ERROR(bert->Launch(0, true, nullptr));
  FERRY_RETURN_IF_ERROR(bert->Wait(0));
  return bert;
}

GpuBert::~GpuBert() = default;

bool GpuBert::HasFreeSlot() const {
  return std::find(busy_.begin(), busy_.end(), false) != busy_.end();
}

int GpuBert::AcquireSlot() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &GpuBert::HasFreeSlot));
  const int slot = static_cast<int>(std::find(busy_.begin(), busy_.end(), false) - busy_.begin());
  busy_[slot] = true;
  return slot;
}

void GpuBert::ReleaseSlot(int slot) {
  absl::MutexLock lock(&mu_);
  if (slot >= 0 && slot < static_cast<int>(busy_.size())) busy_[slot] = false;
}

absl::Status GpuBert::Pack(int slot, absl::Span<const std::vector<int32_t>> seqs) {
  if (slot < 0 || slot >= options_.num_slots) {
    return absl::InvalidArgumentError(absl::StrCat("GpuBert: no slot ", slot));
  }
  Impl::Slot& s = impl_->slots[slot];
  if (s.launched) {
    return absl::FailedPreconditionError("GpuBert: Pack on a slot launched and not waited for");
  }
  s.packed = BertPackedBatch{};
  return PackBertBatch(seqs, limits_, s.host_ids, impl_->capacity, &s.packed);
}

absl::Status GpuBert::Launch(int slot, bool normalize, absl::AnyInvocable<void()> done) {
  if (slot < 0 || slot >= options_.num_slots) {
    return absl::InvalidArgumentError(absl::StrCat("GpuBert: no slot ", slot));
  }
  Impl& m = *impl_;
  Impl::Slot& s = m.slots[slot];
  if (s.launched) return absl::FailedPreconditionError("GpuBert: slot launched twice");
  FERRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(m.device));
  const BertPackedBatch& b = s.packed;
  // On any error below, wait for what was enqueued so the slot's buffers are idle again.
  auto fail = [&](absl::Status st) {
    (void)cudaStreamSynchronize(s.stream);
    (void)cudaGetLastError();
    return st;
  };
  FERRY_CUDA_RETURN_IF_ERROR(cudaEventRecord(s.events[0], s.stream));
  if (b.num_seqs > 0) {
    if (cudaError_t e = cudaMemcpyAsync(s.dev_ids, s.host_ids, b.total * sizeof(int32_t),
                                        cudaMemcpyHostToDevice, s.stream);
        e != cudaSuccess) {
      return fail(CudaError(e, "cudaMemcpyAsync to the GPU"));
    }
  }
  if (cudaError_t e = cudaEventRecord(s.events[1], s.stream); e != cudaSuccess) {
    return fail(CudaError(e, "cudaEventRecord"));
  }
  if (b.num_seqs > 0) {
    if (absl::Status st = m.Encode(s, normalize); !st.ok()) return fail(st);
  }
  if (cudaError_t e = cudaEventRecord(s.events[2], s.stream); e != cudaSuccess) {
    return fail(CudaError(e, "cudaEventRecord"));
  }
  const size_t out_bytes = static_cast<size_t>(b.num_seqs) * hidden_ * sizeof(float);
  if (out_bytes > 0) {
    if (cudaError_t e =
            cudaMemcpyAsync(s.host_out, s.dev_out, out_bytes, cudaMemcpyDeviceToHost, s.stream);
        e != cudaSuccess) {
      return fail(CudaError(e, "cudaMemcpyAsync from the GPU"));
    }
  }
  if (cudaError_t e = cudaEventRecord(s.events[3], s.stream); e != cudaSuccess) {
    return fail(CudaError(e, "cudaEventRecord"));
  }
  s.done = std::move(done);
  if (s.done != nullptr) {
    // The host function runs on a driver thread once everything before it on the stream is done.
    cudaHostFn_t fn = [](void* arg) {
      auto* slot = static_cast<Impl::Slot*>(arg);
      slot->done();
    };
    if (cudaError_t e = cudaLaunchHostFunc(s.stream, fn, &s); e != cudaSuccess) {
      s.done = nullptr;
      return fail(CudaError(e, "cudaLaunchHostFunc"));
    }
  }
  s.launched = true;
  return absl::OkStatus();
}

absl::Status GpuBert::Wait(int slot) {
  if (slot < 0 || slot >= options_.num_slots) {
    return absl::InvalidArgumentError(absl::StrCat("GpuBert: no slot ", slot));
  }
  Impl::Slot& s = impl_->slots[slot];
  if (!s.launched) return absl::OkStatus();
  s.launched = false;
  FERRY_CUDA_RETURN_IF_ERROR(cudaSetDevice(impl_->device));
  FERRY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
  s.done = nullptr;
  return absl::OkStatus();
}

const float* GpuBert::Output(int slot) const { return impl_->slots.at(slot).host_out; }

int GpuBert::packed_sequences(int slot) const { return impl_->slots.at(slot).packed.num_seqs; }

int64_t GpuBert::packed_tokens(int slot) const { return impl_->slots.at(slot).packed.tokens; }

GpuBertTimes GpuBert::Times(int slot) const {
  const Impl::Slot& s = impl_->slots.at(slot);
  GpuBertTimes t;
  float ms[3] = {-1.f, -1.f, -1.f};
  for (int i = 0; i < 3; ++i) {
    if (cudaEventElapsedTime(&ms[i], s.events[i], s.events[i + 1]) != cudaSuccess) {
      (void)cudaGetLastError();
      ms[i] = -1.f;
    }
  }
  auto us = [](float v) {
    return v < 0 ? int64_t{-1} : static_cast<int64_t>(std::lround(v * 1e3));
  };
  t.h2d_us = us(ms[0]);
  t.compute_us = us(ms[1]);
  t.d2h_us = us(ms[2]);
  return t;
}

absl::Status GpuBert::Embed(absl::Span<const std::vector<int32_t>> seqs, bool normalize,
                            float* out) {
  if (seqs.empty()) return absl::OkStatus();
  const int slot = AcquireSlot();
  absl::Status status = EmbedOnSlot(slot, seqs, normalize, out);
  ReleaseSlot(slot);
  return status;
}

absl::Status GpuBert::EmbedOnSlot(int slot, absl::Span<const std::vector<int32_t>> seqs,
                                  bool normalize, float* out) {
  if (seqs.empty()) return absl::OkStatus();
  if (out == nullptr) return absl::InvalidArgumentError("GpuBert: null output");
  absl::Status status;
  for (const auto& [begin, end] :
       SplitBertPasses(seqs, options_.max_tokens, options_.max_sequences)) {
    status = Pack(slot, seqs.subspan(begin, end - begin));
    if (status.ok()) status = Launch(slot, normalize, nullptr);
    if (status.ok()) status = Wait(slot);
    if (!status.ok()) {
      if (status.code() == absl::StatusCode::kInvalidArgument) {
        // Name the sequence in the caller's numbering, not the pass's.
        status = absl::InvalidArgumentError(
            absl::StrCat(status.message(), " (pass starting at sequence ", begin, ")"));
      }
      break;
    }
    std::memcpy(out + begin * hidden_, Output(slot), (end - begin) * hidden_ * sizeof(float));
  }
  return status;
}

}  // namespace ferry::cuda
