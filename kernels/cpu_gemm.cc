#include "kernels/cpu_gemm.h"

#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

// Why a hand-written kernel and not a library (perf/bench_gemm.cc measures all three on the
// encoder's shapes): OpenBLAS 0.3.21 has no pack-once API and repacks the weights on every call;
// Debian 12's oneDNN 2.6 (libdnnl) runs f32 matmul on AVX2 CPUs through its sgemm driver, which
// also copies both operands per call (its prepacked brgemm path needs AVX-512), and its
// `format_tag::any` weights resolve to the plain layout there. What the encoder needs is narrow
// (C = A·Wᵀ + bias, FP32, W fixed), so a 6×16 register tile over weights packed at load, with
// the bias folded into the first pass and GELU (where asked) applied to each tile as soon as its
// last pass stores it, is small enough to own. Where the CPU has AVX-512F, a 12×32 tile in zmm
// registers (Tile512) takes its place, over weights packed in panels of 32 for it.

// glibc >= 2.35 on x86-64 has a vector expf and erff in libmvec: 4 lanes (SSE) and 8 lanes
// (AVX2), each dispatching to the best code the CPU runs, with the same few-ulp accuracy as the
// scalar expf/erff at a fraction of the cost. The 8-lane ones are called from AVX2 code only.
#if defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#define FERRY_GEMM_HAVE_LIBMVEC 1
extern "C" __m128 _ZGVbN4v_expf(__m128 x);
extern "C" __m128 _ZGVbN4v_erff(__m128 x);
extern "C" __m256 _ZGVdN8v_expf(__m256 x);
extern "C" __m256 _ZGVdN8v_erff(__m256 x);
#endif

namespace ferry::kernels {
namespace {

constexpr int kNr = 16;   // outputs per packed panel (two 8-float AVX registers)
constexpr int kMr = 6;    // rows per register tile: 12 accumulators + 2 weights + 1 broadcast
constexpr int kKc = 256;  // k per block: one panel block is 16 KiB, half of a 32 KiB L1
constexpr int kMc = 96;   // rows per block: 96·256·4 = 96 KiB of activations stay in L2
// The AVX-512 kernel's layout (see Tile512).
constexpr int kNr512 = 32;   // outputs per packed panel (two 16-float zmm registers)
constexpr int kKc512 = 512;  // k per block: a panel block is 64 KiB (see Tile512)

// Packed (nr, kc) of a kernel's layout.
int PanelWidth(GemmKernel kernel) { return kernel == GemmKernel::kAvx512 ? kNr512 : kNr; }
int KBlock(GemmKernel kernel) { return kernel == GemmKernel::kAvx512 ? kKc512 : kKc; }

void ExpInPlace(float* v, int n) {
  int i = 0;
#ifdef FERRY_GEMM_HAVE_LIBMVEC
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(v + i, _ZGVbN4v_expf(_mm_loadu_ps(v + i)));
#endif
  for (; i < n; ++i) v[i] = std::exp(v[i]);
}

constexpr float kInvSqrt2 = 0.70710678118654752440f;

// GELU, exact form, one float (the portable path and the ragged ends).
inline float GeluScalar(float y) { return 0.5f * y * (1.f + std::erf(y * kInvSqrt2)); }

void GeluPortable(float* v, int n) {
  int i = 0;
#ifdef FERRY_GEMM_HAVE_LIBMVEC
  const __m128 half = _mm_set1_ps(0.5f), one = _mm_set1_ps(1.f), s = _mm_set1_ps(kInvSqrt2);
  for (; i + 4 <= n; i += 4) {
    const __m128 y = _mm_loadu_ps(v + i);
    const __m128 e = _ZGVbN4v_erff(_mm_mul_ps(y, s));
    _mm_storeu_ps(v + i, _mm_mul_ps(_mm_mul_ps(half, y), _mm_add_ps(one, e)));
  }
#endif
  for (; i < n; ++i) v[i] = GeluScalar(v[i]);
}

void ResidualLayerNormPortable(const float* y, const float* residual, const float* gamma,
                               const float* beta, int rows, int n, float eps, float* out) {
  for (int r = 0; r < rows; ++r) {
    const float* yr = y + static_cast<size_t>(r) * n;
    const float* res = residual == nullptr ? nullptr : residual + static_cast<size_t>(r) * n;
    float* o = out + static_cast<size_t>(r) * n;
    float sum = 0.f;
    for (int i = 0; i < n; ++i) {
      const float v = res == nullptr ? yr[i] : yr[i] + res[i];
      o[i] = v;
      sum += v;
    }
    const float mean = sum / static_cast<float>(n);
    float var = 0.f;
    for (int i = 0; i < n; ++i) var += (o[i] - mean) * (o[i] - mean);
    const float inv = 1.f / std::sqrt(var / static_cast<float>(n) + eps);
    for (int i = 0; i < n; ++i) o[i] = (o[i] - mean) * inv * gamma[i] + beta[i];
  }
}

#if defined(__x86_64__)
#define FERRY_AVX2 __attribute__((target("avx2,fma")))

// 8 lanes of erf (libmvec's AVX2 erff where glibc has it, std::erf otherwise).
FERRY_AVX2 inline __m256 Erf8(__m256 x) {
#ifdef FERRY_GEMM_HAVE_LIBMVEC
  return _ZGVdN8v_erff(x);
#else
  alignas(32) float t[8];
  _mm256_store_ps(t, x);
  for (float& f : t) f = std::erf(f);
  return _mm256_load_ps(t);
#endif
}

// 8 lanes of exp (libmvec's AVX2 expf where glibc has it, std::exp otherwise); exp(-inf) = 0.
FERRY_AVX2 inline __m256 Exp8(__m256 x) {
#ifdef FERRY_GEMM_HAVE_LIBMVEC
  return _ZGVdN8v_expf(x);
#else
  alignas(32) float t[8];
  _mm256_store_ps(t, x);
  for (float& f : t) f = std::exp(f);
  return _mm256_load_ps(t);
#endif
}

// 0.5·y·(1 + erf(y/√2)), in the order of GeluScalar.
FERRY_AVX2 inline __m256 Gelu8(__m256 y) {
  const __m256 e = Erf8(_mm256_mul_ps(y, _mm256_set1_ps(kInvSqrt2)));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), y),
                       _mm256_add_ps(_mm256_set1_ps(1.f), e));
}

