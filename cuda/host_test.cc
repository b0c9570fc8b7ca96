// The half of the GPU backend's tests that needs no GPU and no CUDA headers: it builds and runs in
// every build, CPU-only included. The GPU half is kernels_test.cc.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "cuda/device.h"
#include "cuda/gpu_test_util.h"
#include "cuda/graph_cache.h"
#include "cuda/health.h"
#include "cuda/linear.h"
#include "gtest/gtest.h"

namespace ferry::cuda {
namespace {

bool SaysNoGpu(const absl::Status& s) {
  const std::string m(s.message());
  return absl::StartsWith(m, "no GPU") || absl::StartsWith(m, "ferry was built without CUDA");
}

TEST(PrecisionTest, NamesRoundTripAndUnknownNamesAreRefused) {
  for (Precision p : {Precision::kFp32, Precision::kTf32, Precision::kBf16, Precision::kFp16}) {
    Precision back = Precision::kFp32;
    ASSERT_TRUE(PrecisionFromName(PrecisionName(p), &back)) << PrecisionName(p);
    EXPECT_EQ(back, p);
  }
  EXPECT_EQ(PrecisionName(Precision::kBf16), "bf16");
  Precision p = Precision::kTf32;
  EXPECT_FALSE(PrecisionFromName("FP32", &p));  // names are lower case, as in the manifest
  EXPECT_FALSE(PrecisionFromName("fp8", &p));
  EXPECT_FALSE(PrecisionFromName("", &p));
  EXPECT_EQ(p, Precision::kTf32);  // untouched on failure
}

TEST(PrecisionTest, TolerancesFollowTheFormatsUnitRoundoff) {
  const int64_t k = 256;
  const Tolerance fp32 = PrecisionTolerance(Precision::kFp32, k);
  const Tolerance tf32 = PrecisionTolerance(Precision::kTf32, k);
  const Tolerance fp16 = PrecisionTolerance(Precision::kFp16, k);
  const Tolerance bf16 = PrecisionTolerance(Precision::kBf16, k);
  // fp32: only accumulation, (k + 2)·2^-24 plus two input roundings of 2^-24.
  EXPECT_NEAR(fp32.rtol, 260.0 / (1 << 24), 1e-9);
  // fp16 rounds inputs to an 11-bit significand (u = 2^-11), bf16 to 8 bits (u = 2^-9), and tf32
  // may truncate to 11 bits (2^-10); the FP32 accumulation term is the same for all.
  const double accumulate = 258.0 / (1 << 24);
  EXPECT_NEAR(fp16.rtol, 2.0 / 2048 + accumulate, 1e-6);
  EXPECT_NEAR(tf32.rtol, 2.0 / 1024 + accumulate, 1e-6);
  EXPECT_NEAR(bf16.rtol, 2.0 / 512 + accumulate, 1e-5);
  EXPECT_LT(fp16.rtol, tf32.rtol);
  EXPECT_LT(fp32.rtol, tf32.rtol);
  EXPECT_LT(tf32.rtol, bf16.rtol);
  // Longer dot products accumulate more rounding.
  EXPECT_LT(PrecisionTolerance(Precision::kFp32, 16).rtol,
            PrecisionTolerance(Precision::kFp32, 4096).rtol);
}

LinearSpec Layer(int64_t in, int64_t out, bool bias = true) {
  LinearSpec l;
  l.in = in;
  l.out = out;
  l.weight.assign(static_cast<size_t>(in * out), 0.5f);
  if (bias) l.bias.assign(static_cast<size_t>(out), 0.25f);
  return l;
}

TEST(LinearTest, ChainChecksNameTheLayer) {
  EXPECT_TRUE(ValidateLinearChain({Layer(4, 3), Layer(3, 2, /*bias=*/false)}).ok());
  EXPECT_EQ(ValidateLinearChain({}).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status chain = ValidateLinearChain({Layer(4, 3), Layer(5, 2)});
  EXPECT_EQ(chain.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(chain.message(), "layer 1 takes 5 inputs but layer 0 gives 3"))
      << chain;
  LinearSpec short_weight = Layer(4, 3);
  short_weight.weight.pop_back();
  EXPECT_TRUE(absl::StrContains(ValidateLinearChain({short_weight}).message(), "weight has 11"));
  LinearSpec long_bias = Layer(4, 3);
  long_bias.bias.push_back(0);
  EXPECT_TRUE(absl::StrContains(ValidateLinearChain({long_bias}).message(), "bias has 4"));
  LinearSpec empty;
  EXPECT_EQ(ValidateLinearChain({empty}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(LinearTest, CreateChecksLayersBeforeTheGpuAndSaysWhyWithoutOne) {
  // A bad chain is refused before any GPU is looked at, in every build.
  const auto bad = LinearStack::Create({}, {Layer(4, 3), Layer(5, 2)});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  if (ListGpus().ok()) GTEST_SKIP() << "a GPU is present; this test covers the no-GPU path";
  const auto stack =
      LinearStack::Create({.device = 0, .precision = Precision::kBf16}, {Layer(4, 3)});
  ASSERT_FALSE(stack.ok());
  EXPECT_EQ(stack.status().code(), absl::StatusCode::kFailedPrecondition) << stack.status();
  EXPECT_TRUE(SaysNoGpu(stack.status())) << stack.status();
}

TEST(GraphBucketTest, BucketsArePowersOfTwoUpToMaxRows) {
  EXPECT_EQ(BatchBuckets(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(BatchBuckets(2), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(BatchBuckets(64), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(BatchBuckets(100), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 100}));
  EXPECT_TRUE(BatchBuckets(0).empty());
  EXPECT_TRUE(BatchBuckets(-5).empty());
}

TEST(GraphBucketTest, RowsArePaddedToTheSmallestBucketThatHoldsThem) {
  const std::vector<int64_t> buckets = BatchBuckets(100);
  EXPECT_EQ(*BucketFor(buckets, 1), 1);
  EXPECT_EQ(*BucketFor(buckets, 3), 4);
  EXPECT_EQ(*BucketFor(buckets, 4), 4);
  EXPECT_EQ(*BucketFor(buckets, 33), 64);
  EXPECT_EQ(*BucketFor(buckets, 65), 100);
  EXPECT_EQ(*BucketFor(buckets, 100), 100);
  // Every row count maps to a bucket that holds it and wastes less than half of it.
  for (int64_t rows = 1; rows <= 100; ++rows) {
    const int64_t b = *BucketFor(buckets, rows);
    EXPECT_GE(b, rows);
    EXPECT_LT(b, 2 * rows) << rows;
  }
  EXPECT_EQ(BucketFor(buckets, 101).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BucketFor(buckets, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BucketFor({}, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GraphCacheTest, CreateRefusesBadOptions) {
  const absl::StatusCode want =
      BuiltWithCuda() ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kFailedPrecondition;
  auto noop = [](int64_t, cudaStream_t) { return absl::OkStatus(); };
  EXPECT_EQ(GraphCache::Create({.device = 0, .buckets = {}, .enqueue = noop}).status().code(),
            want);
  EXPECT_EQ(GraphCache::Create({.device = 0, .buckets = {4, 2}, .enqueue = noop}).status().code(),
            want);
  EXPECT_EQ(GraphCache::Create({.device = 0, .buckets = {1, 1}, .enqueue = noop}).status().code(),
            want);
  EXPECT_EQ(GraphCache::Create({.device = 0, .buckets = {1, 2}, .enqueue = {}}).status().code(),
            want);
}

class GpuHealthTest : public ::testing::Test {
 protected:
  void SetUp() override { ResetGpuHealthForTest(); }
  void TearDown() override { ResetGpuHealthForTest(); }
};

TEST_F(GpuHealthTest, AFaultMakesThatGpuUnusableAndIsCounted) {
  EXPECT_TRUE(AllGpusHealthy());
  EXPECT_TRUE(GpuHealth(1).ok());
  EXPECT_EQ(GpuFaultCount(), 0);
  EXPECT_TRUE(absl::StrContains(GpuHealthPrometheusText(), "ferry_gpu_context_errors_total 0\n"));

  ReportGpuFault(1, "cudaErrorIllegalAddress: an illegal memory access was encountered");
  ReportGpuFault(1, "a later error");  // counted, but the first reason is kept
  EXPECT_FALSE(AllGpusHealthy());
  EXPECT_TRUE(GpuHealth(0).ok());
  const absl::Status s = GpuHealth(1);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(s.message(), "GPU 1 is unusable")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "cudaErrorIllegalAddress")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "a later error")) << s;
  EXPECT_EQ(GpuFaultCount(), 2);
  const std::string text = GpuHealthPrometheusText();
  EXPECT_TRUE(absl::StrContains(text, "ferry_gpu_context_errors_total 2\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "ferry_gpu_healthy{gpu=\"1\"} 0\n")) << text;
}

TEST_F(GpuHealthTest, CheckAfterErrorWithoutAGpuFindsNothingToPoison) {
  if (ListGpus().ok()) GTEST_SKIP() << "a GPU is present; kernels_test covers the GPU path";
  EXPECT_TRUE(CheckGpuAfterError(0).ok());
  EXPECT_TRUE(AllGpusHealthy());
  EXPECT_EQ(GpuFaultCount(), 0);
}

TEST(DeviceTest, DiscoveryReportsGpusOrWhyNot) {
  const auto gpus = ListGpus();
  if (!gpus.ok()) {
    EXPECT_EQ(gpus.status().code(), absl::StatusCode::kFailedPrecondition) << gpus.status();
    EXPECT_TRUE(SaysNoGpu(gpus.status())) << gpus.status();
    EXPECT_EQ(absl::StartsWith(gpus.status().message(), "ferry was built without CUDA"),
              !BuiltWithCuda());
    return;
  }
  for (const GpuInfo& g : *gpus) {
    EXPECT_GT(g.total_memory_bytes, 0);
    // Free memory comes from NVML when the driver has it, else it is unknown (-1).
    EXPECT_TRUE(g.free_memory_bytes == -1 ||
                (g.free_memory_bytes > 0 && g.free_memory_bytes <= g.total_memory_bytes))
        << g.free_memory_bytes;
  }
}

TEST(DeviceTest, MemoryInUseComesFromTheDriverOrSaysWhyNot) {
  const auto gpus = ListGpus();
  if (!gpus.ok()) {
    const absl::StatusOr<GpuMemoryInfo> memory = GetGpuMemory(0);
    ASSERT_FALSE(memory.ok());
    EXPECT_EQ(memory.status().code(), absl::StatusCode::kFailedPrecondition) << memory.status();
    GTEST_SKIP() << "no GPU: " << gpus.status();
  }
  EXPECT_EQ(GetGpuMemory(static_cast<int>(gpus->size())).status().code(),
            absl::StatusCode::kFailedPrecondition);
  for (const GpuInfo& g : *gpus) {
    const absl::StatusOr<GpuMemoryInfo> memory = GetGpuMemory(g.index);
    if (!memory.ok()) {
      // Only a driver without NVML, which discovery then also reports as unknown free memory.
      EXPECT_EQ(memory.status().code(), absl::StatusCode::kUnavailable) << memory.status();
      EXPECT_EQ(g.free_memory_bytes, -1);
      continue;
    }
    // NVML's total and CUDA's totalGlobalMem count reserved memory differently: same order only.
    EXPECT_GE(memory->total_bytes, g.total_memory_bytes / 2) << g.index;
    EXPECT_GE(memory->used_bytes, 0) << g.index;
    EXPECT_LE(memory->used_bytes, memory->total_bytes) << g.index;
  }
}

TEST(GpuTestUtilTest, RequireGpuIsReadFromTheEnvironment) {
  const char* old = std::getenv("FERRY_REQUIRE_GPU");
  const std::string saved = old != nullptr ? old : "";
  setenv("FERRY_REQUIRE_GPU", "1", 1);
  EXPECT_TRUE(GpuRequired());
  setenv("FERRY_REQUIRE_GPU", "0", 1);
  EXPECT_FALSE(GpuRequired());
  unsetenv("FERRY_REQUIRE_GPU");
  EXPECT_FALSE(GpuRequired());
  if (old != nullptr) setenv("FERRY_REQUIRE_GPU", saved.c_str(), 1);
}

// Under FERRY_REQUIRE_GPU=1 a machine without a usable GPU fails here, whatever else skips.
TEST(GpuTestUtilTest, AGpuIsPresentWhenRequired) {
  if (!GpuRequired()) GTEST_SKIP() << "FERRY_REQUIRE_GPU is not 1";
  const auto gpus = ListGpus();
  ASSERT_TRUE(gpus.ok()) << "FERRY_REQUIRE_GPU=1 but " << gpus.status();
}

}  // namespace
}  // namespace ferry::cuda
