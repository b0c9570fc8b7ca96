// GPU tests compare each kernel and GpuMlp::Forward with a CPU reference on fresh random data.
// Without a usable GPU they skip with the reason; the argument-checking tests run everywhere.
#include "cuda/kernels.h"

#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cuda/cublas_loader.h"
#include "cuda/device.h"
#include "cuda/gpu_mlp.h"
#include "cuda/gpu_test_util.h"
#include "cuda/graph_cache.h"
#include "cuda/health.h"
#include "cuda/linear.h"
#include "gtest/gtest.h"

namespace ferry::cuda {
namespace {

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
    // Free memory comes from NVML (no context); -1 when the driver has no NVML.
    EXPECT_TRUE(g.free_memory_bytes == -1 ||
                (g.free_memory_bytes > 0 && g.free_memory_bytes <= g.total_memory_bytes))
        << g.free_memory_bytes;
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
  // cuBLASLt (LinearStack's GEMMs) ships beside cuBLAS.
  auto lt = LoadCublasLt();
  ASSERT_TRUE(lt.ok()) << lt.status();
  EXPECT_NE((*lt)->matmul, nullptr);
  EXPECT_NE((*lt)->heuristic, nullptr);
  EXPECT_STREQ((*lt)->status_string(CUBLAS_STATUS_SUCCESS), "success");
  EXPECT_EQ(*LoadCublasLt(), *lt);
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
  EXPECT_EQ(LaunchFloatToHalf(&dummy, nullptr, 4, HalfType::kBf16, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchFloatToHalf(&dummy, &dummy, -1, HalfType::kFp16, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchHalfToFloat(nullptr, &dummy, 4, HalfType::kBf16, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(LaunchFloatToHalf(nullptr, nullptr, 0, HalfType::kFp16, nullptr).ok());
  EXPECT_TRUE(LaunchHalfToFloat(nullptr, nullptr, 0, HalfType::kBf16, nullptr).ok());
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

// ---- Grid-stride and multi-row paths -----------------------------------------------------------

// More elements than one grid of 65535 blocks × 256 threads covers (16,776,960), so each thread
// runs the grid-stride loop more than once; the bias index must stay i % cols throughout.
TEST(KernelsGpuTest, BiasActivationCoversMoreElementsThanOneGrid) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  const int64_t rows = 4100;
  const int64_t cols = 4099;
  const size_t n = static_cast<size_t>(rows * cols);
  ASSERT_GT(n, size_t{65535} * 256);
  const std::vector<float> x = RandomVector(rng, n, -4.0f, 4.0f);
  const std::vector<float> b = RandomVector(rng, static_cast<size_t>(cols), -2.0f, 2.0f);
  for (const Activation act : {Activation::kRelu, Activation::kSigmoid}) {
    SCOPED_TRACE(Name(act));
    DeviceBuffer dy(n);
    DeviceBuffer db(b.size());
    dy.Upload(x);
    db.Upload(b);
    ASSERT_TRUE(LaunchBiasActivation(dy.get(), db.get(), rows, cols, act, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<double> want(n);
    for (size_t i = 0; i < n; ++i) {
      want[i] = ActivateRef(static_cast<double>(x[i]) + b[i % cols], act);
    }
    EXPECT_LE(WorstError(dy.Download(), want, 1e-5, 1e-5), 1.0);
  }
}

// More rows than the 65535 blocks the launcher starts, so blocks loop over rows.
TEST(KernelsGpuTest, RowSoftmaxCoversMoreRowsThanBlocks) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  const int64_t rows = 70'000;
  for (const int64_t cols : {int64_t{5}, int64_t{40}}) {
    SCOPED_TRACE(absl::StrCat(rows, "x", cols));
    const size_t n = static_cast<size_t>(rows * cols);
    const std::vector<float> x = RandomVector(rng, n, -10.0f, 10.0f);
    DeviceBuffer dy(n);
    dy.Upload(x);
    ASSERT_TRUE(LaunchRowSoftmax(dy.get(), rows, cols, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<double> want(x.begin(), x.end());
    SoftmaxRowsRef(want, rows, cols);
    const std::vector<float> got = dy.Download();
    EXPECT_LE(WorstError(got, want, 1e-6, 1e-5), 1.0);
    // The last rows are the ones a single pass of blocks would miss.
    double last_sum = 0;
    for (int64_t c = 0; c < cols; ++c) last_sum += got[(rows - 1) * cols + c];
    EXPECT_NEAR(last_sum, 1.0, 1e-5);
  }
}

// ---- Conversions -------------------------------------------------------------------------------

// bfloat16 of f, rounded to nearest even (NaN stays a quiet NaN).
uint16_t Bf16Ref(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint32_t rounded = u + 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(rounded >> 16);
}
float Bf16ToFloatRef(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }
// IEEE binary16 through the compiler's _Float16 (round to nearest even, overflow to inf).
uint16_t Fp16Ref(float f) { return std::bit_cast<uint16_t>(static_cast<_Float16>(f)); }
float Fp16ToFloatRef(uint16_t h) { return static_cast<float>(std::bit_cast<_Float16>(h)); }

// Random values over many binades, plus the cases rounding gets wrong first: ties, the largest
// finite values, overflow, subnormals, zeros of both signs, infinities.
std::vector<float> ConversionInputs(std::mt19937& rng, size_t n) {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          1.0f + std::ldexp(1.0f, -8),      // bf16 tie: to even (1.0)
                          1.0f + 3 * std::ldexp(1.0f, -8),  // bf16 tie: to even (up)
                          1.0f + std::ldexp(1.0f, -11),     // fp16 tie: to even (1.0)
                          65504.0f,                         // largest fp16
                          65520.0f,                         // rounds to fp16 inf
                          -1e6f,
                          std::ldexp(1.0f, -20),  // an fp16 subnormal
                          std::ldexp(1.0f, -30),  // below fp16's range: 0
                          std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()};
  std::uniform_real_distribution<float> mantissa(-2.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-30, 30);
  while (v.size() < n) v.push_back(std::ldexp(mantissa(rng), exponent(rng)));
  v.resize(n);
  return v;
}

TEST(ConversionGpuTest, FloatToHalfAndBackMatchTheCpu) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  // 17M elements: beyond one grid, so the grid-stride loop runs too.
  for (const size_t n : {size_t{1}, size_t{14}, size_t{1000}, size_t{17'000'000}}) {
    const std::vector<float> x = ConversionInputs(rng, n);
    for (const HalfType type : {HalfType::kBf16, HalfType::kFp16}) {
      SCOPED_TRACE(absl::StrCat(type == HalfType::kBf16 ? "bf16" : "fp16", " n=", n));
      DeviceBuffer din(n);
      din.Upload(x);
      void* dhalf = nullptr;
      ASSERT_EQ(cudaMalloc(&dhalf, n * 2), cudaSuccess);
      DeviceBuffer dback(n);
      ASSERT_TRUE(LaunchFloatToHalf(din.get(), dhalf, static_cast<int64_t>(n), type, nullptr).ok());
      ASSERT_TRUE(
          LaunchHalfToFloat(dhalf, dback.get(), static_cast<int64_t>(n), type, nullptr).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<uint16_t> half(n);
      ASSERT_EQ(cudaMemcpy(half.data(), dhalf, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      cudaFree(dhalf);
      const std::vector<float> back = dback.Download();
      size_t bad = 0;
      for (size_t i = 0; i < n; ++i) {
        const uint16_t want = type == HalfType::kBf16 ? Bf16Ref(x[i]) : Fp16Ref(x[i]);
        const float want_back =
            type == HalfType::kBf16 ? Bf16ToFloatRef(want) : Fp16ToFloatRef(want);
        const bool same = half[i] == want &&
                          std::bit_cast<uint32_t>(back[i]) == std::bit_cast<uint32_t>(want_back);
        if (!same && ++bad <= 5) {
          ADD_FAILURE() << "x[" << i << "] = " << x[i] << ": got 0x" << std::hex << half[i]
                        << " want 0x" << want << std::dec << ", back " << back[i] << " want "
                        << want_back;
        }
      }
      EXPECT_EQ(bad, 0u);
    }
  }
}

// ---- LinearStack -------------------------------------------------------------------------------

const Precision kPrecisions[] = {Precision::kFp32, Precision::kTf32, Precision::kBf16,
                                 Precision::kFp16};

LinearSpec MakeLinear(std::mt19937& rng, int64_t in, int64_t out, Activation act,
                      bool softmax = false, bool bias = true) {
  const GpuMlp::Layer l = MakeLayer(rng, in, out, act, softmax, bias);
  return LinearSpec{l.weight, l.bias, l.in, l.out, l.act, l.softmax};
}

// The exact result of the chain in double, and for each output a rigorous bound on the error of
// a GPU run at `p`: each layer adds PrecisionTolerance (rounding of its inputs and accumulation),
// carries the error of its inputs through |W| (activations are 1-Lipschitz), and the FP32
// activation functions add a few ulps. Softmax turns an input error of at most m into a relative
// output error of at most e^{2m} − 1.
struct ChainRef {
  std::vector<double> want;
  std::vector<double> bound;
};

ChainRef LinearRef(const std::vector<LinearSpec>& layers, const std::vector<float>& in,
                   int64_t rows, Precision p) {
  std::vector<double> x(in.begin(), in.end());
  std::vector<double> e(x.size(), 0.0);
  constexpr double kActivationUlps = 8 * FLT_EPSILON;
  for (const LinearSpec& l : layers) {
    const Tolerance tol = PrecisionTolerance(p, l.in);
    std::vector<double> y(static_cast<size_t>(rows * l.out));
    std::vector<double> ey(y.size());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < l.out; ++o) {
        double acc = l.bias.empty() ? 0.0 : l.bias[o];
        double magnitude = std::abs(acc);
        double carried = 0;
        for (int64_t i = 0; i < l.in; ++i) {
          const double w = l.weight[o * l.in + i];
          acc += w * x[r * l.in + i];
          magnitude += std::abs(w * x[r * l.in + i]);
          carried += std::abs(w) * e[r * l.in + i];
        }
        const double out = ActivateRef(acc, l.act);
        y[r * l.out + o] = out;
        ey[r * l.out + o] = (tol.atol + tol.rtol * magnitude + carried) * (1 + tol.rtol) +
                            kActivationUlps * (std::abs(out) + 1e-3);
      }
    }
    if (l.softmax) {
      SoftmaxRowsRef(y, rows, l.out);
      for (int64_t r = 0; r < rows; ++r) {
        double m = 0;
        for (int64_t o = 0; o < l.out; ++o) m = std::max(m, ey[r * l.out + o]);
        for (int64_t o = 0; o < l.out; ++o) {
          const double py = y[r * l.out + o];
          ey[r * l.out + o] = py * std::expm1(2 * m) + kActivationUlps * (py + 1e-3);
        }
      }
    }
    x = std::move(y);
    e = std::move(ey);
  }
  return {std::move(x), std::move(e)};
}

// How far past its bound the worst output is: <= 1 passes.
double WorstOverBound(const std::vector<float>& got, const ChainRef& ref) {
  EXPECT_EQ(got.size(), ref.want.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(got.size(), ref.want.size()); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    worst = std::max(worst, std::abs(got[i] - ref.want[i]) / ref.bound[i]);
  }
  return worst;
}

// A non-blocking stream that destroys itself; test-only.
class TestStream {
 public:
  TestStream() { EXPECT_EQ(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), cudaSuccess); }
  ~TestStream() { cudaStreamDestroy(s_); }
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

std::vector<float> RunStack(LinearStack& stack, LinearScratch& scratch,
                            const std::vector<float>& in, int64_t rows) {
  DeviceBuffer din(in.size());
  din.Upload(in);
  DeviceBuffer dout(static_cast<size_t>(rows * stack.output_dim()));
  TestStream stream;
  const absl::Status s = stack.Enqueue(din.get(), rows, dout.get(), scratch, stream.get());
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
  return dout.Download();
}

TEST(LinearGpuTest, EveryPrecisionStaysWithinItsBound) {
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
      std::vector<LinearSpec> layers;
      for (size_t i = 0; i + 1 < c.widths.size(); ++i) {
        const bool last = i + 2 == c.widths.size();
        const Activation act = last ? Activation::kNone : kActivations[1 + i % 4];
        layers.push_back(MakeLinear(rng, c.widths[i], c.widths[i + 1], act, last && softmax,
                                    /*bias=*/i != 1));
      }
      const std::vector<float> in =
          RandomVector(rng, static_cast<size_t>(c.rows * c.widths.front()), -1.0f, 1.0f);
      for (const Precision p : kPrecisions) {
        SCOPED_TRACE(absl::StrCat(std::string(PrecisionName(p)), ": ", c.widths.size() - 1,
                                  " layers, first ", c.widths.front(), ", rows ", c.rows,
                                  softmax ? ", softmax" : ""));
        const ChainRef ref = LinearRef(layers, in, c.rows, p);
        auto stack = LinearStack::Create({.device = 0, .precision = p}, layers);
        ASSERT_TRUE(stack.ok()) << stack.status();
        auto scratch = (*stack)->CreateScratch(c.rows);
        ASSERT_TRUE(scratch.ok()) << scratch.status();
        EXPECT_LE(WorstOverBound(RunStack(**stack, **scratch, in, c.rows), ref), 1.0);
        // Fewer rows reuse the same buffers without mixing in stale rows.
        const int64_t fewer = std::max<int64_t>(1, c.rows / 2);
        const std::vector<float> part(in.begin(), in.begin() + fewer * c.widths.front());
        EXPECT_LE(WorstOverBound(RunStack(**stack, **scratch, part, fewer),
                                 LinearRef(layers, part, fewer, p)),
                  1.0);
      }
    }
  }
}

TEST(LinearGpuTest, HalfPrecisionsStoreHalfTheBytesAndRoundForReal) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  const std::vector<LinearSpec> layers = {MakeLinear(rng, 256, 512, Activation::kRelu),
                                          MakeLinear(rng, 512, 64, Activation::kNone)};
  const int64_t rows = 32;
  const std::vector<float> in = RandomVector(rng, static_cast<size_t>(rows * 256), -1.0f, 1.0f);
  std::vector<std::vector<float>> outs;
  std::vector<size_t> bytes;
  for (const Precision p : kPrecisions) {
    auto stack = LinearStack::Create({.device = 0, .precision = p}, layers);
    ASSERT_TRUE(stack.ok()) << stack.status();
    EXPECT_EQ((*stack)->flops_per_row(), 2 * (256 * 512 + 512 * 64));
    auto scratch = (*stack)->CreateScratch(rows);
    ASSERT_TRUE(scratch.ok()) << scratch.status();
    outs.push_back(RunStack(**stack, **scratch, in, rows));
    bytes.push_back((*stack)->weight_bytes());
  }
  const size_t biases = (512 + 64) * sizeof(float);
  EXPECT_EQ(bytes[0], (256 * 512 + 512 * 64) * sizeof(float) + biases);  // fp32
  EXPECT_EQ(bytes[1], bytes[0]);                                         // tf32: FP32 storage
  EXPECT_EQ(bytes[2], (256 * 512 + 512 * 64) * 2 + biases);              // bf16
  EXPECT_EQ(bytes[3], bytes[2]);                                         // fp16
  // bf16 keeps 8 significant bits: its result must differ from fp32's (it did round).
  double bf16_vs_fp32 = 0;
  for (size_t i = 0; i < outs[0].size(); ++i) {
    bf16_vs_fp32 = std::max<double>(bf16_vs_fp32, std::abs(outs[2][i] - outs[0][i]));
  }
  EXPECT_GT(bf16_vs_fp32, 0.0);
}

TEST(LinearGpuTest, EnqueueRefusesBadArguments) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  auto stack = LinearStack::Create({}, {MakeLinear(rng, 4, 3, Activation::kRelu)});
  ASSERT_TRUE(stack.ok()) << stack.status();
  auto scratch = (*stack)->CreateScratch(8);
  ASSERT_TRUE(scratch.ok()) << scratch.status();
  DeviceBuffer din(4 * 9);
  DeviceBuffer dout(3 * 9);
  const auto code = [&](int64_t rows, float* in, float* out) {
    return (*stack)->Enqueue(in, rows, out, **scratch, nullptr).code();
  };
  EXPECT_EQ(code(9, din.get(), dout.get()), absl::StatusCode::kInvalidArgument);  // > max_rows
  EXPECT_EQ(code(0, din.get(), dout.get()), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(2, nullptr, dout.get()), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*stack)->CreateScratch(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LinearStack::Create({.device = 99}, {MakeLinear(rng, 4, 3, Activation::kRelu)})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- GraphCache --------------------------------------------------------------------------------

TEST(GraphCacheGpuTest, ReplaysPaddedBucketsWithTheSameResults) {
  FERRY_SKIP_WITHOUT_GPU();
  std::mt19937 rng = SeededRng();
  const int64_t max_rows = 100;
  for (const Precision p : {Precision::kFp32, Precision::kBf16}) {
    SCOPED_TRACE(std::string(PrecisionName(p)));
    const std::vector<LinearSpec> layers = {MakeLinear(rng, 16, 64, Activation::kGelu),
                                            MakeLinear(rng, 64, 8, Activation::kNone, true)};
    auto stack = LinearStack::Create({.device = 0, .precision = p}, layers);
    ASSERT_TRUE(stack.ok()) << stack.status();
    auto scratch = (*stack)->CreateScratch(max_rows);
    ASSERT_TRUE(scratch.ok()) << scratch.status();
    DeviceBuffer din(max_rows * 16);
    DeviceBuffer dout(max_rows * 8);
    // Stale rows past each batch: the padding must not leak into the rows that are read.
    din.Upload(RandomVector(rng, max_rows * 16, -50.0f, 50.0f));
    LinearStack* s = stack->get();
    LinearScratch* sc = scratch->get();
    float* in_ptr = din.get();
    float* out_ptr = dout.get();
    auto cache =
        GraphCache::Create({.device = 0,
                            .buckets = BatchBuckets(max_rows),
                            .enqueue = [s, sc, in_ptr, out_ptr](int64_t rows, cudaStream_t stream) {
                              return s->Enqueue(in_ptr, rows, out_ptr, *sc, stream);
                            }});
    ASSERT_TRUE(cache.ok()) << cache.status();
    TestStream stream;
    int expected_graphs = 0;
    for (const int64_t rows : {1, 3, 4, 33, 65, 100, 3}) {
      SCOPED_TRACE(absl::StrCat(rows, " rows"));
      const std::vector<float> in = RandomVector(rng, static_cast<size_t>(rows * 16), -1.0f, 1.0f);
      ASSERT_EQ(cudaMemcpy(in_ptr, in.data(), in.size() * sizeof(float), cudaMemcpyHostToDevice),
                cudaSuccess);
      const int before = (*cache)->captured();
      auto bucket = (*cache)->Launch(rows, stream.get());
      ASSERT_TRUE(bucket.ok()) << bucket.status();
      EXPECT_EQ(*bucket, *BucketFor(BatchBuckets(max_rows), rows));
      if ((*cache)->captured() > before) ++expected_graphs;
      ASSERT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
      std::vector<float> got(static_cast<size_t>(rows * 8));
      ASSERT_EQ(cudaMemcpy(got.data(), out_ptr, got.size() * sizeof(float), cudaMemcpyDeviceToHost),
                cudaSuccess);
      EXPECT_LE(WorstOverBound(got, LinearRef(layers, in, rows, p)), 1.0);
    }
    // 1, 3→4, 4 (again), 33→64, 65→100, 100 (again), 3 (again): four graphs.
    EXPECT_EQ(expected_graphs, 4);
    EXPECT_EQ((*cache)->captured(), 4);
    EXPECT_EQ((*cache)->Launch(101, stream.get()).status().code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE((*cache)->Prepare(stream.get()).ok());
    EXPECT_EQ((*cache)->captured(), static_cast<int>(BatchBuckets(max_rows).size()));
  }
}

// ---- Warm-up and health ------------------------------------------------------------------------

TEST(HealthGpuTest, WarmUpKernelRunsOnThisGpu) {
  FERRY_SKIP_WITHOUT_GPU();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  const absl::Status s = ProbeKernelImage(nullptr);
  EXPECT_TRUE(s.ok()) << s;
}

TEST(HealthGpuTest, AnOrdinaryErrorLeavesTheGpuHealthy) {
  FERRY_SKIP_WITHOUT_GPU();
  ResetGpuHealthForTest();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  void* p = nullptr;
  // Far more than any GPU has: fails, but poisons nothing.
  EXPECT_NE(cudaMalloc(&p, size_t{1} << 50), cudaSuccess);
  EXPECT_TRUE(CheckGpuAfterError(0).ok());
  EXPECT_TRUE(AllGpusHealthy());
  EXPECT_EQ(GpuFaultCount(), 0);
  EXPECT_EQ(cudaMalloc(&p, 1024), cudaSuccess);  // the context still works
  cudaFree(p);
}

// A kernel that traps poisons the context for the rest of the process, so it runs in a child.
TEST(HealthGpuDeathTest, AStickyErrorMarksTheGpuFaulted) {
  FERRY_SKIP_WITHOUT_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process, not a fork of a CUDA one
  EXPECT_EXIT(
      {
        ResetGpuHealthForTest();
        (void)cudaSetDevice(0);
        (void)LaunchTrapForTest(nullptr);
        (void)cudaDeviceSynchronize();
        const absl::Status s = CheckGpuAfterError(0);
        const bool ok = absl::IsUnavailable(s) && GpuFaultCount() == 1 && !AllGpusHealthy() &&
                        absl::StrContains(s.message(), "GPU 0 is unusable");
        std::cerr << s << std::endl;
        _exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "GPU 0 is unusable");
}

}  // namespace
}  // namespace ferry::cuda