// The row loops are unrolled by pragma: -O2 would otherwise keep the accumulator arrays on the
// stack instead of in the 16 ymm registers.
// c[0:MR, 0:16] (+)= a[0:MR, 0:kc] · b (b: kc×16, packed). With `init` set, the tile starts from
// init (the bias, 16 floats) instead of c. Only `cols` (≤16) columns of c are written.
template <int MR>
FERRY_AVX2 void Tile(const float* a, int lda, const float* b, int kc, float* c, int ldc,
                     const float* init, int cols) {
  __m256 acc0[MR], acc1[MR];
  alignas(32) float tmp[kNr];
  if (init != nullptr) {
    const __m256 b0 = _mm256_loadu_ps(init), b1 = _mm256_loadu_ps(init + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      acc0[r] = b0;
      acc1[r] = b1;
    }
  } else if (cols == kNr) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      acc0[r] = _mm256_loadu_ps(c + r * ldc);
      acc1[r] = _mm256_loadu_ps(c + r * ldc + 8);
    }
  } else {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      std::memset(tmp, 0, sizeof(tmp));
      std::memcpy(tmp, c + r * ldc, sizeof(float) * cols);
      acc0[r] = _mm256_load_ps(tmp);
      acc1[r] = _mm256_load_ps(tmp + 8);
    }
  }
  for (int p = 0; p < kc; ++p) {
    const __m256 w0 = _mm256_loadu_ps(b + p * kNr);
    const __m256 w1 = _mm256_loadu_ps(b + p * kNr + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 x = _mm256_broadcast_ss(a + r * lda + p);
      acc0[r] = _mm256_fmadd_ps(x, w0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(x, w1, acc1[r]);
    }
  }
  if (cols == kNr) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(c + r * ldc, acc0[r]);
      _mm256_storeu_ps(c + r * ldc + 8, acc1[r]);
    }
  } else {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      _mm256_store_ps(tmp, acc0[r]);
      _mm256_store_ps(tmp + 8, acc1[r]);
      std::memcpy(c + r * ldc, tmp, sizeof(float) * cols);
    }
  }
}

