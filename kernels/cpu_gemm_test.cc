#include "kernels/cpu_gemm.h"

#include <cmath>
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

void CheckLinear(bool portable) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(testing::Message() << "rows " << s.rows << " n " << s.n << " k " << s.k);
    const std::vector<float> w = Random(size_t(s.n) * s.k, 1), bias = Random(s.n, 2),
                             in = Random(size_t(s.rows) * s.ld_in, 3);
    std::vector<float> out(size_t(s.rows) * s.ld_out, 12345.f);
    const PackedLinear lin(w.data(), bias.data(), s.n, s.k, portable);
    EXPECT_EQ(lin.n(), s.n);
    EXPECT_EQ(lin.k(), s.k);
    lin.Apply(in.data(), s.rows, s.ld_in, out.data(), s.ld_out);
    double worst = 0;
    for (int r = 0; r < s.rows; ++r) {
      for (int j = 0; j < s.n; ++j) {
        double want = bias[j];
        for (int c = 0; c < s.k; ++c) {
          want += double(in[size_t(r) * s.ld_in + c]) * w[size_t(j) * s.k + c];
        }
        worst = std::max(
            worst, std::abs(out[size_t(r) * s.ld_out + j] - want) / (1.0 + std::sqrt(double(s.k))));
      }
      // Columns past n in a strided output are left alone.
      for (int j = s.n; j < s.ld_out; ++j) ASSERT_EQ(out[size_t(r) * s.ld_out + j], 12345.f);
    }
    EXPECT_LT(worst, 2e-6);
  }
}

TEST(PackedLinearTest, MatchesDoubleReference) { CheckLinear(/*portable=*/false); }
TEST(PackedLinearTest, PortableFallbackMatchesDoubleReference) { CheckLinear(/*portable=*/true); }

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
    for (int len : {1, 7, 8, 16, 33, 128}) {
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
