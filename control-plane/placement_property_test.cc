// Randomised property test of placement: on many random clusters and function specs, placing
// replicas one after another (with accounting) never violates a hard constraint, and a replica
// stays pending exactly when a brute-force oracle finds no feasible (node, device).
#include <random>
#include <string>
#include <vector>

#include "control-plane/placement.h"
#include "gtest/gtest.h"

namespace ferry::control {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

struct OracleGpu {
  int index;
  int kind;
  int64_t memory;
  int cc;
  int64_t used = 0;
};
struct OracleNode {
  bool ready;
  double cores;
  int64_t memory;
  double price;
  std::vector<OracleGpu> gpus;
  double cores_used = 0;
  int64_t memory_used = 0;
};

// Independent restatement of the constraints (not the plugin code).
bool OracleFits(const OracleNode& n, int gpu_slot, const Requirements& r,
                const FunctionProfiles& p) {
  if (!n.ready) return false;
  if (r.accelerator == Accelerator::kGpu && gpu_slot < 0) return false;
  if (r.accelerator == Accelerator::kCpu && gpu_slot >= 0) return false;
  if (n.cores - n.cores_used + 1e-9 < r.cpu_cores) return false;
  if (n.memory - n.memory_used < r.memory_bytes) return false;
  int kind = kCpuKind;
  double share = n.price * std::min(1.0, r.cpu_cores / n.cores);
  if (gpu_slot >= 0) {
    const OracleGpu& g = n.gpus[gpu_slot];
    if (r.min_compute_capability_x10 > 0 && g.cc < r.min_compute_capability_x10) return false;
    if (g.memory - g.used < r.gpu_memory_bytes) return false;
    kind = g.kind;
    share = n.price / static_cast<double>(n.gpus.size());
  }
  const LatencyModel m = p.Get(kind);
  const double lat1 = m.a_us + m.b_us;
  if (m.measured && r.latency_target_us > 0 && lat1 > r.latency_target_us) return false;
  if (r.max_cost_per_million) {
    const double tput = CapacityOf(m, r).throughput_rps;
    const double cost = share / 3600.0 / tput * 1e6;
    if (cost > *r.max_cost_per_million) return false;
  }
  return true;
}

bool OracleAnyFits(const std::vector<OracleNode>& nodes, const Requirements& r,
                   const FunctionProfiles& p) {
  for (const auto& n : nodes) {
    if (OracleFits(n, -1, r, p)) return true;
    for (size_t g = 0; g < n.gpus.size(); ++g) {
      if (OracleFits(n, static_cast<int>(g), r, p)) return true;
    }
  }
  return false;
}

TEST(PlacementPropertyTest, NeverViolatesAFilterAndPendingIffOracleFindsNothing) {
  std::mt19937_64 rng(20240601);
  const std::vector<std::string> gpu_names = {"T4", "L4", "A10", "A100", "H100"};
  const std::vector<int> gpu_cc = {75, 89, 86, 80, 90};
  const std::vector<int64_t> gpu_mem = {16 << 10, 24 << 10, 24 << 10, 40 << 10, 80 << 10};
  int placed_total = 0;
  int pending_total = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    Cluster cluster;
    std::vector<OracleNode> oracle;
    const int num_nodes = std::uniform_int_distribution<int>(0, 8)(rng);
    for (int i = 0; i < num_nodes; ++i) {
      NodeSpec n;
      n.id = "n" + std::to_string(i);
      n.cpu_cores = std::uniform_int_distribution<int>(1, 16)(rng) / 2.0;
      n.memory_bytes = std::uniform_int_distribution<int64_t>(256, 16384)(rng) * kMiB;
      n.price_per_hour = std::uniform_real_distribution<double>(0.0, 5.0)(rng);
      n.ready = std::uniform_int_distribution<int>(0, 9)(rng) != 0;
      OracleNode o{n.ready, n.cpu_cores, n.memory_bytes, n.price_per_hour, {}};
      const int num_gpus = std::uniform_int_distribution<int>(0, 3)(rng) == 0
                               ? 0
                               : std::uniform_int_distribution<int>(1, 4)(rng);
      for (int g = 0; g < num_gpus; ++g) {
        const int t = std::uniform_int_distribution<int>(0, 4)(rng);
        GpuDevice d{g, cluster.kinds().Intern(gpu_names[t]),
                    std::uniform_int_distribution<int64_t>(1, gpu_mem[t] >> 9)(rng) * 512 * kMiB,
                    gpu_cc[t]};
        n.gpus.push_back(d);
        o.gpus.push_back({d.index, d.kind, d.memory_bytes, d.compute_capability_x10});
      }
      cluster.AddNode(n);
      oracle.push_back(o);
    }
    Requirements r;
    const int accel = std::uniform_int_distribution<int>(0, 2)(rng);
    r.accelerator = accel == 0   ? Accelerator::kCpu
                    : accel == 1 ? Accelerator::kGpu
                                 : Accelerator::kAny;
    if (r.accelerator != Accelerator::kCpu) {
      r.gpu_memory_bytes = std::uniform_int_distribution<int64_t>(0, 16)(rng) * 1024 * kMiB;
      r.min_compute_capability_x10 = std::uniform_int_distribution<int>(0, 1)(rng)
                                         ? 0
                                         : gpu_cc[std::uniform_int_distribution<int>(0, 4)(rng)];
    }
    r.cpu_cores = std::uniform_int_distribution<int>(1, 8)(rng) / 4.0;
    r.memory_bytes = std::uniform_int_distribution<int64_t>(64, 4096)(rng) * kMiB;
    r.max_batch_size = std::uniform_int_distribution<int>(1, 64)(rng);
    r.latency_target_us = std::uniform_int_distribution<int>(0, 1)(rng)
                              ? 0
                              : std::uniform_int_distribution<int>(1000, 50'000)(rng);
    if (std::uniform_int_distribution<int>(0, 2)(rng) == 0) {
      r.max_cost_per_million = std::uniform_real_distribution<double>(0.0, 3.0)(rng);
    }
    FunctionProfiles profiles;
    for (int k = 0; k < cluster.kinds().size(); ++k) {
      if (std::uniform_int_distribution<int>(0, 1)(rng)) {
        profiles.Set(k, {std::uniform_real_distribution<double>(1, 2000)(rng),
                         std::uniform_real_distribution<double>(0, 20'000)(rng), true});
      }
    }
    PlacementHints hints;
    if (num_nodes > 0)
      hints.warm_nodes = {std::uniform_int_distribution<int>(0, num_nodes - 1)(rng)};

    const int replicas = std::uniform_int_distribution<int>(1, 6)(rng);
    for (int i = 0; i < replicas; ++i) {
      const bool oracle_fits = OracleAnyFits(oracle, r, profiles);
      const Decision d = PlaceOne(cluster, r, profiles, hints);
      ASSERT_EQ(d.placed, oracle_fits) << "trial " << trial << " replica " << i << ": " << d.reason;
      if (!d.placed) {
        ++pending_total;
        EXPECT_FALSE(d.reason.empty());
        break;
      }
      ++placed_total;
      int slot = -1;
      for (size_t g = 0; g < oracle[d.node].gpus.size(); ++g) {
        if (oracle[d.node].gpus[g].index == d.device_index) slot = static_cast<int>(g);
      }
      ASSERT_EQ(slot < 0, d.device_index < 0);
      ASSERT_TRUE(OracleFits(oracle[d.node], slot, r, profiles))
          << "trial " << trial << ": placement violates a constraint";
      cluster.Assign(d.node, d.device_index, r);
      oracle[d.node].cores_used += r.cpu_cores;
      oracle[d.node].memory_used += r.memory_bytes;
      if (slot >= 0) oracle[d.node].gpus[slot].used += r.gpu_memory_bytes;
      hints.replicas_on_node.emplace_back(d.node, 1);
    }
  }
  // The generator must exercise both outcomes.
  EXPECT_GT(placed_total, 7000);
  EXPECT_GT(pending_total, 2000);
}

}  // namespace
}  // namespace ferry::control