using TileFn = void (*)(const float*, int, const float*, int, float*, int, const float*, int);
constexpr TileFn kTiles[kMr + 1] = {nullptr,  &Tile<1>, &Tile<2>, &Tile<3>,
                                    &Tile<4>, &Tile<5>, &Tile<6>};

// GELU over a tile that the product's last k block has just stored (still in L1): rows × cols
// (≤ 16) at c. As fast as applying it to the accumulators before the store (perf/bench_gemm.cc's
// BM_PackedGelu), which forces a spill of all 12 around each libmvec call, and the tile kernel
// stays free of it.
FERRY_AVX2 void GeluTile(float* c, int ldc, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    float* row = c + static_cast<size_t>(r) * ldc;
    if (cols == kNr) {
      _mm256_storeu_ps(row, Gelu8(_mm256_loadu_ps(row)));
      _mm256_storeu_ps(row + 8, Gelu8(_mm256_loadu_ps(row + 8)));
    } else {
      for (int j = 0; j < cols; ++j) row[j] = GeluScalar(row[j]);
    }
  }
}

// Columns [p_begin·16, p_end·16) of the product: row blocks of kMc, then k blocks of kKc, then
// the panels, so that a row block's activations stay in L2 across panels and each panel block in
// L1 across the row tiles.
void PackedApplyPanels(const float* w, const float* bias, bool gelu, int n, int k, const float* in,
                       int rows, int ld_in, float* out, int ld_out, int p_begin, int p_end) {
  const int panels = (n + kNr - 1) / kNr;
  const size_t n_pad = static_cast<size_t>(panels) * kNr;
  for (int m0 = 0; m0 < rows; m0 += kMc) {
    const int mb = std::min(kMc, rows - m0);
    for (int k0 = 0; k0 < k; k0 += kKc) {
      const int kc = std::min(kKc, k - k0);
      const float* block = w + static_cast<size_t>(k0) * n_pad;
      const bool last = k0 + kc >= k;
      for (int p = p_begin; p < p_end; ++p) {
        const float* panel = block + static_cast<size_t>(p) * kc * kNr;
        const int cols = std::min(kNr, n - p * kNr);
        const float* init = k0 == 0 ? bias + p * kNr : nullptr;
        for (int i = 0; i < mb; i += kMr) {
          const int mr = std::min(kMr, mb - i);
          const size_t row = static_cast<size_t>(m0 + i);
          kTiles[mr](in + row * ld_in + k0, ld_in, panel, kc, out + row * ld_out + p * kNr, ld_out,
                     init, cols);
          if (gelu && last) GeluTile(out + row * ld_out + p * kNr, ld_out, mr, cols);
        }
      }
    }
  }
}

// The AVX-512F kernel: a 12×32 tile, 24 zmm accumulators + 2 weight registers + 1 broadcast of
// the 32 (twice the outputs per weight load and per broadcast of the 6×16 ymm tile), over
// panels of 32 outputs in k blocks of 512: a panel block (64 KiB) streams from L2 rather than
// staying in L1, but on the Zen 4 EPYC this was tuned on, ferry-embed-tool ran 3-20% more tokens
// per CPU-second with k blocks of 512 than of 128 (256: in between; 768 and 1536: as 512). Same
// order of
// operations per output as the AVX2 tile (bias, then one FMA per k in order; stores and reloads
// between k blocks are exact), so both give the same bits. Compiled for AVX-512 by attribute
// only: nothing else in the build assumes it, and it runs only where CpuHasAvx512().
#define FERRY_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,fma")))

constexpr int kMr512 = 12;  // rows per register tile
constexpr int kMc512 = 96;  // rows per block (8 full tiles)

