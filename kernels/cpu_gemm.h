// FP32 matrix products for the CPU BERT encoder with the weights packed once, at load.
//
// A dense layer multiplies a few token rows by a fixed weight matrix. A general BLAS call
// (OpenBLAS sgemm) copies that weight matrix into its cache-friendly panel layout on every call,
// which costs as much as the multiply itself when there are only a few rows (one short
// sentence). PackedLinear does the copy once, at construction, and then runs an AVX2+FMA
// register-tiled kernel straight over the packed panels: a 12×32 tile in 24 zmm accumulators
// where the CPU has AVX-512F (chosen at run time; the rest of the build stays AVX2), a 6×16 tile
// in ymm registers where it has AVX2+FMA. CPUs without AVX2+FMA fall back to OpenBLAS on a plain
// copy of the weights. FERRY_CPU_GEMM=avx2 in the environment (read once, at the first product
// packed) keeps the AVX2 tile on an AVX-512 CPU, for comparison. The encoder's other per-token
// kernels (attention per head, residual + LayerNorm, GELU) live here too, vectorised the same way.
#ifndef FERRY_KERNELS_CPU_GEMM_H_
#define FERRY_KERNELS_CPU_GEMM_H_

#include <cstddef>
#include <vector>

namespace ferry::kernels {

// True when this CPU runs the packed AVX2+FMA kernels (checked once).
bool CpuHasAvx2Fma();

// The kernel a PackedLinear packs its weights for (the packed layout differs per kernel).
enum class GemmKernel {
  kPortable,  // OpenBLAS sgemm on a plain copy of the weights
  kAvx2,      // 6×16 register tile, panels of 16 outputs (AVX2+FMA)
  kAvx512,    // 12×32 register tile, panels of 32 outputs (AVX-512F)
};

// True when this CPU (and OS) runs the AVX-512F tile (checked once).
bool CpuHasAvx512();

// The best kernel this CPU runs, capped by FERRY_CPU_GEMM=avx2 or =portable when set (read once).
GemmKernel DefaultGemmKernel();

// What PackedLinear applies to each output after the bias, tile by tile as the product stores it
// (no separate pass over the output): nothing, or GELU in its exact form 0.5·y·(1 + erf(y/√2))
// (BERT's "gelu").
enum class Activation { kNone, kGelu };

// out = act(in · Wᵀ + bias) for a weight W in PyTorch nn.Linear layout ([n, k], row-major).
// Immutable after construction, so one instance may be used by many threads at once; Apply
// blocks the calling thread only, allocates nothing and starts no threads.
class PackedLinear {
 public:
  PackedLinear() = default;
  // Copies `w` ([n, k]) and `bias` ([n], or null for none) into the packed layout.
  // `force_portable` selects the OpenBLAS fallback even where AVX2+FMA exist (for tests);
  // otherwise the kernel is DefaultGemmKernel().
  PackedLinear(const float* w, const float* bias, int n, int k,
               Activation activation = Activation::kNone, bool force_portable = false);
  // Packs for `kernel`, or for the best one below it that this CPU runs (kernel() tells which).
  PackedLinear(const float* w, const float* bias, int n, int k, Activation activation,
               GemmKernel kernel);

  // out[r, 0:n] = act(in[r, 0:k] · Wᵀ + bias) for r in [0, rows): `in` has leading dimension
  // `ld_in` (≥ k) and `out` has `ld_out` (≥ n), both in floats. `in` and `out` must not overlap.
  void Apply(const float* in, int rows, int ld_in, float* out, int ld_out) const;

  int n() const { return n_; }
  int k() const { return k_; }
  GemmKernel kernel() const { return kernel_; }

 private:
  int n_ = 0;
  int k_ = 0;
  GemmKernel kernel_ = GemmKernel::kPortable;
  Activation activation_ = Activation::kNone;
  // Packed: for each block of kc rows of k, for each panel of nr outputs (zero-padded), the
  // block's kc×nr weights with the nr outputs contiguous (kc, nr: 256, 16 for kAvx2; 512, 32 for
  // kAvx512). Portable: W as given.
  std::vector<float> w_;
  std::vector<float> bias_;  // [n] padded to whole panels (zeros when there is none)
};

// Softmax attention of one head over one sequence's own `len` rows (no mask: packed rows carry
// no padding). q, k, v: row r at q + r·ld (d floats each); ctx row r at ctx + r·ld_ctx.
// scores = softmax(scale · q kᵀ) row by row; ctx = scores · v. `scratch` holds at least
// AttentionScratchFloats(len, d) floats. Vectorised with AVX2+FMA where the CPU has them and d is
// a multiple of 32. Blocks the caller only; thread-safe (all state is in the arguments).
size_t AttentionScratchFloats(int len, int d);
void AttentionHead(const float* q, const float* k, const float* v, int ld, int len, int d,
                   float scale, float* ctx, int ld_ctx, float* scratch);

// out[r] = LayerNorm(y[r] + residual[r]) · gamma + beta for r in [0, rows), each row n floats
// (contiguous rows); `residual` may be null (none). The mean first, then the variance of the
// centred values (no E[x²] − E[x]² cancellation), biased as in PyTorch. `out` may be `y` or
// `residual` (the same pointer, not a shifted one): each element is read before it is
// overwritten. AVX2 where the CPU has it; allocates nothing; thread-safe.
void ResidualLayerNorm(const float* y, const float* residual, const float* gamma, const float* beta,
                       int rows, int n, float eps, float* out);

// v[i] = GELU(v[i]) (exact erf form) for i in [0, n): what Activation::kGelu applies, exposed for
// tests and for callers outside a product.
void GeluInPlace(float* v, int n);

}  // namespace ferry::kernels

#endif  // FERRY_KERNELS_CPU_GEMM_H_
