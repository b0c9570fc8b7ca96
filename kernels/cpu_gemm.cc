#include "kernels/cpu_gemm.h"

#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

// Why a hand-written kernel and not a library (perf/bench_gemm.cc measures all three on the
// encoder's shapes): OpenBLAS 0.3.21 has no pack-once API and repacks the weights on every call;
// Debian 12's oneDNN 2.6 (libdnnl) runs f32 matmul on AVX2 CPUs through its sgemm driver, which
// also copies both operands per call (its prepacked brgemm path needs AVX-512), and its
// `format_tag::any` weights resolve to the plain layout there. What the encoder needs is narrow
// (C = A·Wᵀ + bias, FP32, W fixed), so a 6×16 register tile over weights packed at load, with
// the bias folded into the first pass, is small enough to own.

// glibc >= 2.35 on x86-64 has a vector expf in libmvec (see bert_encoder.cc).
#if defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#define FERRY_GEMM_HAVE_LIBMVEC 1
extern "C" __m128 _ZGVbN4v_expf(__m128 x);
#endif

namespace ferry::kernels {
namespace {

constexpr int kNr = 16;   // outputs per packed panel (two 8-float AVX registers)
constexpr int kMr = 6;    // rows per register tile: 12 accumulators + 2 weights + 1 broadcast
constexpr int kKc = 256;  // k per block: one panel block is 16 KiB, half of a 32 KiB L1
constexpr int kMc = 96;   // rows per block: 96·256·4 = 96 KiB of activations stay in L2

void ExpInPlace(float* v, int n) {
  int i = 0;
#ifdef FERRY_GEMM_HAVE_LIBMVEC
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(v + i, _ZGVbN4v_expf(_mm_loadu_ps(v + i)));
#endif
  for (; i < n; ++i) v[i] = std::exp(v[i]);
}

#if defined(__x86_64__)
#define FERRY_AVX2 __attribute__((target("avx2,fma")))

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

// Columns [p_begin·16, p_end·16) of the product: row blocks of kMc, then k blocks of kKc, then
// the panels, so that a row block's activations stay in L2 across panels and each panel block in
// L1 across the row tiles.
void PackedApplyPanels(const float* w, const float* bias, int n, int k, const float* in, int rows,
                       int ld_in, float* out, int ld_out, int p_begin, int p_end) {
  const int panels = (n + kNr - 1) / kNr;
  const size_t n_pad = static_cast<size_t>(panels) * kNr;
  for (int m0 = 0; m0 < rows; m0 += kMc) {
    const int mb = std::min(kMc, rows - m0);
    for (int k0 = 0; k0 < k; k0 += kKc) {
      const int kc = std::min(kKc, k - k0);
      const float* block = w + static_cast<size_t>(k0) * n_pad;
      for (int p = p_begin; p < p_end; ++p) {
        const float* panel = block + static_cast<size_t>(p) * kc * kNr;
        const int cols = std::min(kNr, n - p * kNr);
        const float* init = k0 == 0 ? bias + p * kNr : nullptr;
        for (int i = 0; i < mb; i += kMr) {
          const int mr = std::min(kMr, mb - i);
          const size_t row = static_cast<size_t>(m0 + i);
          kTiles[mr](in + row * ld_in + k0, ld_in, panel, kc, out + row * ld_out + p * kNr, ld_out,
                     init, cols);
        }
      }
    }
  }
}

void PackedApply(const float* w, const float* bias, int n, int k, const float* in, int rows,
                 int ld_in, float* out, int ld_out) {
  const int panels = (n + kNr - 1) / kNr;
  // Large products split their columns over the OpenMP threads (as many as the CPUs this process
  // may run on, or OMP_NUM_THREADS), in groups of 4 panels; small ones (a sentence or two) stay
  // on the calling thread, where waking a team would cost more than it saves: the team joins at
  // the end, and on a busy machine the second thread may not get a core for milliseconds (on a
  // loaded 2-core machine, splitting one 16-token sentence's FFN made it several times slower).
  constexpr int kGroup = 4;
  const int groups = (panels + kGroup - 1) / kGroup;
  [[maybe_unused]] const double macs = static_cast<double>(rows) * n * k;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (macs >= 32e6 && groups > 1)
#endif
  for (int g = 0; g < groups; ++g) {
    PackedApplyPanels(w, bias, n, k, in, rows, ld_in, out, ld_out, g * kGroup,
                      std::min(panels, (g + 1) * kGroup));
  }
}

// Horizontal sum of 8 lanes.
FERRY_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// AttentionHead for d a multiple of 32. Keys are transposed into [d, lp] so that scores come 16
// at a time for 4 query rows (8 independent FMA chains: one chain would wait on FMA latency), and
// context rows come 2 at a time as Σ_j p_j·v_j over 4 registers of 8 (8 chains again). No tiny
// GEMM calls: at 16 tokens a BLAS call's setup costs more than its 16×16×32 multiply-adds.
// Query rows past `len` in the last group of 4 repeat the last row and are not stored.
FERRY_AVX2 void AttentionAvx2(const float* q, const float* k, const float* v, int ld, int len,
                              int d, float scale, float* ctx, int ld_ctx, float* scratch) {
  const int lp = (len + 15) & ~15;
  float* kt = scratch;     // [d, lp]
  float* s = kt + d * lp;  // [4, lp]: the scores of 4 query rows
  for (int j = 0; j < len; ++j) {
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
    for (int r = 0; r < 4; ++r) {
      float* row = s + r * lp;
      float m = row[0];
      for (int j = 1; j < len; ++j) m = std::max(m, row[j]);
      for (int j = 0; j < len; ++j) row[j] -= m;
      ExpInPlace(row, len);
      float sum = 0.f;
      for (int j = 0; j < len; ++j) sum += row[j];
      inv[r] = 1.f / sum;
    }
    for (int r0 = 0; r0 < 4 && i0 + r0 < len; r0 += 2) {
      const float* p0 = s + r0 * lp;
      const float* p1 = s + (r0 + 1) * lp;
      for (int c0 = 0; c0 < d; c0 += 32) {
        __m256 b0[4], b1[4];
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) b0[g] = b1[g] = _mm256_setzero_ps();
        for (int j = 0; j < len; ++j) {
          const __m256 w0 = _mm256_broadcast_ss(p0 + j);
          const __m256 w1 = _mm256_broadcast_ss(p1 + j);
          const float* vj = v + static_cast<size_t>(j) * ld + c0;
#pragma GCC unroll 4
          for (int g = 0; g < 4; ++g) {
            const __m256 x = _mm256_loadu_ps(vj + 8 * g);
            b0[g] = _mm256_fmadd_ps(w0, x, b0[g]);
            b1[g] = _mm256_fmadd_ps(w1, x, b1[g]);
          }
        }
        const __m256 inv0 = _mm256_set1_ps(inv[r0]);
        const __m256 inv1 = _mm256_set1_ps(inv[r0 + 1]);
        float* c_0 = ctx + static_cast<size_t>(i0 + r0) * ld_ctx + c0;
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) _mm256_storeu_ps(c_0 + 8 * g, _mm256_mul_ps(b0[g], inv0));
        if (i0 + r0 + 1 < len) {
          float* c_1 = c_0 + ld_ctx;
#pragma GCC unroll 4
          for (int g = 0; g < 4; ++g) _mm256_storeu_ps(c_1 + 8 * g, _mm256_mul_ps(b1[g], inv1));
        }
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

PackedLinear::PackedLinear(const float* w, const float* bias, int n, int k, bool force_portable)
    : n_(n), k_(k), packed_(CpuHasAvx2Fma() && !force_portable) {
  const int panels = (n + kNr - 1) / kNr;
  bias_.assign(static_cast<size_t>(panels) * kNr, 0.f);
  if (bias != nullptr) std::copy(bias, bias + n, bias_.begin());
  if (!packed_) {
    w_.assign(w, w + static_cast<size_t>(n) * k);
    return;
  }
  const size_t n_pad = static_cast<size_t>(panels) * kNr;
  w_.assign(n_pad * k, 0.f);
  for (int k0 = 0; k0 < k; k0 += kKc) {
    const int kc = std::min(kKc, k - k0);
    float* block = w_.data() + static_cast<size_t>(k0) * n_pad;
    for (int p = 0; p < panels; ++p) {
      float* panel = block + static_cast<size_t>(p) * kc * kNr;
      for (int kk = 0; kk < kc; ++kk) {
        for (int jj = 0; jj < kNr && p * kNr + jj < n; ++jj) {
          panel[kk * kNr + jj] = w[static_cast<size_t>(p * kNr + jj) * k + k0 + kk];
        }
      }
    }
  }
}

void PackedLinear::Apply(const float* in, int rows, int ld_in, float* out, int ld_out) const {
  if (rows <= 0 || n_ == 0) return;
#if defined(__x86_64__)
  if (packed_) {
    PackedApply(w_.data(), bias_.data(), n_, k_, in, rows, ld_in, out, ld_out);
    return;
  }
#endif
  for (int r = 0; r < rows; ++r) {
    std::memcpy(out + static_cast<size_t>(r) * ld_out, bias_.data(), sizeof(float) * n_);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_, k_, 1.f, in, ld_in, w_.data(), k_,
              1.f, out, ld_out);
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

}  // namespace ferry::kernels