// c[0:MR, 0:32] (+)= a[0:MR, 0:kc] · b (b: kc×32, packed); `init`, `cols` (≤ 32) as in Tile.
// Ragged columns go through masked loads and stores (masked-off lanes neither fault nor write).
template <int MR>
FERRY_AVX512 void Tile512(const float* a, int lda, const float* b, int kc, float* c, int ldc,
                          const float* init, int cols) {
  __m512 acc0[MR], acc1[MR];
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32   ? 0xFFFF
                       : cols <= 16 ? 0
                                    : static_cast<__mmask16>((1u << (cols - 16)) - 1);
  if (init != nullptr) {
    const __m512 b0 = _mm512_loadu_ps(init), b1 = _mm512_loadu_ps(init + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      acc0[r] = b0;
      acc1[r] = b1;
    }
  } else {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      acc0[r] = _mm512_maskz_loadu_ps(m0, c + r * ldc);
      acc1[r] = _mm512_maskz_loadu_ps(m1, c + r * ldc + 16);
    }
  }
  for (int p = 0; p < kc; ++p) {
    const __m512 w0 = _mm512_loadu_ps(b + p * kNr512);
    const __m512 w1 = _mm512_loadu_ps(b + p * kNr512 + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * lda + p]);
      acc0[r] = _mm512_fmadd_ps(x, w0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(x, w1, acc1[r]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, m0, acc0[r]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, m1, acc1[r]);
  }
}

constexpr TileFn kTiles512[kMr512 + 1] = {
    nullptr,     &Tile512<1>, &Tile512<2>, &Tile512<3>,  &Tile512<4>,  &Tile512<5>, &Tile512<6>,
    &Tile512<7>, &Tile512<8>, &Tile512<9>, &Tile512<10>, &Tile512<11>, &Tile512<12>};

// PackedApplyPanels for the AVX-512 layout (panels of 32, k blocks of 512). A row block's tiles
// share its rows evenly (16 rows: 8 + 8, not 12 + 4): a short tile would load each weight for
// few rows. GELU runs per tile after the last k block through the AVX2 GeluTile, 16 columns at a
// time, so that each output goes through the same GELU code as on the AVX2 path.
void PackedApplyPanels512(const float* w, const float* bias, bool gelu, int n, int k,
                          const float* in, int rows, int ld_in, float* out, int ld_out, int p_begin,
                          int p_end) {
  const int panels = (n + kNr512 - 1) / kNr512;
  const size_t n_pad = static_cast<size_t>(panels) * kNr512;
  for (int m0 = 0; m0 < rows; m0 += kMc512) {
    const int mb = std::min(kMc512, rows - m0);
    const int tiles = (mb + kMr512 - 1) / kMr512;
    const int base = mb / tiles, extra = mb % tiles;  // the first `extra` tiles get one more row
    for (int k0 = 0; k0 < k; k0 += kKc512) {
      const int kc = std::min(kKc512, k - k0);
      const float* block = w + static_cast<size_t>(k0) * n_pad;
      const bool last = k0 + kc >= k;
      for (int p = p_begin; p < p_end; ++p) {
        const float* panel = block + static_cast<size_t>(p) * kc * kNr512;
        const int cols = std::min(kNr512, n - p * kNr512);
        const float* init = k0 == 0 ? bias + p * kNr512 : nullptr;
        int i = 0;
        for (int t = 0; t < tiles; ++t) {
          const int mr = base + (t < extra ? 1 : 0);
          const size_t row = static_cast<size_t>(m0 + i);
          float* c = out + row * ld_out + p * kNr512;
          kTiles512[mr](in + row * ld_in + k0, ld_in, panel, kc, c, ld_out, init, cols);
          if (gelu && last) {
            GeluTile(c, ld_out, mr, std::min(cols, kNr));
            if (cols > kNr) GeluTile(c + kNr, ld_out, mr, cols - kNr);
          }
          i += mr;
        }
      }
    }
  }
}

