// GpuMlp latency and throughput against an OpenBLAS CPU reference of the same network.
//
//   ferry_gpu_mlp_bench [--csv PATH] [--precision-csv PATH] [--runs N]
//
// For each model and batch size: median and p90 latency of one Forward (host input to host
// output, copies included) over N timed runs after a warm-up, and rows/s = batch / median. The
// CPU rows time the same network with cblas_sgemm plus a bias/activation loop, on all the cores
// OpenBLAS uses. Without a GPU it prints the reason and exits 0 (nothing to measure).
//
// Then the precision sweep (--precision-csv, default gpu_precision.csv beside --csv): the same
// models as a LinearStack (cuda/linear.h) at fp32, tf32, bf16 and fp16, device-resident (no
// host copies), each batch size launched eagerly (one cuBLASLt call + kernels per layer) and as a
// CUDA graph per batch bucket (cuda/graph_cache.h). Time per forward = wall time of a loop of
// back-to-back launches / iterations (the GPU never idles waiting for the host unless launching
// is the bottleneck, which is what graphs fix); achieved TFLOP/s = 2·Σ in·out · batch / time, and
// its fraction of the card's dense peak for that precision (datasheet numbers, by GPU name;
// blank for a card not in the table). max_abs_diff compares the batch's outputs with OpenBLAS.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cuda/device.h"
#include "cuda/device_stream.h"
#include "cuda/gpu_mlp.h"
#include "cuda/graph_cache.h"
#include "cuda/linear.h"
#include "gpu_peaks.h"

namespace {

using ferry::cuda::Activation;
using ferry::cuda::GpuMlp;

struct Model {
  std::string name;
  std::vector<int64_t> widths;
};

constexpr int64_t kBatchSizes[] = {1, 8, 64, 256, 1024};
constexpr int kWarmupRuns = 10;
// A slow configuration (the big model on the CPU) gets fewer runs so the whole bench stays within
// its time budget.
constexpr double kMaxSecondsPerConfig = 4.0;
constexpr int kMinRuns = 10;

std::vector<GpuMlp::Layer> MakeLayers(const Model& m, std::mt19937& rng) {
  std::vector<GpuMlp::Layer> layers;
  for (size_t i = 0; i + 1 < m.widths.size(); ++i) {
    GpuMlp::Layer l;
    l.in = m.widths[i];
    l.out = m.widths[i + 1];
    const float bound = 1.0f / std::sqrt(static_cast<float>(l.in));
    std::uniform_real_distribution<float> dist(-bound, bound);
    l.weight.resize(static_cast<size_t>(l.in * l.out));
    for (float& w : l.weight) w = dist(rng);
    l.bias.resize(static_cast<size_t>(l.out));
    for (float& b : l.bias) b = dist(rng);
    l.act = i + 2 < m.widths.size() ? Activation::kRelu : Activation::kNone;
    layers.push_back(std::move(l));
  }
  return layers;
}

// The CPU reference: row-major Y[rows, out] = X[rows, in] · W^T + b, then the activation.
class CpuMlp {
 public:
  CpuMlp(const std::vector<GpuMlp::Layer>& layers, int64_t max_rows) : layers_(layers) {
    int64_t widest = 0;
    for (const auto& l : layers_) widest = std::max({widest, l.in, l.out});
    buf_[0].resize(static_cast<size_t>(max_rows * widest));
    buf_[1].resize(static_cast<size_t>(max_rows * widest));
  }

  void Forward(const float* in, int64_t rows, float* out) {
    const float* x = in;
    for (size_t i = 0; i < layers_.size(); ++i) {
      const GpuMlp::Layer& l = layers_[i];
      float* y = i + 1 == layers_.size() ? out : buf_[i % 2].data();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                  static_cast<int>(l.out), static_cast<int>(l.in), 1.0f, x, static_cast<int>(l.in),
                  l.weight.data(), static_cast<int>(l.in), 0.0f, y, static_cast<int>(l.out));
      for (int64_t r = 0; r < rows; ++r) {
        float* row = y + r * l.out;
        for (int64_t c = 0; c < l.out; ++c) {
          const float v = row[c] + l.bias[c];
          row[c] = l.act == Activation::kRelu ? std::max(v, 0.0f) : v;
        }
      }
      x = y;
    }
  }

