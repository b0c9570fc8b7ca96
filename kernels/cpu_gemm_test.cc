#include "kernels/cpu_gemm.h"

#include <cmath>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace ferry::kernels {
namespace {

std::vector<float> Random(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

struct Shape {
  int rows, n, k, ld_in, ld_out;
};

// Every row tile size (1..6), a partial last panel (n % 16 != 0), several k blocks (k > 256),
// several row blocks (rows > 96), strided input and output, and a product split over threads.
const Shape kShapes[] = {{1, 16, 8, 8, 16},
                         {5, 37, 19, 24, 40},
                         {16, 1152, 384, 384, 1152},
                         {7, 384, 1536, 1536, 400},
                         {203, 50, 300, 310, 64},
                         {6, 1, 1, 1, 1},
                         // Over 32M multiply-adds: split over the OpenMP threads.
                         {200, 520, 384, 384, 520}};

double GeluReference(double y) { return 0.5 * y * (1.0 + std::erf(y / std::sqrt(2.0))); }

// For the AVX-512 tile (12×32, k blocks of 512, a row block's rows shared evenly over its
// tiles): rows 1-13 give every tile height 1-12 (13 = 7 + 6), 25 = 9 + 8 + 8; n = 70 ends in a
// 6-wide panel, n = 48 in a 16-wide one (the second zmm masked off), n = 17 in a 1-wide second
// zmm; k = 512, 513 and 1100 hit the k-block edges (one block, one plus one float, 512+512+76).
std::vector<Shape> Avx512Shapes() {
  std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
  for (int rows = 1; rows <= 13; ++rows) shapes.push_back({rows, 70, 1100, 1101, 75});
  for (int k : {512, 513}) shapes.push_back({25, 48, k, k, 48});
  shapes.push_back({12, 17, 513, 514, 19});
  // Row blocks of 96 (8 tiles of 12), 96 and 8; the threaded split in groups of 2 panels.
  shapes.push_back({200, 1540, 384, 384, 1540});
  return shapes;
}

void CheckLinear(GemmKernel kernel, Activation activation,
                 const std::vector<Shape>& shapes = {std::begin(kShapes), std::end(kShapes)}) {
  const bool gelu = activation == Activation::kGelu;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message()
                 << "rows " << s.rows << " n " << s.n << " k " << s.k << (gelu ? " gelu" : ""));
    const std::vector<float> w = Random(size_t(s.n) * s.k, 1), bias = Random(s.n, 2),
                             in = Random(size_t(s.rows) * s.ld_in, 3);
    std::vector<float> out(size_t(s.rows) * s.ld_out, 12345.f);
    const PackedLinear lin(w.data(), bias.data(), s.n, s.k, activation, kernel);
    EXPECT_EQ(lin.n(), s.n);
    EXPECT_EQ(lin.k(), s.k);
    ASSERT_EQ(lin.kernel(), kernel);
    lin.Apply(in.data(), s.rows, s.ld_in, out.data(), s.ld_out);
    double worst = 0;
    for (int r = 0; r < s.rows; ++r) {
      for (int j = 0; j < s.n; ++j) {
        double want = bias[j];
        for (int c = 0; c < s.k; ++c) {
          want += double(in[size_t(r) * s.ld_in + c]) * w[size_t(j) * s.k + c];
        }
        // GELU's slope is within [-0.13, 1.13]: the product's error passes through about as is.
        if (gelu) want = GeluReference(want);
        worst = std::max(
            worst, std::abs(out[size_t(r) * s.ld_out + j] - want) / (1.0 + std::sqrt(double(s.k))));
      }
      // Columns past n in a strided output are left alone.
      for (int j = s.n; j < s.ld_out; ++j) ASSERT_EQ(out[size_t(r) * s.ld_out + j], 12345.f);
    }
    EXPECT_LT(worst, 2e-6);
  }
}

#define SKIP_WITHOUT_AVX2() \
  if (!CpuHasAvx2Fma()) GTEST_SKIP() << "this CPU lacks AVX2+FMA: the packed tiles are not run"
#define SKIP_WITHOUT_AVX512()                                           \
  if (!CpuHasAvx512())                                                  \
  GTEST_SKIP() << "this CPU lacks AVX-512F: the 12x32 tile is not run " \
                  "(the AVX2 tests cover the packed path)"

TEST(PackedLinearTest, MatchesDoubleReference) {
  SKIP_WITHOUT_AVX2();
  CheckLinear(GemmKernel::kAvx2, Activation::kNone);
}
TEST(PackedLinearTest, PortableFallbackMatchesDoubleReference) {
  CheckLinear(GemmKernel::kPortable, Activation::kNone);
}
// GELU in the store of the last k block only (k > 256 has two blocks), every tile size, a
// ragged last panel, the threaded split.
TEST(PackedLinearTest, GeluEpilogueMatchesDoubleReference) {
  SKIP_WITHOUT_AVX2();
  CheckLinear(GemmKernel::kAvx2, Activation::kGelu);
}
TEST(PackedLinearTest, PortableGeluMatchesDoubleReference) {
  CheckLinear(GemmKernel::kPortable, Activation::kGelu);
}
TEST(PackedLinearTest, Avx512MatchesDoubleReference) {
  SKIP_WITHOUT_AVX512();
  CheckLinear(GemmKernel::kAvx512, Activation::kNone, Avx512Shapes());
}
TEST(PackedLinearTest, Avx512GeluEpilogueMatchesDoubleReference) {
  SKIP_WITHOUT_AVX512();
  CheckLinear(GemmKernel::kAvx512, Activation::kGelu, Avx512Shapes());
}