void PackedApply(GemmKernel kernel, const float* w, const float* bias, bool gelu, int n, int k,
                 const float* in, int rows, int ld_in, float* out, int ld_out) {
  const int nr = PanelWidth(kernel);
  const int panels = (n + nr - 1) / nr;
  // Large products split their columns over the OpenMP threads (as many as the CPUs this process
  // may run on, or OMP_NUM_THREADS), in groups of 64 columns (4 panels of 16, 2 of 32); small
  // ones (a sentence or two) stay on the calling thread, where waking a team would cost more
  // than it saves: the team joins at the end, and on a busy machine the second thread may not
  // get a core for milliseconds (on a loaded 2-core machine, splitting one 16-token sentence's
  // FFN made it several times slower).
  const int group = 64 / nr;
  const int groups = (panels + group - 1) / group;
  const bool avx512 = kernel == GemmKernel::kAvx512;
  [[maybe_unused]] const double macs = static_cast<double>(rows) * n * k;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (macs >= 32e6 && groups > 1)
#endif
  for (int g = 0; g < groups; ++g) {
    const int p0 = g * group, p1 = std::min(panels, (g + 1) * group);
    if (avx512) {
      PackedApplyPanels512(w, bias, gelu, n, k, in, rows, ld_in, out, ld_out, p0, p1);
    } else {
      PackedApplyPanels(w, bias, gelu, n, k, in, rows, ld_in, out, ld_out, p0, p1);
    }
  }
}

// Horizontal sum of 8 lanes.
FERRY_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// Horizontal max of 8 lanes.
FERRY_AVX2 inline float Max8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// row[j] = exp(row[j] − max) for j in [0, len), and 0 for j up to the next multiple of 8 (which
// the row must have room for); returns Σ row[j].
FERRY_AVX2 float ExpShiftedRow(float* row, int len) {
  const int full = len & ~7;
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  // Lanes of the last, partial group of 8 that are past len read as -inf.
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 tail = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(len - full), lane));
  __m256 m = ninf;
  for (int j = 0; j < full; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(row + j));
  if (full < len) m = _mm256_max_ps(m, _mm256_blendv_ps(ninf, _mm256_loadu_ps(row + full), tail));
  const __m256 vmax = _mm256_set1_ps(Max8(m));
  __m256 sum = _mm256_setzero_ps();
  for (int j = 0; j < len; j += 8) {
    __m256 x = _mm256_loadu_ps(row + j);
    if (j == full) x = _mm256_blendv_ps(ninf, x, tail);
    const __m256 e = Exp8(_mm256_sub_ps(x, vmax));
    _mm256_storeu_ps(row + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  return Sum8(sum);
}

// o[i:i+8] = y[i:i+8] (+ res[i:i+8] when res is set); returns the stored value.
FERRY_AVX2 inline __m256 AddStore8(const float* y, const float* res, float* o, int i) {
  __m256 v = _mm256_loadu_ps(y + i);
  if (res != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(res + i));
  _mm256_storeu_ps(o + i, v);
  return v;
}

FERRY_AVX2 void ResidualLayerNormAvx2(const float* y, const float* residual, const float* gamma,
                                      const float* beta, int rows, int n, float eps, float* out) {
  const int full = n & ~7;
  for (int r = 0; r < rows; ++r) {
    const float* yr = y + static_cast<size_t>(r) * n;
    const float* res = residual == nullptr ? nullptr : residual + static_cast<size_t>(r) * n;
    float* o = out + static_cast<size_t>(r) * n;
    // Pass 1: o = y + residual, and its sum (two chains of 8 lanes).
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= full; i += 16) {
      s0 = _mm256_add_ps(s0, AddStore8(yr, res, o, i));
      s1 = _mm256_add_ps(s1, AddStore8(yr, res, o, i + 8));
    }
    if (i < full) {
      s0 = _mm256_add_ps(s0, AddStore8(yr, res, o, i));
      i += 8;
    }
    float sum = Sum8(_mm256_add_ps(s0, s1));
    for (; i < n; ++i) {
      const float v = res == nullptr ? yr[i] : yr[i] + res[i];
      o[i] = v;
      sum += v;
    }
    const float mean = sum / static_cast<float>(n);
    // Pass 2: the variance of the centred values.
    const __m256 vmean = _mm256_set1_ps(mean);
    s0 = s1 = _mm256_setzero_ps();
    for (i = 0; i + 16 <= full; i += 16) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(o + i), vmean);
      const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(o + i + 8), vmean);
      s0 = _mm256_fmadd_ps(d0, d0, s0);
      s1 = _mm256_fmadd_ps(d1, d1, s1);
    }
    if (i < full) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(o + i), vmean);
      s0 = _mm256_fmadd_ps(d0, d0, s0);
      i += 8;
    }
    float var = Sum8(_mm256_add_ps(s0, s1));
    for (; i < n; ++i) var += (o[i] - mean) * (o[i] - mean);
    const float inv = 1.f / std::sqrt(var / static_cast<float>(n) + eps);
    // Pass 3: normalise, scale and shift, in the order of the portable loop.
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i < full; i += 8) {
      const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(o + i), vmean), vinv);
      _mm256_storeu_ps(o + i,
                       _mm256_fmadd_ps(t, _mm256_loadu_ps(gamma + i), _mm256_loadu_ps(beta + i)));
    }
    for (; i < n; ++i) o[i] = (o[i] - mean) * inv * gamma[i] + beta[i];
  }
}

