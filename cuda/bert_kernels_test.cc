// Each BERT kernel (cuda/bert_kernels.h) against a double-precision CPU reference on fresh random
// inputs, in FP32, FP16 and BF16 storage; GpuBert's slots, passes and threads against its own
// single-pass result. The whole encoder against the CPU encoder is in
// kernels/bert_encoder_test.cc. Without a usable GPU these skip with the reason (fail under
// FERRY_REQUIRE_GPU=1); the argument checks run everywhere.
#include "cuda/bert_kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/gpu_bert.h"
#include "cuda/gpu_test_util.h"
#include "gtest/gtest.h"

namespace ferry::cuda {
namespace {

constexpr BertDType kAllTypes[] = {BertDType::kFp32, BertDType::kFp16, BertDType::kBf16};

std::string Name(BertDType t) { return std::string(BertDTypeName(t)); }

std::mt19937 SeededRng() {
  const uint32_t seed = std::random_device{}();
  std::cout << "[   SEED   ] " << seed << std::endl;
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return std::mt19937(seed);
}

std::vector<float> Random(std::mt19937& rng, size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Device memory that frees itself; test-only.
class Buf {
 public:
  explicit Buf(size_t bytes) {
    EXPECT_EQ(cudaMalloc(&p_, std::max<size_t>(bytes, 1)), cudaSuccess);
  }
  ~Buf() { cudaFree(p_); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  void* get() const { return p_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

// A typed device array made from floats: holds the values rounded to `type`, and `host` holds
// exactly those rounded values (what the kernel sees), for the reference.
struct Typed {
  Typed(const std::vector<float>& v, BertDType type) : buf(v.size() * BertDTypeSize(type)) {
    Buf f32(v.size() * sizeof(float));
    EXPECT_EQ(cudaMemcpy(f32.get(), v.data(), v.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_TRUE(LaunchConvertFromFloat(f32.as<float>(), buf.get(), v.size(), type, nullptr).ok());
    host.resize(v.size());
    EXPECT_TRUE(LaunchConvertToFloat(buf.get(), f32.as<float>(), v.size(), type, nullptr).ok());
    EXPECT_EQ(cudaMemcpy(host.data(), f32.get(), v.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  Buf buf;
  std::vector<float> host;
};

std::vector<float> ReadTyped(const void* p, size_t n, BertDType type) {
  Buf f32(n * sizeof(float));
  EXPECT_TRUE(LaunchConvertToFloat(p, f32.as<float>(), n, type, nullptr).ok());
  std::vector<float> out(n);
  EXPECT_EQ(cudaMemcpy(out.data(), f32.get(), n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

template <typename T>
Buf* Upload(const std::vector<T>& v) {
  Buf* b = new Buf(v.size() * sizeof(T));
  EXPECT_EQ(cudaMemcpy(b->get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return b;
}

template <typename T>
std::vector<T> Download(const void* p, size_t n) {
  std::vector<T> out(n);
  EXPECT_EQ(cudaMemcpy(out.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

// Per-format bound for an output computed in FP32 and rounded once to `type`:
// |got − want| <= atol + rtol·|want|.
struct Tol {
  double atol, rtol;
};
Tol OutputTolerance(BertDType t) {
  switch (t) {
    case BertDType::kFp32:
      return {2e-5, 2e-5};
    case BertDType::kFp16:
      return {2e-3, 2e-3};  // unit roundoff 2^-11 ≈ 4.9e-4, plus the FP32 arithmetic
    case BertDType::kBf16:
      break;
  }
  return {1e-2, 1e-2};  // unit roundoff 2^-8 ≈ 3.9e-3
}

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want, Tol tol,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(got[i] - want[i]) / (tol.atol + tol.rtol * std::abs(want[i]));
    if (!(e <= worst)) {  // also catches NaN
      worst = std::isnan(e) ? 1e30 : e;
      worst_i = i;
    }
  }
  EXPECT_LE(worst, 1.0) << what << ": element " << worst_i << " got " << got[worst_i] << " want "
                        << want[worst_i];
}

void LayerNormRef(const double* v, int n, const std::vector<float>& g, const std::vector<float>& b,
                  double eps, double* out) {
  double mean = 0;
  for (int i = 0; i < n; ++i) mean += v[i];
  mean /= n;
  double var = 0;
  for (int i = 0; i < n; ++i) var += (v[i] - mean) * (v[i] - mean);
  var /= n;
  const double inv = 1.0 / std::sqrt(var + eps);
  for (int i = 0; i < n; ++i) out[i] = (v[i] - mean) * inv * g[i] + b[i];
}

TEST(BertKernelsTest, ConvertRoundsToTheFormat) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  const std::vector<float> v = Random(rng, 10007, -300.f, 300.f);
  for (BertDType t : kAllTypes) {
    Typed d(v, t);
    const double u = t == BertDType::kFp32 ? 0 : t == BertDType::kFp16 ? 0x1p-11 : 0x1p-8;
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_LE(std::abs(d.host[i] - v[i]), u * std::abs(v[i])) << BertDTypeName(t) << " " << i;
    }
  }
}

TEST(BertKernelsTest, EmbeddingLayerNormMatchesReference) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  for (BertDType t : kAllTypes) {
    // Up to 1024 columns one warp normalises a row; wider rows take a block each.
    for (int hidden : {16, 384, 1000, 2000}) {
      const int vocab = 57;
      const int max_pos = 40;
      const int tokens = std::uniform_int_distribution<int>(1, 300)(rng);
      std::vector<int32_t> ids(tokens), pos(tokens);
      for (int i = 0; i < tokens; ++i) {
        ids[i] = std::uniform_int_distribution<int>(0, vocab - 1)(rng);
        pos[i] = std::uniform_int_distribution<int>(0, max_pos - 1)(rng);
      }
      Typed word(Random(rng, size_t{1} * vocab * hidden), t);
      Typed position(Random(rng, size_t{1} * max_pos * hidden), t);
      Typed type0(Random(rng, hidden), t);
      const std::vector<float> gamma = Random(rng, hidden, 0.5f, 1.5f);
      const std::vector<float> beta = Random(rng, hidden);
      std::unique_ptr<Buf> d_ids(Upload(ids)), d_pos(Upload(pos)), d_g(Upload(gamma)),
          d_b(Upload(beta));
      Buf out(size_t{1} * tokens * hidden * BertDTypeSize(t));
      ASSERT_TRUE(LaunchEmbeddingLayerNorm(d_ids->as<int32_t>(), d_pos->as<int32_t>(),
                                           word.buf.get(), position.buf.get(), type0.buf.get(),
                                           d_g->as<float>(), d_b->as<float>(), tokens, hidden,
                                           1e-12f, out.get(), t, nullptr)
                      .ok());
      std::vector<double> want(size_t{1} * tokens * hidden);
      std::vector<double> row(hidden);
      for (int i = 0; i < tokens; ++i) {
        for (int c = 0; c < hidden; ++c) {
          row[c] = static_cast<double>(word.host[size_t{1} * ids[i] * hidden + c]) +
                   position.host[size_t{1} * pos[i] * hidden + c] + type0.host[c];
        }
        LayerNormRef(row.data(), hidden, gamma, beta, 1e-12, &want[size_t{1} * i * hidden]);
      }
      ExpectNear(ReadTyped(out.get(), want.size(), t), want, OutputTolerance(t),
                 absl::StrCat("embedding LN ", Name(t), " hidden ", hidden));
    }
  }
}

TEST(BertKernelsTest, BiasGeluMatchesReference) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  for (BertDType t : kAllTypes) {
    for (auto [rows, cols] : {std::pair{1, 1}, {3, 7}, {77, 1536}}) {
      Typed y(Random(rng, size_t{1} * rows * cols, -5.f, 5.f), t);
      const std::vector<float> bias = Random(rng, cols);
      std::unique_ptr<Buf> d_bias(Upload(bias));
      ASSERT_TRUE(LaunchBiasGelu(y.buf.get(), d_bias->as<float>(), rows, cols, t, nullptr).ok());
      std::vector<double> want(y.host.size());
      for (size_t i = 0; i < want.size(); ++i) {
        const double x = static_cast<double>(y.host[i]) + bias[i % cols];
        want[i] = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
      }
      ExpectNear(ReadTyped(y.buf.get(), want.size(), t), want, OutputTolerance(t),
                 absl::StrCat("bias GELU ", Name(t), " ", rows, "x", cols));
    }
  }
}

TEST(BertKernelsTest, BiasResidualLayerNormMatchesReferenceAlsoInPlace) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  for (BertDType t : kAllTypes) {
    for (int cols : {16, 384, 999, 1025}) {
      for (bool in_place : {false, true}) {
        const int rows = std::uniform_int_distribution<int>(1, 200)(rng);
        const size_t n = size_t{1} * rows * cols;
        Typed y(Random(rng, n, -3.f, 3.f), t);
        Typed residual(Random(rng, n, -3.f, 3.f), t);
        const std::vector<float> bias = Random(rng, cols);
        const std::vector<float> gamma = Random(rng, cols, 0.5f, 1.5f);
        const std::vector<float> beta = Random(rng, cols);
        std::unique_ptr<Buf> d_bias(Upload(bias)), d_g(Upload(gamma)), d_b(Upload(beta));
        Buf separate(n * BertDTypeSize(t));
        void* out = in_place ? residual.buf.get() : separate.get();
        ASSERT_TRUE(LaunchBiasResidualLayerNorm(
                        y.buf.get(), d_bias->as<float>(), residual.buf.get(), d_g->as<float>(),
                        d_b->as<float>(), rows, cols, 1e-12f, out, t, nullptr)
                        .ok());
        std::vector<double> want(n);
        std::vector<double> row(cols);
        for (int r = 0; r < rows; ++r) {
          for (int c = 0; c < cols; ++c) {
            const size_t i = size_t{1} * r * cols + c;
            row[c] = static_cast<double>(y.host[i]) + bias[c] + residual.host[i];
          }
          LayerNormRef(row.data(), cols, gamma, beta, 1e-12, &want[size_t{1} * r * cols]);
        }
        ExpectNear(
            ReadTyped(out, n, t), want, OutputTolerance(t),
            absl::StrCat("residual LN ", Name(t), " cols ", cols, in_place ? " in place" : ""));
      }
    }
  }
}

// Packs sequences of the given lengths, for the attention and pooling kernels.
struct Packed {
  std::vector<int32_t> buf;
  BertPackedBatch b;
};
Packed PackLengths(const std::vector<int>& lens, int vocab = 10) {
  std::vector<std::vector<int32_t>> seqs;
  int64_t tokens = 0;
  for (int l : lens) {
    seqs.emplace_back(l, 1);
    tokens += l;
  }
  BertPackLimits limits;
  limits.vocab_size = vocab;
  limits.max_len = kBertMaxAttentionLength;
  limits.max_tokens = std::max<int64_t>(tokens, 1);
  limits.max_sequences = std::max<int64_t>(lens.size(), 1);
  Packed p;
  p.buf.resize(BertPackCapacity(limits));
  EXPECT_TRUE(PackBertBatch(seqs, limits, p.buf.data(), p.buf.size(), &p.b).ok());
  return p;
}

TEST(BertKernelsTest, PackedAttentionMatchesPerSequenceReference) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  struct Shape {
    int heads, d;
    std::vector<int> lens;
  };
  const std::vector<Shape> shapes = {
      {12, 32, {1, 5, 31, 32, 33, 64, 200}},  // MiniLM's heads, lengths on and off the tile size
      {12, 32, {256, 3, 128}},
      {1, 32, {512}},  // the longest sequence the kernel takes (over 48 KiB of shared memory)
      {4, 4, {7, 1, 40}},
      {2, 64, {65, 9}},
      {3, 20, {17}},
  };
  for (BertDType t : kAllTypes) {
    for (const Shape& s : shapes) {
      for (auto [with_bias, allow_fast] : {std::pair{true, true}, {false, true}, {true, false}}) {
        if (!allow_fast && s.d != 32) continue;  // only head dim 32 has two kernels
        const Packed p = PackLengths(s.lens);
        const int hd = s.heads * s.d;
        const int64_t tokens = p.b.tokens;
        Typed qkv(Random(rng, size_t{1} * tokens * 3 * hd, -2.f, 2.f), t);
        const std::vector<float> bias = Random(rng, 3 * hd);
        std::unique_ptr<Buf> d_bias(Upload(bias)), d_pack(Upload(p.buf));
        Buf ctx(size_t{1} * tokens * hd * BertDTypeSize(t));
        const int32_t* base = d_pack->as<int32_t>();
        ASSERT_TRUE(LaunchPackedAttention(qkv.buf.get(), with_bias ? d_bias->as<float>() : nullptr,
                                          base + p.b.offsets, base + p.b.tiles, p.b.num_tiles,
                                          s.heads, s.d, p.b.max_len, ctx.get(), t, nullptr,
                                          allow_fast)
                        .ok());
        std::vector<double> want(size_t{1} * tokens * hd);
        int64_t begin = 0;
        for (int len : s.lens) {
          auto at = [&](int64_t row, int col) {
            return static_cast<double>(qkv.host[row * 3 * hd + col]) + (with_bias ? bias[col] : 0);
          };
          for (int h = 0; h < s.heads; ++h) {
            for (int i = 0; i < len; ++i) {
              std::vector<double> sc(len);
              double m = -1e300;
              for (int j = 0; j < len; ++j) {
                double dot = 0;
                for (int c = 0; c < s.d; ++c) {
                  dot += at(begin + i, h * s.d + c) * at(begin + j, hd + h * s.d + c);
                }
                sc[j] = dot / std::sqrt(static_cast<double>(s.d));
                m = std::max(m, sc[j]);
              }
              double sum = 0;
              for (double& x : sc) sum += (x = std::exp(x - m));
              for (int c = 0; c < s.d; ++c) {
                double acc = 0;
                for (int j = 0; j < len; ++j) acc += sc[j] * at(begin + j, 2 * hd + h * s.d + c);
                want[(begin + i) * hd + h * s.d + c] = acc / sum;
              }
            }
          }
          begin += len;
        }
        ExpectNear(ReadTyped(ctx.get(), want.size(), t), want, OutputTolerance(t),
                   absl::StrCat("attention ", Name(t), " heads ", s.heads, " d ", s.d, " max_len ",
                                p.b.max_len, with_bias ? " bias" : "",
                                allow_fast ? "" : " (general kernel)"));
      }
    }
  }
}

TEST(BertKernelsTest, MeanPoolNormalizeMatchesReference) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  for (BertDType t : kAllTypes) {
    for (int hidden : {16, 384}) {
      for (bool normalize : {true, false}) {
        const std::vector<int> lens = {1, 7, 128, 33, 256};
        const Packed p = PackLengths(lens);
        Typed x(Random(rng, size_t{1} * p.b.tokens * hidden, -2.f, 2.f), t);
        std::unique_ptr<Buf> d_pack(Upload(p.buf));
        const int n = static_cast<int>(lens.size());
        Buf out(size_t{1} * n * hidden * sizeof(float));
        ASSERT_TRUE(LaunchMeanPoolNormalize(x.buf.get(), d_pack->as<int32_t>() + p.b.offsets, n,
                                            hidden, normalize, out.as<float>(), t, nullptr)
                        .ok());
        std::vector<double> want(size_t{1} * n * hidden, 0.0);
        int64_t begin = 0;
        for (int s = 0; s < n; ++s) {
          double* w = &want[size_t{1} * s * hidden];
          for (int r = 0; r < lens[s]; ++r) {
            for (int c = 0; c < hidden; ++c) w[c] += x.host[(begin + r) * hidden + c];
          }
          double norm = 0;
          for (int c = 0; c < hidden; ++c) {
            w[c] /= lens[s];
            norm += w[c] * w[c];
          }
          if (normalize) {
            for (int c = 0; c < hidden; ++c) w[c] /= std::max(std::sqrt(norm), 1e-12);
          }
          begin += lens[s];
        }
        // FP32 output and FP32 sums: only the inputs were rounded (in `x.host` already).
        ExpectNear(
            Download<float>(out.get(), want.size()), want, {2e-5, 2e-5},
            absl::StrCat("pooling ", Name(t), " hidden ", hidden, normalize ? " normalised" : ""));
      }
    }
  }
}

TEST(BertKernelsTest, LaunchersRejectBadArgumentsBeforeLaunching) {
  // No GPU needed: every check runs before any CUDA call.
  int32_t dummy = 0;
  EXPECT_EQ(LaunchBiasGelu(nullptr, nullptr, 2, 3, BertDType::kFp16, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchBiasGelu(&dummy, nullptr, -1, 3, BertDType::kFp16, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(LaunchBiasGelu(nullptr, nullptr, 0, 3, BertDType::kFp16, nullptr).ok());
  EXPECT_EQ(LaunchPackedAttention(&dummy, nullptr, &dummy, &dummy, 1, 12, 65, 10, &dummy,
                                  BertDType::kFp32, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);  // head dim over 64
  EXPECT_EQ(LaunchPackedAttention(&dummy, nullptr, &dummy, &dummy, 1, 12, 32, 513, &dummy,
                                  BertDType::kFp32, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);  // longer than 512
  EXPECT_EQ(LaunchBiasResidualLayerNorm(&dummy, nullptr, &dummy, nullptr, nullptr, 1, 20000, 1e-12f,
                                        &dummy, BertDType::kFp32, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);  // row wider than shared memory
  EXPECT_EQ(
      LaunchMeanPoolNormalize(nullptr, nullptr, 2, 8, true, nullptr, BertDType::kBf16, nullptr)
          .code(),
      absl::StatusCode::kInvalidArgument);
}

// A random MiniLM-shaped model (2 layers) as GpuBertModel views over owned vectors.
struct RandomModel {
  explicit RandomModel(std::mt19937& rng, int layers = 2) {
    const int h = 384, inter = 1536, vocab = 300, max_pos = 512;
    auto make = [&](size_t n, float lo, float hi) {
      storage.push_back(Random(rng, n, lo, hi));
      return absl::Span<const float>(storage.back());
    };
    storage.reserve(5 + 12 * layers);
    model.vocab_size = vocab;
    model.hidden_size = h;
    model.num_heads = 12;
    model.intermediate_size = inter;
    model.max_position_embeddings = max_pos;
    model.word_embeddings = make(size_t{1} * vocab * h, -0.5f, 0.5f);
    model.position_embeddings = make(size_t{1} * max_pos * h, -0.5f, 0.5f);
    model.token_type0 = make(h, -0.5f, 0.5f);
    model.embedding_ln_gamma = make(h, 0.8f, 1.2f);
    model.embedding_ln_beta = make(h, -0.1f, 0.1f);
    const float ws = 1.f / std::sqrt(static_cast<float>(h));
    for (int i = 0; i < layers; ++i) {
      GpuBertLayer l;
      l.qkv_weight = make(size_t{3} * h * h, -ws, ws);
      l.qkv_bias = make(3 * h, -0.1f, 0.1f);
      l.attn_out_weight = make(size_t{1} * h * h, -ws, ws);
      l.attn_out_bias = make(h, -0.1f, 0.1f);
      l.attn_ln_gamma = make(h, 0.8f, 1.2f);
      l.attn_ln_beta = make(h, -0.1f, 0.1f);
      l.ffn_in_weight = make(size_t{1} * inter * h, -ws, ws);
      l.ffn_in_bias = make(inter, -0.1f, 0.1f);
      l.ffn_out_weight = make(size_t{1} * h * inter, -ws / 2, ws / 2);
      l.ffn_out_bias = make(h, -0.1f, 0.1f);
      l.out_ln_gamma = make(h, 0.8f, 1.2f);
      l.out_ln_beta = make(h, -0.1f, 0.1f);
      model.layers.push_back(l);
    }
  }
  std::vector<std::vector<float>> storage;
  GpuBertModel model;
};

std::vector<std::vector<int32_t>> RandomSequences(std::mt19937& rng, int n, int max_len,
                                                  int vocab) {
  std::vector<std::vector<int32_t>> seqs(n);
  for (auto& s : seqs) {
    s.resize(std::uniform_int_distribution<int>(1, max_len)(rng));
    for (int32_t& id : s) id = std::uniform_int_distribution<int>(0, vocab - 1)(rng);
  }
  return seqs;
}

TEST(GpuBertTest, PassesSlotsAndThreadsGiveTheSingleBatchResult) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  RandomModel rm(rng);
  const auto seqs = RandomSequences(rng, 40, 200, 300);
  for (BertDType t : kAllTypes) {
    GpuBert::Options big;
    big.precision = t == BertDType::kFp32   ? Precision::kFp32
                    : t == BertDType::kFp16 ? Precision::kFp16
                                            : Precision::kBf16;
    big.max_tokens = 16384;
    auto one = GpuBert::Create(big, rm.model);
    ASSERT_TRUE(one.ok()) << one.status();
    std::vector<float> want(seqs.size() * 384);
    ASSERT_TRUE((*one)->Embed(seqs, true, want.data()).ok());
    for (size_t s = 0; s < seqs.size(); ++s) {
      double norm = 0;
      for (int c = 0; c < 384; ++c) norm += double{want[s * 384 + c]} * want[s * 384 + c];
      ASSERT_NEAR(norm, 1.0, 1e-4) << s;
    }

    GpuBert::Options small = big;
    small.max_tokens = 600;  // several passes
    small.max_sequences = 5;
    small.num_slots = 3;
    auto many = GpuBert::Create(small, rm.model);
    ASSERT_TRUE(many.ok()) << many.status();
    std::vector<std::thread> threads;
    std::vector<std::vector<float>> got(4, std::vector<float>(want.size()));
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] { EXPECT_TRUE((*many)->Embed(seqs, true, got[i].data()).ok()); });
    }
    for (std::thread& th : threads) th.join();
    // Per sequence the arithmetic is the same whatever else shares the pass (rows of a GEMM do not
    // mix; attention and pooling are per sequence), up to cuBLAS choosing other kernels for other
    // shapes: compare by cosine.
    for (int i = 0; i < 4; ++i) {
      for (size_t s = 0; s < seqs.size(); ++s) {
        double dot = 0;
        for (int c = 0; c < 384; ++c) dot += double{got[i][s * 384 + c]} * want[s * 384 + c];
        EXPECT_GT(dot, 0.9999) << BertDTypeName(t) << " thread " << i << " sequence " << s;
      }
    }
    // The slot protocol with a completion callback, and the device times after it.
    std::atomic<bool> called{false};
    ASSERT_TRUE((*many)->Pack(1, absl::MakeConstSpan(seqs).subspan(0, 3)).ok());
    ASSERT_TRUE((*many)->Launch(1, true, [&] { called = true; }).ok());
    ASSERT_TRUE((*many)->Wait(1).ok());
    EXPECT_TRUE(called.load());
    EXPECT_EQ((*many)->packed_sequences(1), 3);
    for (int s = 0; s < 3; ++s) {
      double dot = 0;
      for (int c = 0; c < 384; ++c)
        dot += double{(*many)->Output(1)[s * 384 + c]} * want[s * 384 + c];
      EXPECT_GT(dot, 0.9999) << BertDTypeName(t) << " slot protocol, sequence " << s;
    }
    const GpuBertTimes times = (*many)->Times(1);
    EXPECT_GE(times.compute_us, 0);
    EXPECT_GE(times.h2d_us, 0);
    // Bad input is refused naming the sequence.
    std::vector<std::vector<int32_t>> bad = {{1, 2}, {1, 300}};
    std::vector<float> out(2 * 384);
    absl::Status st = (*one)->Embed(bad, true, out.data());
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(st.message()).find("sequence 1: token id 300"), std::string::npos) << st;
  }
}

TEST(GpuBertTest, CreateChecksShapes) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng(1);
  RandomModel rm(rng, 1);
  GpuBertModel bad = rm.model;
  bad.layers[0].ffn_in_bias = bad.layers[0].ffn_in_bias.subspan(1);
  auto b = GpuBert::Create(GpuBert::Options{}, bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(std::string(b.status().message()).find("ffn_in_bias has 1535 values, expected 1536"),
            std::string::npos)
      << b.status();
}

}  // namespace
}  // namespace ferry::cuda
