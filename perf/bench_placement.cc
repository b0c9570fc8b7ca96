// Placement timing on a synthetic heterogeneous cluster (T4/L4/A10/A100/H100 and CPU-only nodes,
// random prices): one function over N nodes (every node filtered and scored), and a full re-plan
// of M functions (one replica each, accounted as placed). Prints JSON lines with medians.
//   bench_placement [--nodes 1000] [--functions 10000] [--repeats 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "control-plane/placement.h"

namespace {

using ferry::Accelerator;
using namespace ferry::control;
using Clock = std::chrono::steady_clock;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

Cluster MakeCluster(int nodes, std::mt19937_64& rng) {
  struct Kind {
    const char* name;
    int64_t mem;
    int cc;
    double price;
  };
  const Kind kinds[] = {{"T4", 16 * kGiB, 75, 0.35},
                        {"L4", 24 * kGiB, 89, 0.8},
                        {"A10", 24 * kGiB, 86, 1.0},
                        {"A100", 80 * kGiB, 80, 3.0},
                        {"H100", 80 * kGiB, 90, 4.5}};
  Cluster c;
  for (int i = 0; i < nodes; ++i) {
    NodeSpec n;
    n.id = "node-" + std::to_string(i);
    n.cpu_cores = std::uniform_int_distribution<int>(8, 96)(rng);
    n.memory_bytes = std::uniform_int_distribution<int64_t>(32, 512)(rng) * kGiB;
    const int k = std::uniform_int_distribution<int>(-1, 4)(rng);
    n.price_per_hour = 0.05 * n.cpu_cores;
    if (k >= 0) {
      const int gpus = std::uniform_int_distribution<int>(1, 8)(rng);
      for (int g = 0; g < gpus; ++g) {
        n.gpus.push_back({g, c.kinds().Intern(kinds[k].name), kinds[k].mem, kinds[k].cc});
      }
      n.price_per_hour += gpus * kinds[k].price * std::uniform_real_distribution<>(0.8, 1.2)(rng);
    }
    c.AddNode(std::move(n));
  }
  return c;
}

Requirements RandomFunction(std::mt19937_64& rng) {
  Requirements r;
  const int a = std::uniform_int_distribution<int>(0, 2)(rng);
  r.accelerator = a == 0 ? Accelerator::kCpu : a == 1 ? Accelerator::kGpu : Accelerator::kAny;
  if (r.accelerator != Accelerator::kCpu) {
    r.gpu_memory_bytes = std::uniform_int_distribution<int64_t>(1, 8)(rng) * 256 * kMiB;
    r.min_compute_capability_x10 = std::uniform_int_distribution<int>(0, 1)(rng) ? 0 : 80;
  }
  r.cpu_cores = std::uniform_int_distribution<int>(1, 4)(rng) / 4.0;
  r.memory_bytes = std::uniform_int_distribution<int64_t>(1, 8)(rng) * 128 * kMiB;
  r.latency_target_us = std::uniform_int_distribution<int>(5, 100)(rng) * 1000;
  r.max_batch_size = 32;
  if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) r.max_cost_per_million = 5.0;
  return r;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  int nodes = 1000;
  int functions = 10000;
  int repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--nodes")) nodes = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--functions")) functions = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
  }
  std::mt19937_64 rng(42);
  const Cluster base = MakeCluster(nodes, rng);

  // 1. One function onto N nodes, many different functions, nothing accounted.
  {
    std::vector<double> us;
    int placed = 0;
    for (int i = 0; i < 2000; ++i) {
      const Requirements r = RandomFunction(rng);
      FunctionProfiles p;
      const auto t0 = Clock::now();
      const Decision d = PlaceOne(base, r, p, {});
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      placed += d.placed;
    }
    std::printf(
        "{\"bench\":\"place_one\",\"nodes\":%d,\"samples\":%zu,\"placed\":%d,\"p50_us\":%.1f,"
        "\"p99_us\":%.1f,\"max_us\":%.1f,\"goal_p99_us\":1000}\n",
        nodes, us.size(), placed, Percentile(us, 50), Percentile(us, 99), Percentile(us, 100));
  }

  // 2. Full re-plan: M functions, one replica each, accounted as placed.
  {
    std::vector<Requirements> fns;
    for (int i = 0; i < functions; ++i) fns.push_back(RandomFunction(rng));
    std::vector<double> ms;
    int placed = 0;
    for (int rep = 0; rep < repeats; ++rep) {
      Cluster c = base;
      placed = 0;
      const auto t0 = Clock::now();
      for (const Requirements& r : fns) {
        const Decision d = PlaceOne(c, r, {}, {});
        if (d.placed) {
          c.Assign(d.node, d.device_index, r);
          ++placed;
        }
      }
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::printf(
        "{\"bench\":\"full_replan\",\"nodes\":%d,\"functions\":%d,\"placed\":%d,\"repeats\":%d,"
        "\"median_ms\":%.1f,\"min_ms\":%.1f,\"goal_ms\":2000}\n",
        nodes, functions, placed, repeats, Percentile(ms, 50), Percentile(ms, 0));
  }
  return 0;
}