FERRY_AVX2 void GeluAvx2(float* v, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, Gelu8(_mm256_loadu_ps(v + i)));
  for (; i < n; ++i) v[i] = GeluScalar(v[i]);
}

// Transposes the 8×8 block t (row r = t[r]) in registers.
FERRY_AVX2 inline void Transpose8(__m256 t[8]) {
  __m256 u[8], w[8];
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    u[i] = _mm256_unpacklo_ps(t[i], t[i + 1]);
    u[i + 1] = _mm256_unpackhi_ps(t[i], t[i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 8; i += 4) {
    w[i] = _mm256_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    w[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    w[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    w[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(w[i], w[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(w[i], w[i + 4], 0x31);
  }
}

// AttentionHead for d a multiple of 32. Keys are transposed (8×8 blocks in registers) into
// [d, lp] so that scores come 16 at a time for 4 query rows (8 independent FMA chains: one chain
// would wait on FMA latency); the softmax runs 8 lanes at a time; the same 4 rows' context comes
// as Σ_j p_j·v_j, 16 columns at a time over 2 registers per row (8 chains again). No tiny
// GEMM calls: at 16 tokens a BLAS call's setup costs more than its 16×16×32 multiply-adds.
// Query rows past `len` in the last group of 4 repeat the last row and are not stored.
FERRY_AVX2 void AttentionAvx2(const float* q, const float* k, const float* v, int ld, int len,
                              int d, float scale, float* ctx, int ld_ctx, float* scratch) {
  const int lp = (len + 15) & ~15;
  float* kt = scratch;     // [d, lp]
  float* s = kt + d * lp;  // [4, lp]: the scores of 4 query rows
  // Blocks of 8 keys × 8 columns through an in-register transpose, the last < 8 keys one by one.
  const int len8 = len & ~7;
  for (int j0 = 0; j0 < len8; j0 += 8) {
    for (int c0 = 0; c0 < d; c0 += 8) {
      __m256 t[8];
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) t[r] = _mm256_loadu_ps(k + static_cast<size_t>(j0 + r) * ld + c0);
      Transpose8(t);
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) _mm256_storeu_ps(kt + (c0 + c) * lp + j0, t[c]);
    }
  }
  for (int j = len8; j < len; ++j) {
    for (int c = 0; c < d; ++c) kt[c * lp + j] = k[static_cast<size_t>(j) * ld + c];
  }
  for (int c = 0; c < d; ++c) {
    for (int j = len; j < lp; ++j) kt[c * lp + j] = 0.f;
  }
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int i0 = 0; i0 < len; i0 += 4) {
    const float* qr[4];
    for (int r = 0; r < 4; ++r) qr[r] = q + static_cast<size_t>(std::min(i0 + r, len - 1)) * ld;
    for (int j = 0; j < lp; j += 16) {
      __m256 a0[4], a1[4];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
      for (int c = 0; c < d; ++c) {
        const __m256 k0 = _mm256_loadu_ps(kt + c * lp + j);
        const __m256 k1 = _mm256_loadu_ps(kt + c * lp + j + 8);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
          const __m256 x = _mm256_broadcast_ss(qr[r] + c);
          a0[r] = _mm256_fmadd_ps(x, k0, a0[r]);
          a1[r] = _mm256_fmadd_ps(x, k1, a1[r]);
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        _mm256_storeu_ps(s + r * lp + j, _mm256_mul_ps(a0[r], vscale));
        _mm256_storeu_ps(s + r * lp + j + 8, _mm256_mul_ps(a1[r], vscale));
      }
    }
    float inv[4];
    for (int r = 0; r < 4; ++r) inv[r] = 1.f / ExpShiftedRow(s + r * lp, len);
    // Context of the 4 rows, 16 columns at a time: per key, 2 loads of v and 4 broadcasts feed 8
    // FMA chains (v is read once per 4 query rows and 16 columns).
    const float* p[4] = {s, s + lp, s + 2 * lp, s + 3 * lp};
    for (int c0 = 0; c0 < d; c0 += 16) {
      __m256 b0[4], b1[4];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) b0[r] = b1[r] = _mm256_setzero_ps();
      for (int j = 0; j < len; ++j) {
        const float* vj = v + static_cast<size_t>(j) * ld + c0;
        const __m256 x0 = _mm256_loadu_ps(vj);
        const __m256 x1 = _mm256_loadu_ps(vj + 8);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
          const __m256 w = _mm256_broadcast_ss(p[r] + j);
          b0[r] = _mm256_fmadd_ps(w, x0, b0[r]);
          b1[r] = _mm256_fmadd_ps(w, x1, b1[r]);
        }
      }
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        if (i0 + r >= len) break;
        const __m256 vinv = _mm256_set1_ps(inv[r]);
        float* c = ctx + static_cast<size_t>(i0 + r) * ld_ctx + c0;
        _mm256_storeu_ps(c, _mm256_mul_ps(b0[r], vinv));
        _mm256_storeu_ps(c + 8, _mm256_mul_ps(b1[r], vinv));
      }
    }
  }
}
#endif  // __x86_64__

