// GPU tests compare each kernel and GpuMlp::Forward with a CPU reference on fresh random data.
// Without a usable GPU they skip with the reason; the argument-checking tests run everywhere.
#include "cuda/kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cuda/cublas_loader.h"
#include "cuda/device.h"
#include "cuda/gpu_mlp.h"
#include "gtest/gtest.h"

namespace ferry::cuda {
namespace {

// Skips the calling test when no GPU is usable; the message carries ListGpus()'s reason, which
// starts with "no GPU: ".
#define FERRY_SKIP_WITHOUT_GPU()                             \
  do {                                                       \
    const auto gpus = ListGpus();                            \
    if (!gpus.ok()) GTEST_SKIP() << gpus.status().message(); \
  } while (false)

std::mt19937 SeededRng() {
  const uint32_t seed = std::random_device{}();
  std::cout << "[   SEED   ] " << seed << std::endl;
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return std::mt19937(seed);
}

std::vector<float> RandomVector(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A device buffer that frees itself; test-only.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    EXPECT_EQ(cudaMalloc(&ptr_, std::max<size_t>(count, 1) * sizeof(float)), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  float* get() { return ptr_; }
  void Upload(const std::vector<float>& host) {
    ASSERT_EQ(host.size(), count_);
    ASSERT_EQ(cudaMemcpy(ptr_, host.data(), count_ * sizeof(float), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  std::vector<float> Download() {
    std::vector<float> host(count_);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr_, count_ * sizeof(float), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host;
  }

 private:
  float* ptr_ = nullptr;
  size_t count_;
};

double ActivateRef(double x, Activation act) {
  switch (act) {
    case Activation::kNone:
      return x;
    case Activation::kRelu:
      return x > 0 ? x : 0;
    case Activation::kGelu:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::kTanh:
      return std::tanh(x);
    case Activation::kSigmoid:
      return 1.0 / (1.0 + std::exp(-x));
  }
  return x;
}

const char* Name(Activation act) {
  switch (act) {
    case Activation::kNone:
      return "none";
    case Activation::kRelu:
      return "relu";
    case Activation::kGelu:
      return "gelu";
    case Activation::kTanh:
      return "tanh";
    case Activation::kSigmoid:
      return "sigmoid";
  }
  return "?";
}

void SoftmaxRowsRef(std::vector<double>& y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    double* p = y.data() + r * cols;
    const double m = *std::max_element(p, p + cols);
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += (p[c] = std::exp(p[c] - m));
    for (int64_t c = 0; c < cols; ++c) p[c] /= sum;
  }
}

// Worst |got - want| / (atol + rtol·|want|); <= 1 passes.
double WorstError(const std::vector<float>& got, const std::vector<double>& want, double atol,
                  double rtol) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    worst = std::max(worst, std::abs(got[i] - want[i]) / (atol + rtol * std::abs(want[i])));
  }
  return worst;
}

struct Shape {
  int64_t rows;
  int64_t cols;
};
// Includes sizes below, at and off multiples of the 32-wide warp and of the block sizes.
const Shape kShapes[] = {{1, 1}, {3, 17}, {2, 32}, {33, 100}, {128, 257}, {1000, 31}, {7, 4097}};
const Activation kActivations[] = {Activation::kNone, Activation::kRelu, Activation::kGelu,
                                   Activation::kTanh, Activation::kSigmoid};

// ---- Everywhere
// ----------------------------------------------------------------------------------

TEST(DeviceTest, ListGpusReturnsGpusOrSaysWhyNot) {
  const auto gpus = ListGpus();
  if (!gpus.ok()) {
    EXPECT_EQ(gpus.status().code(), absl::StatusCode::kFailedPrecondition) << gpus.status();
    const std::string message(gpus.status().message());
    EXPECT_TRUE(absl::StartsWith(message, "no GPU") ||
                absl::StartsWith(message, "ferry was built without CUDA"))
        << message;
    EXPECT_EQ(absl::StartsWith(message, "ferry was built without CUDA"), !BuiltWithCuda());
    return;
  }
  EXPECT_TRUE(BuiltWithCuda());
  ASSERT_FALSE(gpus->empty());
  for (size_t i = 0; i < gpus->size(); ++i) {
    const GpuInfo& g = (*gpus)[i];
    std::cout << "GPU " << g.index << ": " << g.name << " sm_" << g.compute_capability_major
              << g.compute_capability_minor << ", " << (g.free_memory_bytes >> 20) << "/"
              << (g.total_memory_bytes >> 20) << " MiB free" << std::endl;
    EXPECT_EQ(g.index, static_cast<int>(i));
    EXPECT_FALSE(g.name.empty());
    EXPECT_GE(g.compute_capability_major, 3);
    EXPECT_GT(g.total_memory_bytes, 0);
    EXPECT_GT(g.free_memory_bytes, 0);
    EXPECT_LE(g.free_memory_bytes, g.total_memory_bytes);
  }
}

// cuBLAS is loaded with dlopen, which needs no GPU: where the toolkit's library is installed the
// entry points resolve and are callable (cublasCreate then reports that there is no device).
TEST(CublasLoaderTest, ResolvesEntryPointsWhereCublasIsInstalled) {
  auto api = LoadCublas();
  if (!api.ok()) {
    EXPECT_TRUE(absl::StrContains(api.status().message(), "libcublas.so")) << api.status();
    GTEST_SKIP() << "cuBLAS not installed: " << api.status();
  }
  const CublasApi& a = **api;
  ASSERT_NE(a.create, nullptr);
  ASSERT_NE(a.destroy, nullptr);
  ASSERT_NE(a.set_stream, nullptr);
  ASSERT_NE(a.set_math_mode, nullptr);
  ASSERT_NE(a.sgemm, nullptr);
  ASSERT_NE(a.status_string, nullptr);
  EXPECT_STREQ(a.status_string(CUBLAS_STATUS_SUCCESS), "success");
  cublasHandle_t handle = nullptr;
  const cublasStatus_t st = a.create(&handle);
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    (void)cudaGetLastError();
    EXPECT_NE(st, CUBLAS_STATUS_SUCCESS) << "cublasCreate succeeded without a GPU";
  } else {
    ASSERT_EQ(st, CUBLAS_STATUS_SUCCESS) << a.status_string(st);
    EXPECT_EQ(a.destroy(handle), CUBLAS_STATUS_SUCCESS);
  }
  // The second load is the same, cached, table.
  auto again = LoadCublas();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *api);
}

TEST(KernelArgsTest, BadShapesAreRejectedBeforeAnyLaunch) {
  float dummy = 0;
  EXPECT_EQ(LaunchBiasActivation(&dummy, nullptr, -1, 4, Activation::kRelu, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchBiasActivation(&dummy, nullptr, 4, 0, Activation::kRelu, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchBiasActivation(nullptr, nullptr, 4, 4, Activation::kRelu, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchRowSoftmax(&dummy, 2, 0, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchRowSoftmax(nullptr, 2, 3, nullptr).code(), absl::StatusCode::kInvalidArgument);
  // Empty work is fine and touches nothing (so it also succeeds without a GPU).
  EXPECT_TRUE(LaunchBiasActivation(nullptr, nullptr, 0, 4, Activation::kGelu, nullptr).ok());
  EXPECT_TRUE(LaunchRowSoftmax(nullptr, 0, 4, nullptr).ok());
}

GpuMlp::Layer MakeLayer(std::mt19937& rng, int64_t in, int64_t out, Activation act,
                        bool softmax = false, bool bias = true) {
  GpuMlp::Layer l;
  // Scaled like PyTorch's default init so activations stay O(1) through the layers.
  const float bound = 1.0f / std::sqrt(static_cast<float>(in));
  l.weight = RandomVector(rng, static_cast<size_t>(in * out), -bound, bound);
  if (bias) l.bias = RandomVector(rng, static_cast<size_t>(out), -bound, bound);
  l.in = in;
  l.out = out;
  l.act = act;
  l.softmax = softmax;
  return l;
}

TEST(GpuMlpTest, CreateValidatesLayersBeforeTouchingTheGpu) {
  std::mt19937 rng(1);
  auto code = [](std::vector<GpuMlp::Layer> layers, int64_t max_rows) {
    return GpuMlp::Create(0, std::move(layers), max_rows).status().code();
  };
  EXPECT_EQ(code({}, 8), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({MakeLayer(rng, 4, 3, Activation::kRelu)}, 0), absl::StatusCode::kInvalidArgument);
  // Layer chain mismatch: 4→3 then 5→2.
  EXPECT_EQ(
      code({MakeLayer(rng, 4, 3, Activation::kRelu), MakeLayer(rng, 5, 2, Activation::kNone)}, 8),
      absl::StatusCode::kInvalidArgument);
  GpuMlp::Layer short_weight = MakeLayer(rng, 4, 3, Activation::kNone);
  short_weight.weight.pop_back();
  EXPECT_EQ(code({short_weight}, 8), absl::StatusCode::kInvalidArgument);
  GpuMlp::Layer long_bias = MakeLayer(rng, 4, 3, Activation::kNone);
  long_bias.bias.push_back(0);
  EXPECT_EQ(code({long_bias}, 8), absl::StatusCode::kInvalidArgument);
}

TEST(GpuMlpTest, CreateWithoutGpuSaysWhy) {
  if (ListGpus().ok()) GTEST_SKIP() << "a GPU is present; this test covers the no-GPU path";
  std::mt19937 rng(2);
  const auto mlp = GpuMlp::Create(0, {MakeLayer(rng, 4, 3, Activation::kRelu)}, 8);
  ASSERT_FALSE(mlp.ok());
  EXPECT_EQ(mlp.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(mlp.status().message());
  EXPECT_TRUE(absl::StartsWith(message, "no GPU") ||
              absl::StartsWith(message, "ferry was built without CUDA"))
      << message;
}

// ---- GPU ---------------------------------------------------------------------------------------

TEST(KernelsGpuTest, BiasActivationMatchesCpu) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  for (const Shape& s : kShapes) {
    for (const Activation act : kActivations) {
      for (const bool with_bias : {true, false}) {
        SCOPED_TRACE(absl::StrCat(s.rows, "x", s.cols, " ", Name(act), with_bias ? " bias" : ""));
        const size_t n = static_cast<size_t>(s.rows * s.cols);
        const std::vector<float> x = RandomVector(rng, n, -6.0f, 6.0f);
        const std::vector<float> b = RandomVector(rng, static_cast<size_t>(s.cols), -2.0f, 2.0f);
        DeviceBuffer dy(n);
        DeviceBuffer db(b.size());
        dy.Upload(x);
        db.Upload(b);
        ASSERT_TRUE(LaunchBiasActivation(dy.get(), with_bias ? db.get() : nullptr, s.rows, s.cols,
                                         act, nullptr)
                        .ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<double> want(n);
        for (size_t i = 0; i < n; ++i) {
          want[i] = ActivateRef(static_cast<double>(x[i]) + (with_bias ? b[i % s.cols] : 0.0), act);
        }
        EXPECT_LE(WorstError(dy.Download(), want, 1e-5, 1e-5), 1.0);
      }
    }
  }
}

TEST(KernelsGpuTest, RowSoftmaxMatchesCpuAndIsStable) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  for (const Shape& s : kShapes) {
    // A large common offset would overflow expf without the max subtraction.
    for (const float offset : {0.0f, 1000.0f, -1000.0f}) {
      SCOPED_TRACE(absl::StrCat(s.rows, "x", s.cols, " offset ", offset));
      const size_t n = static_cast<size_t>(s.rows * s.cols);
      const std::vector<float> x = RandomVector(rng, n, offset - 20.0f, offset + 20.0f);
      DeviceBuffer dy(n);
      dy.Upload(x);
      ASSERT_TRUE(LaunchRowSoftmax(dy.get(), s.rows, s.cols, nullptr).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<double> want(x.begin(), x.end());
      SoftmaxRowsRef(want, s.rows, s.cols);
      const std::vector<float> got = dy.Download();
      // Inputs are floats of magnitude up to ~1000, so (x - max) carries an absolute rounding
      // error of ~1e-4 before exp; the tolerance allows for that relative error.
      EXPECT_LE(WorstError(got, want, 1e-6, offset == 0.0f ? 1e-5 : 3e-4), 1.0);
      for (int64_t r = 0; r < s.rows; ++r) {
        double sum = 0;
        for (int64_t c = 0; c < s.cols; ++c) sum += got[r * s.cols + c];
        ASSERT_NEAR(sum, 1.0, 1e-4) << "row " << r;
      }
    }
  }
}

std::vector<double> MlpRef(const std::vector<GpuMlp::Layer>& layers, const std::vector<float>& in,
                           int64_t rows) {
  std::vector<double> x(in.begin(), in.end());
  for (const GpuMlp::Layer& l : layers) {
    std::vector<double> y(static_cast<size_t>(rows * l.out));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < l.out; ++o) {
        double acc = l.bias.empty() ? 0.0 : l.bias[o];
        for (int64_t i = 0; i < l.in; ++i) acc += l.weight[o * l.in + i] * x[r * l.in + i];
        y[r * l.out + o] = ActivateRef(acc, l.act);
      }
    }
    if (l.softmax) SoftmaxRowsRef(y, rows, l.out);
    x = std::move(y);
  }
  return x;
}

TEST(GpuMlpGpuTest, ForwardMatchesCpu) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  struct Case {
    std::vector<int64_t> widths;
    int64_t rows;
  };
  const Case cases[] = {{{1, 1}, 1},
                        {{5, 33, 7}, 3},
                        {{64, 256, 256, 16}, 64},
                        {{100, 257, 31}, 129},
                        {{300, 1000, 10}, 1000}};
  for (const Case& c : cases) {
    for (const bool softmax : {false, true}) {
      SCOPED_TRACE(absl::StrCat(c.widths.size() - 1, " layers, first ", c.widths.front(), ", rows ",
                                c.rows, softmax ? ", softmax" : ""));
      std::vector<GpuMlp::Layer> layers;
      for (size_t i = 0; i + 1 < c.widths.size(); ++i) {
        const bool last = i + 2 == c.widths.size();
        const Activation act = last ? Activation::kNone : kActivations[1 + i % 4];
        // The middle layer of a 3-layer net has no bias, to cover that path.
        layers.push_back(MakeLayer(rng, c.widths[i], c.widths[i + 1], act, last && softmax,
                                   /*bias=*/i != 1));
      }
      const std::vector<float> in =
          RandomVector(rng, static_cast<size_t>(c.rows * c.widths.front()), -1.0f, 1.0f);
      const std::vector<double> want = MlpRef(layers, in, c.rows);
      auto mlp = GpuMlp::Create(0, layers, c.rows);
      ASSERT_TRUE(mlp.ok()) << mlp.status();
      EXPECT_EQ((*mlp)->input_dim(), c.widths.front());
      EXPECT_EQ((*mlp)->output_dim(), c.widths.back());
      std::vector<float> out(static_cast<size_t>(c.rows * c.widths.back()), NAN);
      ASSERT_TRUE((*mlp)->Forward(in.data(), c.rows, out.data()).ok());
      EXPECT_LE(WorstError(out, want, 1e-4, 1e-4), 1.0);
      // Fewer rows than max_rows reuses the same buffers and must not mix in stale rows.
      const int64_t fewer = std::max<int64_t>(1, c.rows / 2);
      std::vector<float> out2(static_cast<size_t>(fewer * c.widths.back()), NAN);
      ASSERT_TRUE((*mlp)->Forward(in.data(), fewer, out2.data()).ok());
      const std::vector<double> want2(want.begin(), want.begin() + out2.size());
      EXPECT_LE(WorstError(out2, want2, 1e-4, 1e-4), 1.0);
    }
  }
}

TEST(GpuMlpGpuTest, BatchesLargerThanMaxRowsRunInChunks) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  const std::vector<GpuMlp::Layer> layers = {MakeLayer(rng, 9, 40, Activation::kGelu),
                                             MakeLayer(rng, 40, 6, Activation::kNone, true)};
  const int64_t rows = 23;  // chunks of 7: 7 + 7 + 7 + 2
  const std::vector<float> in = RandomVector(rng, static_cast<size_t>(rows * 9), -1.0f, 1.0f);
  auto mlp = GpuMlp::Create(0, layers, 7);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  std::vector<float> out(static_cast<size_t>(rows * 6), NAN);
  ASSERT_TRUE((*mlp)->Forward(in.data(), rows, out.data()).ok());
  EXPECT_LE(WorstError(out, MlpRef(layers, in, rows), 1e-4, 1e-4), 1.0);
  EXPECT_TRUE((*mlp)->Forward(in.data(), 0, out.data()).ok());
  EXPECT_EQ((*mlp)->Forward(nullptr, 1, out.data()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*mlp)->Forward(in.data(), -1, out.data()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(GpuMlpGpuTest, ConcurrentForwardsOnOneInstanceAreSerialised) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  const std::vector<GpuMlp::Layer> layers = {MakeLayer(rng, 16, 64, Activation::kRelu),
                                             MakeLayer(rng, 64, 8, Activation::kTanh)};
  auto mlp = GpuMlp::Create(0, layers, 32);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  constexpr int kThreads = 4;
  constexpr int kIterations = 50;
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<double>> wants;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(RandomVector(rng, 32 * 16, -1.0f, 1.0f));
    wants.push_back(MlpRef(layers, inputs.back(), 32));
  }
  std::vector<double> worst(kThreads, 0.0);
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> out(32 * 8);
      for (int i = 0; i < kIterations; ++i) {
        if (!(*mlp)->Forward(inputs[t].data(), 32, out.data()).ok()) ++failures[t];
        worst[t] = std::max(worst[t], WorstError(out, wants[t], 1e-4, 1e-4));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], 0) << "thread " << t;
    EXPECT_LE(worst[t], 1.0) << "thread " << t;
  }
}

}  // namespace
}  // namespace ferry::cuda