 private:
  const std::vector<GpuMlp::Layer>& layers_;
  std::vector<float> buf_[2];
};

struct Result {
  std::string model;
  std::string device;
  int64_t batch = 0;
  int runs = 0;
  double median_us = 0;
  double p90_us = 0;
  double rows_per_s = 0;
  double max_abs_diff = NAN;  // GPU rows: largest |GPU − CPU| over the batch's outputs
};

// Returns false when `run` failed.
bool Measure(const std::function<bool()>& run, int max_runs, Result* r) {
  for (int i = 0; i < kWarmupRuns; ++i) {
    if (!run()) return false;
  }
  std::vector<double> us;
  const auto budget_start = std::chrono::steady_clock::now();
  for (int i = 0; i < max_runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!run()) return false;
    const auto t1 = std::chrono::steady_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    const double spent = std::chrono::duration<double>(t1 - budget_start).count();
    if (static_cast<int>(us.size()) >= kMinRuns && spent > kMaxSecondsPerConfig) break;
  }
  std::sort(us.begin(), us.end());
  r->runs = static_cast<int>(us.size());
  r->median_us = us[us.size() / 2];
  r->p90_us = us[std::min(us.size() - 1, us.size() * 9 / 10)];
  r->rows_per_s = static_cast<double>(r->batch) / (r->median_us * 1e-6);
  return true;
}

// ---- Precision sweep ---------------------------------------------------------------------------

using ferry::cuda::Precision;

constexpr int64_t kSweepBatchSizes[] = {1, 8, 64, 256, 1024, 4096};
constexpr double kSweepSecondsPerConfig = 0.15;

using ferry::perf::PeakTflops;

struct SweepRow {
  std::string model;
  std::string precision;
  std::string mode;  // eager | graph
  int64_t batch = 0;
  int iterations = 0;
  double us_per_forward = 0;
  double rows_per_s = 0;
  double tflops = 0;
  double peak_tflops = 0;
  double max_abs_diff = NAN;
};

std::vector<ferry::cuda::LinearSpec> ToSpecs(const std::vector<GpuMlp::Layer>& layers) {
  std::vector<ferry::cuda::LinearSpec> specs;
  for (const GpuMlp::Layer& l : layers) {
    specs.push_back({l.weight, l.bias, l.in, l.out, l.act, l.softmax});
  }
  return specs;
}