void AttentionPortable(const float* q, const float* k, const float* v, int ld, int len, int d,
                       float scale, float* ctx, int ld_ctx, float* scratch) {
  float* s = scratch;
  for (int i = 0; i < len; ++i) {
    const float* qi = q + static_cast<size_t>(i) * ld;
    float m = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < len; ++j) {
      const float* kj = k + static_cast<size_t>(j) * ld;
      float dot = 0.f;
      for (int c = 0; c < d; ++c) dot += qi[c] * kj[c];
      s[j] = dot * scale;
      m = std::max(m, s[j]);
    }
    for (int j = 0; j < len; ++j) s[j] -= m;
    ExpInPlace(s, len);
    float sum = 0.f;
    for (int j = 0; j < len; ++j) sum += s[j];
    const float inv = 1.f / sum;
    float* ci = ctx + static_cast<size_t>(i) * ld_ctx;
    std::fill(ci, ci + d, 0.f);
    for (int j = 0; j < len; ++j) {
      const float* vj = v + static_cast<size_t>(j) * ld;
      const float p = s[j] * inv;
      for (int c = 0; c < d; ++c) ci[c] += p * vj[c];
    }
  }
}

}  // namespace

bool CpuHasAvx2Fma() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

bool CpuHasAvx512() {
#if defined(__x86_64__)
  // libgcc's check includes the OS saving the zmm state (XCR0).
  static const bool has = CpuHasAvx2Fma() && __builtin_cpu_supports("avx512f");
  return has;
#else
  return false;
#endif
}

GemmKernel DefaultGemmKernel() {
  static const GemmKernel kernel = [] {
    GemmKernel best = CpuHasAvx512()    ? GemmKernel::kAvx512
                      : CpuHasAvx2Fma() ? GemmKernel::kAvx2
                                        : GemmKernel::kPortable;
    const char* cap = std::getenv("FERRY_CPU_GEMM");
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0) best = std::min(best, GemmKernel::kAvx2);
    if (cap != nullptr && std::strcmp(cap, "portable") == 0) best = GemmKernel::kPortable;
    return best;
  }();
  return kernel;
}