// Both tiles start each output from its bias and add one FMA per k in order (the stores and
// reloads between k blocks are exact) and run the same GELU code, so they agree to the bit: an
// encoder gives the same embeddings whichever tile the CPU picks.
TEST(PackedLinearTest, Avx512AndAvx2AgreeBitwise) {
  SKIP_WITHOUT_AVX512();
  for (Activation activation : {Activation::kNone, Activation::kGelu}) {
    for (const Shape& s : Avx512Shapes()) {
      SCOPED_TRACE(testing::Message() << "rows " << s.rows << " n " << s.n << " k " << s.k);
      const std::vector<float> w = Random(size_t(s.n) * s.k, 7), bias = Random(s.n, 8),
                               in = Random(size_t(s.rows) * s.ld_in, 9);
      std::vector<float> a(size_t(s.rows) * s.ld_out, 1.f), b(a.size(), 2.f);
      PackedLinear(w.data(), bias.data(), s.n, s.k, activation, GemmKernel::kAvx2)
          .Apply(in.data(), s.rows, s.ld_in, a.data(), s.ld_out);
      PackedLinear(w.data(), bias.data(), s.n, s.k, activation, GemmKernel::kAvx512)
          .Apply(in.data(), s.rows, s.ld_in, b.data(), s.ld_out);
      for (int r = 0; r < s.rows; ++r) {
        for (int j = 0; j < s.n; ++j) {
          ASSERT_EQ(a[size_t(r) * s.ld_out + j], b[size_t(r) * s.ld_out + j])
              << "row " << r << " col " << j;
        }
      }
    }
  }
}

// The default kernel is the best one the CPU runs, unless FERRY_CPU_GEMM caps it (read once per
// process: ctest runs this binary without it).
TEST(PackedLinearTest, DefaultKernelIsTheBestTheCpuRuns) {
  const char* cap = std::getenv("FERRY_CPU_GEMM");
  if (cap != nullptr) GTEST_SKIP() << "FERRY_CPU_GEMM=" << cap << " is set";
  const GemmKernel want = CpuHasAvx512()    ? GemmKernel::kAvx512
                          : CpuHasAvx2Fma() ? GemmKernel::kAvx2
                                            : GemmKernel::kPortable;
  EXPECT_EQ(DefaultGemmKernel(), want);
  const std::vector<float> w(4 * 3, 1.f);
  EXPECT_EQ(PackedLinear(w.data(), nullptr, 4, 3).kernel(), want);
  EXPECT_EQ(
      PackedLinear(w.data(), nullptr, 4, 3, Activation::kNone, /*force_portable=*/true).kernel(),
      GemmKernel::kPortable);
}

// The vectorised erf behind GELU against std::erf in double, over [-8, 8] (both tails saturate)
// at every lane position and ragged lengths: within a few float ulps of the exact value.
TEST(GeluTest, MatchesDoublePrecisionErf) {
  for (int n : {1, 3, 7, 8, 9, 15, 16, 17, 1536, 4001}) {
    SCOPED_TRACE(testing::Message() << "n " << n);
    std::vector<float> v(n);
    for (int i = 0; i < n; ++i) v[i] = n == 1 ? 0.5f : -8.f + 16.f * float(i) / float(n - 1);
    // Fresh random values too, scaled to the range where GELU bends.
    const std::vector<float> extra = Random(n, 40 + n);
    for (int i = 0; i < n; i += 2) v[i] = 3.f * extra[i];
    std::vector<float> got = v;
    GeluInPlace(got.data(), n);
    for (int i = 0; i < n; ++i) {
      const double want = GeluReference(v[i]);
      // 4 ulps of the result, plus erf's own rounding near ±1 carried through 0.5·y·(1 + erf):
      // for y ≪ 0, 1 + erf cancels, and an ulp of erf (≤ eps) becomes 0.5·|y|·eps absolute,
      // which is also what the scalar float formula gets.
      constexpr double kEps = std::numeric_limits<float>::epsilon();
      const double tol = kEps * (4 * std::abs(want) + std::abs(v[i])) + 1e-37;
      ASSERT_NEAR(got[i], want, tol) << "x " << v[i];
    }
  }
}

