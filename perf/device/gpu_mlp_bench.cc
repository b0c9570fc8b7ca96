// GpuMlp latency and throughput against an OpenBLAS CPU reference of the same network.
//
//   ferry_gpu_mlp_bench [--csv PATH] [--runs N]
//
// For each model and batch size: median and p90 latency of one Forward (host input to host
// output, copies included) over N timed runs after a warm-up, and rows/s = batch / median. The
// CPU rows time the same network with cblas_sgemm plus a bias/activation loop, on all the cores
// OpenBLAS uses. Without a GPU it prints the reason and exits 0 (nothing to measure).
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
#include "cuda/gpu_mlp.h"

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

}  // namespace

int main(int argc, char** argv) {
  std::string csv_path = "perf/results/gpu_mlp.csv";
  int max_runs = 200;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--csv") == 0 && i + 1 < argc) {
      csv_path = argv[++i];
    } else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      max_runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--csv PATH] [--runs N]\n", argv[0]);
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

  const Model models[] = {{"mlp-64-256-256-16", {64, 256, 256, 16}},
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
  return ok ? 0 : 1;
}