// Times `launch` in a loop of back-to-back launches, synchronising once at the end.
absl::StatusOr<std::pair<int, double>> TimeLoop(const std::function<absl::Status()>& launch,
                                                ferry::cuda::DeviceStream& stream) {
  for (int i = 0; i < 3; ++i) {  // warm-up: plans, graph capture, clocks
    if (absl::Status s = launch(); !s.ok()) return s;
  }
  if (absl::Status s = stream.Synchronize(); !s.ok()) return s;
  int iterations = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double seconds = 0;
  // Doubling batches of launches between synchronisations keep the queue full.
  for (int chunk = 1; seconds < kSweepSecondsPerConfig && iterations < 20000; chunk *= 2) {
    for (int i = 0; i < chunk; ++i) {
      if (absl::Status s = launch(); !s.ok()) return s;
    }
    iterations += chunk;
    if (absl::Status s = stream.Synchronize(); !s.ok()) return s;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return std::make_pair(iterations, seconds * 1e6 / iterations);
}

// Returns false on a failure (printed).
bool RunPrecisionSweep(const ferry::cuda::GpuInfo& gpu, const std::vector<Model>& models,
                       const std::string& csv_path) {
  const int64_t max_batch =
      *std::max_element(std::begin(kSweepBatchSizes), std::end(kSweepBatchSizes));
  std::printf(
      "\nprecision sweep on %s (device-resident, %.2f s per config; peak = dense "
      "datasheet TFLOP/s)\n",
      gpu.name.c_str(), kSweepSecondsPerConfig);
  std::printf("%-26s %-5s %-5s %6s %7s %12s %14s %9s %7s %10s\n", "model", "prec", "mode", "batch",
              "iters", "us/forward", "rows_per_s", "TFLOP/s", "%peak", "max_diff");
  auto stream = ferry::cuda::DeviceStream::Create(0);
  if (!stream.ok()) {
    std::fprintf(stderr, "DeviceStream: %s\n", stream.status().ToString().c_str());
    return false;
  }
  std::vector<SweepRow> rows;
  std::mt19937 rng(777);
  for (const Model& m : models) {
    const std::vector<GpuMlp::Layer> layers = MakeLayers(m, rng);
    CpuMlp cpu(layers, max_batch);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> in(static_cast<size_t>(max_batch * m.widths.front()));
    for (float& x : in) x = dist(rng);
    const size_t out_floats = static_cast<size_t>(max_batch * m.widths.back());
    auto d_in = (*stream)->Allocate(in.size() * sizeof(float));
    auto d_out = (*stream)->Allocate(out_floats * sizeof(float));
    if (!d_in.ok() || !d_out.ok()) {
      std::fprintf(stderr, "Allocate failed\n");
      return false;
    }
    float* in_ptr = static_cast<float*>(*d_in);
    float* out_ptr = static_cast<float*>(*d_out);
    bool ok = (*stream)->CopyToDevice(in_ptr, in.data(), in.size() * sizeof(float)).ok();
    for (const Precision p :
         {Precision::kFp32, Precision::kTf32, Precision::kBf16, Precision::kFp16}) {
      auto stack = ferry::cuda::LinearStack::Create({.device = 0, .precision = p}, ToSpecs(layers));
      if (!stack.ok()) {
        std::fprintf(stderr, "LinearStack::Create: %s\n", stack.status().ToString().c_str());
        return false;
      }
      auto scratch = (*stack)->CreateScratch(max_batch);
      if (!scratch.ok()) {
        std::fprintf(stderr, "CreateScratch: %s\n", scratch.status().ToString().c_str());
        return false;
      }
      ferry::cuda::LinearStack* s = stack->get();
      ferry::cuda::LinearScratch* sc = scratch->get();
      auto graphs = ferry::cuda::GraphCache::Create(
          {.device = 0,
           .buckets = {std::begin(kSweepBatchSizes), std::end(kSweepBatchSizes)},
           .enqueue = [s, sc, in_ptr, out_ptr](int64_t rows, cudaStream_t st) {
             return s->Enqueue(in_ptr, rows, out_ptr, *sc, st);
           }});
      if (!graphs.ok()) return false;
      cudaStream_t st = static_cast<cudaStream_t>((*stream)->stream());
      for (const int64_t batch : kSweepBatchSizes) {
        double diff = NAN;
        for (const char* mode : {"eager", "graph"}) {
          const bool graph = mode[0] == 'g';
          auto timed = TimeLoop(
              [&]() -> absl::Status {
                if (!graph) return s->Enqueue(in_ptr, batch, out_ptr, *sc, st);
                return (*graphs)->Launch(batch, st).status();
              },
              **stream);
          if (!timed.ok()) {
            std::fprintf(stderr, "%s %s batch %lld: %s\n", m.name.c_str(),
                         std::string(PrecisionName(p)).c_str(), static_cast<long long>(batch),
                         timed.status().ToString().c_str());
            return false;
          }
          if (std::isnan(diff)) {  // once per batch: the outputs against OpenBLAS
            std::vector<float> got(static_cast<size_t>(batch * m.widths.back()));
            std::vector<float> want(got.size());
            ok &= (*stream)->CopyToHost(got.data(), out_ptr, got.size() * sizeof(float)).ok();
            ok &= (*stream)->Synchronize().ok();
            cpu.Forward(in.data(), batch, want.data());
            diff = 0;
            for (size_t i = 0; i < got.size(); ++i) {
              diff = std::max(diff, static_cast<double>(std::abs(got[i] - want[i])));
            }
          }
          SweepRow r;
          r.model = m.name;
          r.precision = std::string(PrecisionName(p));
          r.mode = mode;
          r.batch = batch;
          r.iterations = timed->first;
          r.us_per_forward = timed->second;
          r.rows_per_s = static_cast<double>(batch) / (r.us_per_forward * 1e-6);
          r.tflops = static_cast<double>(s->flops_per_row()) * static_cast<double>(batch) /
                     (r.us_per_forward * 1e-6) / 1e12;
          r.peak_tflops = PeakTflops(gpu.name, p);
          r.max_abs_diff = diff;
          std::printf("%-26s %-5s %-5s %6lld %7d %12.2f %14.0f %9.2f %6.1f%% %10.2g\n",
                      r.model.c_str(), r.precision.c_str(), r.mode.c_str(),
                      static_cast<long long>(r.batch), r.iterations, r.us_per_forward, r.rows_per_s,
                      r.tflops, r.peak_tflops > 0 ? 100 * r.tflops / r.peak_tflops : NAN,
                      r.max_abs_diff);
          std::fflush(stdout);
          rows.push_back(r);
        }
      }
    }
    (*stream)->Free(in_ptr);
    (*stream)->Free(out_ptr);
    if (!ok) {
      std::fprintf(stderr, "copy failed\n");
      return false;
    }
  }
  std::ofstream csv(csv_path);
  if (!csv) {
    std::fprintf(stderr, "cannot write %s\n", csv_path.c_str());
    return false;
  }
  csv << "model,precision,mode,gpu_name,batch,iterations,us_per_forward,rows_per_s,tflops,"
         "peak_tflops,fraction_of_peak,max_abs_diff\n";
  for (const SweepRow& r : rows) {
    csv << r.model << ',' << r.precision << ',' << r.mode << ',' << gpu.name << ',' << r.batch
        << ',' << r.iterations << ',' << r.us_per_forward << ',' << r.rows_per_s << ',' << r.tflops
        << ',' << (r.peak_tflops > 0 ? std::to_string(r.peak_tflops) : "") << ','
        << (r.peak_tflops > 0 ? std::to_string(r.tflops / r.peak_tflops) : "") << ','
        << r.max_abs_diff << '\n';
  }
  std::printf("\nwrote %s\n", csv_path.c_str());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string csv_path = "perf/results/gpu_mlp.csv";
  std::string precision_csv_path;
  int max_runs = 200;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--csv") == 0 && i + 1 < argc) {
      csv_path = argv[++i];
    } else if (std::strcmp(argv[i], "--precision-csv") == 0 && i + 1 < argc) {
      precision_csv_path = argv[++i];
    } else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      max_runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--csv PATH] [--precision-csv PATH] [--runs N]\n", argv[0]);
      return 2;
    }
  }

  const auto gpus = ferry::cuda::ListGpus();
  if (!gpus.ok()) {
    // Nothing to compare against: the CPU numbers alone belong to other benchmarks.
    std::printf("%s\n", std::string(gpus.status().message()).c_str());
    return 0;
  }
  const ferry::cuda::GpuInfo& gpu = gpus->front();
  std::printf("GPU 0: %s (sm_%d%d, %lld MiB), OpenBLAS threads: %d, up to %d runs per config\n",
              gpu.name.c_str(), gpu.compute_capability_major, gpu.compute_capability_minor,
              static_cast<long long>(gpu.total_memory_bytes >> 20), openblas_get_num_threads(),
              max_runs);

  const std::vector<Model> models = {{"mlp-64-256-256-16", {64, 256, 256, 16}},
                                     {"mlp-1024-4096-4096-1024", {1024, 4096, 4096, 1024}}};
  const int64_t max_batch = *std::max_element(std::begin(kBatchSizes), std::end(kBatchSizes));
  std::mt19937 rng(12345);  // fixed: the numbers, not the values, are what is measured
  std::vector<Result> results;
  bool ok = true;

  std::printf("\n%-26s %-4s %6s %5s %12s %12s %14s %10s\n", "model", "dev", "batch", "runs",
              "median_us", "p90_us", "rows_per_s", "max_diff");
  for (const Model& m : models) {
    const std::vector<GpuMlp::Layer> layers = MakeLayers(m, rng);
    auto mlp = GpuMlp::Create(0, layers, max_batch);
    if (!mlp.ok()) {
      std::fprintf(stderr, "GpuMlp::Create(%s): %s\n", m.name.c_str(),
                   mlp.status().ToString().c_str());
      return 1;
    }
    CpuMlp cpu(layers, max_batch);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> in(static_cast<size_t>(max_batch * m.widths.front()));
    for (float& x : in) x = dist(rng);
    std::vector<float> gpu_out(static_cast<size_t>(max_batch * m.widths.back()));
    std::vector<float> cpu_out(gpu_out.size());

    for (const int64_t batch : kBatchSizes) {
      Result g{m.name, "gpu", batch};
      Result c{m.name, "cpu", batch};
      absl::Status status;
      ok &= Measure(
          [&] {
            status = (*mlp)->Forward(in.data(), batch, gpu_out.data());
            return status.ok();
          },
          max_runs, &g);
      if (!status.ok()) {
        std::fprintf(stderr, "Forward: %s\n", status.ToString().c_str());
        return 1;
      }
      Measure(
          [&] {
            cpu.Forward(in.data(), batch, cpu_out.data());
            return true;
          },
          max_runs, &c);
      double diff = 0;
      for (int64_t i = 0; i < batch * m.widths.back(); ++i) {
        diff = std::max(diff, static_cast<double>(std::abs(gpu_out[i] - cpu_out[i])));
      }
      g.max_abs_diff = diff;
      for (const Result* r : {&g, &c}) {
        std::printf("%-26s %-4s %6lld %5d %12.1f %12.1f %14.0f %10.2g\n", r->model.c_str(),
                    r->device.c_str(), static_cast<long long>(r->batch), r->runs, r->median_us,
                    r->p90_us, r->rows_per_s, r->max_abs_diff);
        results.push_back(*r);
      }
      std::fflush(stdout);
    }
  }

  std::ofstream csv(csv_path);
  if (!csv) {
    std::fprintf(stderr, "cannot write %s\n", csv_path.c_str());
    return 1;
  }
  csv << "model,device,gpu_name,batch,runs,median_us,p90_us,rows_per_s,max_abs_diff\n";
  for (const Result& r : results) {
    csv << r.model << ',' << r.device << ',' << gpu.name << ',' << r.batch << ',' << r.runs << ','
        << r.median_us << ',' << r.p90_us << ',' << r.rows_per_s << ','
        << (std::isnan(r.max_abs_diff) ? std::string() : std::to_string(r.max_abs_diff)) << '\n';
  }
  std::printf("\nwrote %s\n", csv_path.c_str());
  csv.close();

  if (precision_csv_path.empty()) {
    const size_t slash = csv_path.rfind('/');
    precision_csv_path =
        (slash == std::string::npos ? std::string() : csv_path.substr(0, slash + 1)) +
        "gpu_precision.csv";
  }
  ok &= RunPrecisionSweep(gpu, models, precision_csv_path);
  return ok ? 0 : 1;
}