// Residual + LayerNorm against a double reference: ragged widths (vector body, 8-wide step and
// scalar tail), with and without a residual, in place over the residual (as the encoder runs it)
// and over y, and rows with a large common offset (the centred variance must not cancel).
TEST(ResidualLayerNormTest, MatchesDoubleReference) {
  for (int n : {1, 5, 8, 13, 16, 24, 37, 384}) {
    for (bool with_residual : {false, true}) {
      for (int alias = 0; alias < 3; ++alias) {  // 0: separate out, 1: out = residual, 2: out = y
        if (alias == 1 && !with_residual) continue;
        SCOPED_TRACE(testing::Message()
                     << "n " << n << " residual " << with_residual << " alias " << alias);
        const int rows = 3;
        std::vector<float> y = Random(size_t(rows) * n, 50 + n);
        std::vector<float> res = Random(size_t(rows) * n, 60 + n);
        const std::vector<float> gamma = Random(n, 70 + n), beta = Random(n, 80 + n);
        for (int i = 0; i < n; ++i) y[2 * n + i] += 100.f;  // row 2: mean far from zero
        const std::vector<float> y0 = y, res0 = res;
        std::vector<float> separate(size_t(rows) * n, -7.f);
        float* out = alias == 0 ? separate.data() : alias == 1 ? res.data() : y.data();
        const float eps = 1e-12f;
        ResidualLayerNorm(y.data(), with_residual ? res.data() : nullptr, gamma.data(), beta.data(),
                          rows, n, eps, out);
        for (int r = 0; r < rows; ++r) {
          std::vector<double> v(n);
          double mean = 0, var = 0;
          for (int i = 0; i < n; ++i) {
            v[i] = double(y0[size_t(r) * n + i]) + (with_residual ? res0[size_t(r) * n + i] : 0.0);
            mean += v[i];
          }
          mean /= n;
          for (int i = 0; i < n; ++i) var += (v[i] - mean) * (v[i] - mean);
          var /= n;
          for (int i = 0; i < n; ++i) {
            // n = 1: every value is its own mean, so only beta is left.
            const double want = (v[i] - mean) / std::sqrt(var + eps) * gamma[i] + beta[i];
            // Row 2's values are ~100: their float rounding (6e-6) over a std of ~0.6-0.8.
            const double tol = r == 2 ? 5e-5 : 2e-6;
            ASSERT_NEAR(out[size_t(r) * n + i], want, tol) << "row " << r << " col " << i;
          }
        }
      }
    }
  }
}

TEST(PackedLinearTest, NoBiasMeansZeroBias) {
  const std::vector<float> w = Random(20 * 3, 4), in = Random(2 * 3, 5);
  std::vector<float> out(2 * 20);
  PackedLinear(w.data(), nullptr, 20, 3).Apply(in.data(), 2, 3, out.data(), 20);
  for (int r = 0; r < 2; ++r) {
    for (int j = 0; j < 20; ++j) {
      const double want = double(in[r * 3]) * w[j * 3] + double(in[r * 3 + 1]) * w[j * 3 + 1] +
                          double(in[r * 3 + 2]) * w[j * 3 + 2];
      EXPECT_NEAR(out[r * 20 + j], want, 1e-6);
    }
  }
}

TEST(AttentionHeadTest, MatchesDoubleReference) {
  for (int d : {32, 64, 12}) {
    // Every tail of the softmax's groups of 8 (lanes past len must not count).
    for (int len : {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 33, 63, 100, 128}) {
      SCOPED_TRACE(testing::Message() << "d " << d << " len " << len);
      const int ld = 3 * d + 5, ld_ctx = d + 3;
      const std::vector<float> qkv = Random(size_t(len) * ld, 6 + len);
      const float* q = qkv.data();
      const float* k = q + d;
      const float* v = q + 2 * d;
      std::vector<float> ctx(size_t(len) * ld_ctx, 7.f);
      std::vector<float> scratch(AttentionScratchFloats(len, d), -1.f);
      const float scale = 1.f / std::sqrt(float(d));
      AttentionHead(q, k, v, ld, len, d, 4 * scale, ctx.data(), ld_ctx, scratch.data());
      for (int i = 0; i < len; ++i) {
        std::vector<double> p(len);
        double m = -1e300, sum = 0;
        for (int j = 0; j < len; ++j) {
          double dot = 0;
          for (int c = 0; c < d; ++c) dot += double(q[size_t(i) * ld + c]) * k[size_t(j) * ld + c];
          p[j] = dot * 4 * scale;
          m = std::max(m, p[j]);
        }
        for (int j = 0; j < len; ++j) sum += p[j] = std::exp(p[j] - m);
        for (int c = 0; c < d; ++c) {
          double want = 0;
          for (int j = 0; j < len; ++j) want += p[j] / sum * v[size_t(j) * ld + c];
          ASSERT_NEAR(ctx[size_t(i) * ld_ctx + c], want, 2e-6) << "row " << i << " col " << c;
        }
        for (int c = d; c < ld_ctx; ++c) ASSERT_EQ(ctx[size_t(i) * ld_ctx + c], 7.f);
      }
    }
  }
}

}  // namespace
}  // namespace ferry::kernels