PackedLinear::PackedLinear(const float* w, const float* bias, int n, int k, Activation activation,
                           bool force_portable)
    : PackedLinear(w, bias, n, k, activation,
                   force_portable ? GemmKernel::kPortable : DefaultGemmKernel()) {}

PackedLinear::PackedLinear(const float* w, const float* bias, int n, int k, Activation activation,
                           GemmKernel kernel)
    : n_(n), k_(k), kernel_(kernel), activation_(activation) {
  if (kernel_ == GemmKernel::kAvx512 && !CpuHasAvx512()) kernel_ = GemmKernel::kAvx2;
  if (kernel_ == GemmKernel::kAvx2 && !CpuHasAvx2Fma()) kernel_ = GemmKernel::kPortable;
  const int nr = PanelWidth(kernel_), kc_max = KBlock(kernel_);
  const int panels = (n + nr - 1) / nr;
  bias_.assign(static_cast<size_t>(panels) * nr, 0.f);
  if (bias != nullptr) std::copy(bias, bias + n, bias_.begin());
  if (kernel_ == GemmKernel::kPortable) {
    w_.assign(w, w + static_cast<size_t>(n) * k);
    return;
  }
  const size_t n_pad = static_cast<size_t>(panels) * nr;
  w_.assign(n_pad * k, 0.f);
  for (int k0 = 0; k0 < k; k0 += kc_max) {
    const int kc = std::min(kc_max, k - k0);
    float* block = w_.data() + static_cast<size_t>(k0) * n_pad;
    for (int p = 0; p < panels; ++p) {
      float* panel = block + static_cast<size_t>(p) * kc * nr;
      for (int kk = 0; kk < kc; ++kk) {
        for (int jj = 0; jj < nr && p * nr + jj < n; ++jj) {
          panel[kk * nr + jj] = w[static_cast<size_t>(p * nr + jj) * k + k0 + kk];
        }
      }
    }
  }
}

void PackedLinear::Apply(const float* in, int rows, int ld_in, float* out, int ld_out) const {
  if (rows <= 0 || n_ == 0) return;
#if defined(__x86_64__)
  if (kernel_ != GemmKernel::kPortable) {
    PackedApply(kernel_, w_.data(), bias_.data(), activation_ == Activation::kGelu, n_, k_, in,
                rows, ld_in, out, ld_out);
    return;
  }
#endif
  for (int r = 0; r < rows; ++r) {
    std::memcpy(out + static_cast<size_t>(r) * ld_out, bias_.data(), sizeof(float) * n_);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_, k_, 1.f, in, ld_in, w_.data(), k_,
              1.f, out, ld_out);
  if (activation_ == Activation::kGelu) {
    for (int r = 0; r < rows; ++r) GeluPortable(out + static_cast<size_t>(r) * ld_out, n_);
  }
}

size_t AttentionScratchFloats(int len, int d) {
  return static_cast<size_t>(d + 4) * static_cast<size_t>(len + 16);
}

void AttentionHead(const float* q, const float* k, const float* v, int ld, int len, int d,
                   float scale, float* ctx, int ld_ctx, float* scratch) {
#if defined(__x86_64__)
  if (d % 32 == 0 && CpuHasAvx2Fma()) {
    AttentionAvx2(q, k, v, ld, len, d, scale, ctx, ld_ctx, scratch);
    return;
  }
#endif
  AttentionPortable(q, k, v, ld, len, d, scale, ctx, ld_ctx, scratch);
}

void ResidualLayerNorm(const float* y, const float* residual, const float* gamma, const float* beta,
                       int rows, int n, float eps, float* out) {
  if (rows <= 0 || n <= 0) return;
#if defined(__x86_64__)
  if (CpuHasAvx2Fma()) {
    ResidualLayerNormAvx2(y, residual, gamma, beta, rows, n, eps, out);
    return;
  }
#endif
  ResidualLayerNormPortable(y, residual, gamma, beta, rows, n, eps, out);
}

void GeluInPlace(float* v, int n) {
#if defined(__x86_64__)
  if (CpuHasAvx2Fma()) {
    GeluAvx2(v, n);
    return;
  }
#endif
  GeluPortable(v, n);
}

}  // namespace ferry::kernels
