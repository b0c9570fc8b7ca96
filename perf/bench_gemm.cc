// The CPU BERT encoder's matrix products on one thread: OpenBLAS sgemm (repacks the weights on
// every call), oneDNN's matmul with `format_tag::any` weights reordered once (when libdnnl-dev is
// installed; optional, nothing else uses it) and ferry's PackedLinear (kernels/cpu_gemm.h,
// weights packed at load; BM_Packed with the tile this CPU picks, BM_PackedAvx2 with the AVX2
// one), at all-MiniLM-L6-v2's layer shapes and a few token counts; and one
// attention head (two sgemm calls + softmax, as the encoder did, against AttentionHead); and the
// FFN's GELU in the product's store against a separate pass.
// Correctness is tested in kernels/cpu_gemm_test.cc; this only times them.
//   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 build/perf/bench_gemm [--benchmark_min_time=0.2]
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu_gemm.h"
#ifdef FERRY_BENCH_HAVE_DNNL
#include "dnnl.hpp"
#endif

namespace {

std::vector<float> Random(size_t n, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Args: rows (tokens), n (outputs), k (inputs).
void BM_OpenBlas(benchmark::State& state) {
  const int m = state.range(0), n = state.range(1), k = state.range(2);
  const std::vector<float> a = Random(size_t(m) * k, 1), w = Random(size_t(n) * k, 2),
                           bias = Random(n, 3);
  std::vector<float> c(size_t(m) * n);
  for (auto _ : state) {
    for (int r = 0; r < m; ++r) std::copy(bias.begin(), bias.end(), c.begin() + size_t(r) * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.f, a.data(), k, w.data(), k,
                1.f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// PackedLinear with the tile the CPU picks (the 12×32 AVX-512 one where it has AVX-512F) or,
// for BM_PackedAvx2, the 6×16 AVX2 one.
void PackedBench(benchmark::State& state, ferry::kernels::GemmKernel kernel) {
  const int m = state.range(0), n = state.range(1), k = state.range(2);
  const std::vector<float> a = Random(size_t(m) * k, 1), w = Random(size_t(n) * k, 2),
                           bias = Random(n, 3);
  std::vector<float> c(size_t(m) * n);
  const ferry::kernels::PackedLinear lin(w.data(), bias.data(), n, k,
                                         ferry::kernels::Activation::kNone, kernel);
  state.SetLabel(lin.kernel() == ferry::kernels::GemmKernel::kAvx512 ? "avx512 12x32"
                 : lin.kernel() == ferry::kernels::GemmKernel::kAvx2 ? "avx2 6x16"
                                                                     : "openblas");
  for (auto _ : state) {
    lin.Apply(a.data(), m, k, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
void BM_Packed(benchmark::State& state) { PackedBench(state, ferry::kernels::DefaultGemmKernel()); }
void BM_PackedAvx2(benchmark::State& state) {
  PackedBench(state, ferry::kernels::GemmKernel::kAvx2);
}

// The FFN's first product with its GELU: in the product's store (Activation::kGelu, arg 1) or as
// a second pass over the output (arg 0). Args: rows, fused.
void BM_PackedGelu(benchmark::State& state) {
  const int m = state.range(0), n = 1536, k = 384;
  const bool fused = state.range(1) != 0;
  const std::vector<float> a = Random(size_t(m) * k, 1), w = Random(size_t(n) * k, 2),
                           bias = Random(n, 3);
  std::vector<float> c(size_t(m) * n);
  const ferry::kernels::PackedLinear lin(
      w.data(), bias.data(), n, k,
      fused ? ferry::kernels::Activation::kGelu : ferry::kernels::Activation::kNone);
  for (auto _ : state) {
    lin.Apply(a.data(), m, k, c.data(), n);
    if (!fused) ferry::kernels::GeluInPlace(c.data(), m * n);
    benchmark::DoNotOptimize(c.data());
  }
}

#ifdef FERRY_BENCH_HAVE_DNNL
void BM_OneDnnMatmul(benchmark::State& state) {
  using dnnl::memory;
  const int m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a = Random(size_t(m) * k, 1), w = Random(size_t(n) * k, 2),
                     bias = Random(n, 3);
  std::vector<float> c(size_t(m) * n);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const memory::desc a_md({m, k}, memory::data_type::f32, memory::format_tag::ab);
  // W is [n, k] row-major, i.e. a [k, n] matrix in the transposed (ba) layout.
  const memory::desc w_plain({k, n}, memory::data_type::f32, memory::format_tag::ba);
  const memory::desc w_any({k, n}, memory::data_type::f32, memory::format_tag::any);
  const memory::desc b_md({1, n}, memory::data_type::f32, memory::format_tag::ab);
  const memory::desc c_md({m, n}, memory::data_type::f32, memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_any, b_md, c_md), eng);
  memory w_src(w_plain, eng, w.data());
  memory w_packed(pd.weights_desc(), eng);
  dnnl::reorder(w_src, w_packed).execute(strm, w_src, w_packed);  // once, at "load"
  memory a_mem(a_md, eng, a.data()), b_mem(b_md, eng, bias.data()), c_mem(c_md, eng, c.data());
  dnnl::matmul prim(pd);
  for (auto _ : state) {
    prim.execute(strm, {{DNNL_ARG_SRC, a_mem},
                        {DNNL_ARG_WEIGHTS, w_packed},
                        {DNNL_ARG_BIAS, b_mem},
                        {DNNL_ARG_DST, c_mem}});
    strm.wait();
    benchmark::DoNotOptimize(c.data());
  }
  state.SetLabel(pd.impl_info_str());
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
#endif

void Shapes(benchmark::internal::Benchmark* b) {
  for (int m : {16, 128, 1024}) {
    b->Args({m, 1152, 384});  // QKV
    b->Args({m, 1536, 384});  // FFN in
    b->Args({m, 384, 1536});  // FFN out
  }
}
BENCHMARK(BM_OpenBlas)->Apply(Shapes);
#ifdef FERRY_BENCH_HAVE_DNNL
BENCHMARK(BM_OneDnnMatmul)->Apply(Shapes);
#endif
BENCHMARK(BM_Packed)->Apply(Shapes);
BENCHMARK(BM_PackedAvx2)->Apply(Shapes);
BENCHMARK(BM_PackedGelu)->ArgsProduct({{16, 128, 1024}, {0, 1}});

// One head (d = 32) of a `len`-token sequence, rows strided as in the packed QKV matrix.
void BM_AttentionSgemm(benchmark::State& state) {
  const int len = state.range(0), d = 32, ld = 3 * 384;
  const std::vector<float> qkv = Random(size_t(len) * ld, 4);
  std::vector<float> scores(size_t(len) * len), ctx(size_t(len) * 384);
  const float scale = 1.f / std::sqrt(float(d));
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, len, len, d, scale, qkv.data(), ld,
                qkv.data() + 384, ld, 0.f, scores.data(), len);
    for (int r = 0; r < len; ++r) {
      float* row = scores.data() + size_t(r) * len;
      const float m = *std::max_element(row, row + len);
      float sum = 0.f;
      for (int c = 0; c < len; ++c) sum += row[c] = std::exp(row[c] - m);
      for (int c = 0; c < len; ++c) row[c] /= sum;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, d, len, 1.f, scores.data(), len,
                qkv.data() + 768, ld, 0.f, ctx.data(), 384);
    benchmark::DoNotOptimize(ctx.data());
  }
}

void BM_AttentionHead(benchmark::State& state) {
  const int len = state.range(0), d = 32, ld = 3 * 384;
  const std::vector<float> qkv = Random(size_t(len) * ld, 4);
  std::vector<float> scratch(ferry::kernels::AttentionScratchFloats(len, d)),
      ctx(size_t(len) * 384);
  const float scale = 1.f / std::sqrt(float(d));
  for (auto _ : state) {
    ferry::kernels::AttentionHead(qkv.data(), qkv.data() + 384, qkv.data() + 768, ld, len, d, scale,
                                  ctx.data(), 384, scratch.data());
    benchmark::DoNotOptimize(ctx.data());
  }
}
BENCHMARK(BM_AttentionSgemm)->Arg(16)->Arg(64)->Arg(128);
BENCHMARK(BM_AttentionHead)->Arg(16)->Arg(64)->Arg(128);

}  // namespace

BENCHMARK_MAIN();
