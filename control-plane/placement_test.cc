#include "control-plane/placement.h"

#include <string>
#include <vector>

#include "control-plane/replica_target.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::control {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

struct GpuDef {
  std::string name;
  int64_t memory_bytes;
  int cc_x10;
};

struct NodeDef {
  std::string id;
  double cores;
  int64_t memory_bytes;
  std::vector<GpuDef> gpus;
  double price = 1.0;
};

Cluster MakeCluster(const std::vector<NodeDef>& defs) {
  Cluster c;
  for (const auto& d : defs) {
    NodeSpec n;
    n.id = d.id;
    n.cpu_cores = d.cores;
    n.memory_bytes = d.memory_bytes;
    n.price_per_hour = d.price;
    int i = 0;
    for (const auto& g : d.gpus) {
      n.gpus.push_back({i++, c.kinds().Intern(g.name), g.memory_bytes, g.cc_x10});
    }
    c.AddNode(std::move(n));
  }
  return c;
}

Requirements Cpu(double cores = 1, int64_t mem = 512 * kMiB) {
  Requirements r;
  r.accelerator = Accelerator::kCpu;
  r.cpu_cores = cores;
  r.memory_bytes = mem;
  r.max_batch_size = 8;
  return r;
}

Requirements Gpu(int64_t gpu_mem, int min_cc = 0) {
  Requirements r;
  r.accelerator = Accelerator::kGpu;
  r.gpu_memory_bytes = gpu_mem;
  r.min_compute_capability_x10 = min_cc;
  r.cpu_cores = 1;
  r.memory_bytes = 512 * kMiB;
  r.max_batch_size = 8;
  return r;
}

std::string NodeOf(const Cluster& c, const Decision& d) {
  return d.placed ? c.nodes()[d.node].id : "pending: " + d.reason;
}

struct Case {
  std::string name;
  std::vector<NodeDef> nodes;
  Requirements req;
  int replicas;                   // placed one after another, accounted
  std::vector<std::string> want;  // node id per replica, or "pending"
  std::string reason_contains;    // for the first pending one
};

class PlacementTableTest : public ::testing::TestWithParam<Case> {};

TEST_P(PlacementTableTest, PlacesAsExpected) {
  const Case& tc = GetParam();
  Cluster cluster = MakeCluster(tc.nodes);
  FunctionProfiles profiles;
  PlacementHints hints;
  std::vector<std::string> got;
  std::string reason;
  for (int i = 0; i < tc.replicas; ++i) {
    Decision d = PlaceOne(cluster, tc.req, profiles, hints);
    if (!d.placed) {
      got.push_back("pending");
      if (reason.empty()) reason = d.reason;
      continue;
    }
    ASSERT_TRUE(CandidateFits(cluster, tc.req, profiles, d.node, d.device_index));
    cluster.Assign(d.node, d.device_index, tc.req);
    bool seen = false;
    for (auto& [n, count] : hints.replicas_on_node) {
      if (n == d.node) {
        ++count;
        seen = true;
      }
    }
    if (!seen) hints.replicas_on_node.emplace_back(d.node, 1);
    got.push_back(cluster.nodes()[d.node].id);
  }
  EXPECT_EQ(got, tc.want);
  if (!tc.reason_contains.empty()) {
    EXPECT_THAT(reason, HasSubstr(tc.reason_contains));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PlacementTableTest,
    ::testing::Values(
        Case{"CpuFunctionGoesToCpuNodeNotOnlyGpu",
             {{"cpu", 4, 8 * kGiB, {}, 0.2}, {"gpu", 4, 8 * kGiB, {{"H200", 141 * kGiB, 90}}, 4.0}},
             Cpu(),
             1,
             {"cpu"},
             ""},
        Case{"GpuFunctionSkipsCpuNodes",
             {{"cpu1", 16, 64 * kGiB, {}}, {"gpu", 4, 8 * kGiB, {{"L4", 24 * kGiB, 89}}}},
             Gpu(kGiB),
             1,
             {"gpu"},
             ""},
        Case{"GpuMemoryExhaustion",
             {{"gpu", 8, 64 * kGiB, {{"T4", 3 * kGiB, 75}}}},
             Gpu(kGiB),
             4,
             {"gpu", "gpu", "gpu", "pending"},
             "1 has 0 MiB free GPU memory (needs 1024)"},
        Case{"ComputeCapabilityFilters",
             {{"old", 8, 64 * kGiB, {{"T4", 16 * kGiB, 75}}},
              {"new", 8, 64 * kGiB, {{"A100", 40 * kGiB, 80}}, 3.0}},
             Gpu(kGiB, 80),
             1,
             {"new"},
             ""},
        Case{"ComputeCapabilityReason",
             {{"old", 8, 64 * kGiB, {{"T4", 16 * kGiB, 75}}}},
             Gpu(kGiB, 80),
             1,
             {"pending"},
             "0/1 nodes fit: 1 has GPU compute capability 7.5 (needs 8.0)"},
        Case{"CpuCoresExhaust",
             {{"a", 2, 64 * kGiB, {}}},
             Cpu(1),
             3,
             {"a", "a", "pending"},
             "1 has 0 free CPU cores (needs 1)"},
        Case{"MemoryExhausts",
             {{"a", 64, 1 * kGiB, {}}},
             Cpu(1, 600 * kMiB),
             2,
             {"a", "pending"},
             "1 has 424 MiB free memory (needs 600)"},
        Case{"SpreadAcrossEqualNodes",
             {{"a", 8, 8 * kGiB, {}}, {"b", 8, 8 * kGiB, {}}, {"c", 8, 8 * kGiB, {}}},
             Cpu(),
             3,
             {"a", "b", "c"},
             ""},
        Case{"MixedReasons",
             {{"c1", 8, 8 * kGiB, {}},
              {"c2", 8, 8 * kGiB, {}},
              {"small", 8, 8 * kGiB, {{"T4", 512 * kMiB, 75}}}},
             Gpu(kGiB),
             1,
             {"pending"},
             "0/3 nodes fit: 2 have no GPU, 1 has 512 MiB free GPU memory (needs 1024)"},
        Case{"NoNodes", {}, Cpu(), 1, {"pending"}, "0/0 nodes fit: no nodes are registered"}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(PlacementTest, CheaperFeasibleKindWins) {
  // Two feasible kinds for an `any` function: a cheap CPU node and a pricey GPU node. With
  // measured profiles, the GPU serves 20x the throughput for 4x the price: the GPU wins.
  Cluster c = MakeCluster(
      {{"cpu", 4, 8 * kGiB, {}, 1.0}, {"gpu", 4, 8 * kGiB, {{"H200", 141 * kGiB, 90}}, 4.0}});
  Requirements r = Gpu(kGiB);
  r.accelerator = Accelerator::kAny;
  r.cpu_cores = 4;  // the whole CPU node: the CPU replica pays the full price
  r.latency_target_us = 20'000;
  FunctionProfiles p;
  p.Set(kCpuKind, {1000, 1000, true});
  p.Set(c.kinds().Find("H200"), {50, 500, true});
  Decision d = PlaceOne(c, r, p, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "gpu");
  EXPECT_EQ(d.device_index, 0);
  // Make the GPU slow: now the CPU node is cheaper per request.
  p.Set(c.kinds().Find("H200"), {900, 1000, true});
  d = PlaceOne(c, r, p, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "cpu");
  EXPECT_EQ(d.device_index, -1);
}

TEST(PlacementTest, NeededThroughputMakesWholeReplicasCount) {
  // 4 T4s at $1/h each and one A100 at $3.5/h. Batch 8 within half the 200 ms target: a T4
  // replica serves 8 / 100 ms = 80 rps, the A100 8 / 25 ms = 320 rps. Per request at full
  // throughput the A100 is cheaper ($3.04 vs $3.47 per million), and wins without a need.
  Cluster c = MakeCluster({{"t4",
                            32,
                            64 * kGiB,
                            {{"T4", 16 * kGiB, 75},
                             {"T4", 16 * kGiB, 75},
                             {"T4", 16 * kGiB, 75},
                             {"T4", 16 * kGiB, 75}},
                            4.0},
                           {"a100", 32, 64 * kGiB, {{"A100", 80 * kGiB, 80}}, 3.5}});
  Requirements r = Gpu(kGiB);
  r.max_batch_size = 8;
  r.latency_target_us = 200'000;
  FunctionProfiles p;
  p.Set(c.kinds().Find("T4"), {10'000, 20'000, true});
  p.Set(c.kinds().Find("A100"), {2'500, 5'000, true});
  Decision d = PlaceOne(c, r, p, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "a100");
  EXPECT_NEAR(d.throughput_rps, 320, 1e-6);
  // 100 rps wanted: two T4 replicas ($2/h) cover it for less than the A100 ($3.5/h).
  PlacementHints hints;
  hints.needed_rps = 100;
  d = PlaceOne(c, r, p, hints);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "t4");
  // The per-request cost reported stays the full-throughput one (what the cost cap checks).
  EXPECT_NEAR(d.cost_per_million, 1.0 / 3600 / 80 * 1e6, 1e-6);
  // 300 rps wanted: four T4s ($4/h) cost more than one A100.
  hints.needed_rps = 300;
  d = PlaceOne(c, r, p, hints);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "a100");
}

TEST(PlacementTest, CostCapFiltersAndExplains) {
  Cluster c = MakeCluster({{"pricey", 4, 8 * kGiB, {}, 100.0}, {"cheap", 4, 8 * kGiB, {}, 0.01}});
  Requirements r = Cpu(4);
  r.max_cost_per_million = 1.0;
  // Default CPU model at batch 8: 8 / 10 ms = 800 rps; cheap: 0.01 $/h -> ~$0.0035/M.
  Decision d = PlaceOne(c, r, {}, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "cheap");
  EXPECT_LE(d.cost_per_million, 1.0);
  c.Assign(d.node, d.device_index, r);
  d = PlaceOne(c, r, {}, {});
  ASSERT_FALSE(d.placed);
  EXPECT_THAT(d.reason, HasSubstr("0/2 nodes fit: 1 has 0 free CPU cores (needs 4)"));
  EXPECT_THAT(d.reason, HasSubstr("1 costs $34.72 per million requests (cap $1)"));
}

TEST(PlacementTest, WarmAffinityBeatsColdEqualNode) {
  Cluster c = MakeCluster({{"a", 8, 8 * kGiB, {}}, {"b", 8, 8 * kGiB, {}}});
  PlacementHints hints;
  hints.warm_nodes = {1};
  Decision d = PlaceOne(c, Cpu(), {}, hints);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "b");
}

TEST(PlacementTest, SpreadingBeatsWarmthForSecondReplica) {
  Cluster c = MakeCluster({{"a", 8, 8 * kGiB, {}}, {"b", 8, 8 * kGiB, {}}});
  PlacementHints hints;
  hints.warm_nodes = {0};
  // a is warm but already runs a replica: spreading (b: 100 vs a: 50) wins over warmth.
  hints.replicas_on_node = {{0, 1}};
  Decision d = PlaceOne(c, Cpu(), {}, hints);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "b");
}

TEST(PlacementTest, SpreadingChoosesOnlyAmongNearEqualCosts) {
  // One replica on "a" already. "b" costs 4 % more per hour: within the 5 % band, so spreading
  // puts the second replica there. "c" instead costs 10 % more: the replica stays on "a".
  Cluster near = MakeCluster({{"a", 8, 8 * kGiB, {}, 1.00}, {"b", 8, 8 * kGiB, {}, 1.04}});
  Cluster far = MakeCluster({{"a", 8, 8 * kGiB, {}, 1.00}, {"c", 8, 8 * kGiB, {}, 1.10}});
  PlacementHints hints;
  hints.replicas_on_node = {{0, 1}};
  Decision d = PlaceOne(near, Cpu(), {}, hints);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(near, d), "b");
  d = PlaceOne(far, Cpu(), {}, hints);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(far, d), "a");
  // Warmth does not buy a 10 % dearer node either.
  PlacementHints warm;
  warm.warm_nodes = {1};
  d = PlaceOne(far, Cpu(), {}, warm);
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(far, d), "a");
}

TEST(ReplicaTargetTest, CoversTheNeedWithinTheCountBounds) {
  ReplicaTarget t{/*min_replicas=*/1, /*max_replicas=*/3, /*need_rps=*/250};
  EXPECT_TRUE(WantsAnother(t, 0, 0));    // below minReplicas
  EXPECT_TRUE(WantsAnother(t, 1, 200));  // 50 rps uncovered
  EXPECT_DOUBLE_EQ(Uncovered(t, 200), 50);
  EXPECT_FALSE(WantsAnother(t, 2, 250));  // covered exactly
  EXPECT_FALSE(WantsAnother(t, 3, 240));  // maxReplicas, even uncovered
  EXPECT_DOUBLE_EQ(Uncovered(t, 300), 0);
  // A replica goes only when the rest still cover the need, never below minReplicas.
  EXPECT_TRUE(MayRemove(t, 3, 400, 100));
  EXPECT_FALSE(MayRemove(t, 3, 300, 100));
  EXPECT_FALSE(MayRemove(t, 1, 1000, 100));
  ReplicaTarget zero{0, 3, 0};
  EXPECT_FALSE(WantsAnother(zero, 0, 0));
  EXPECT_TRUE(MayRemove(zero, 1, 100, 100));
  // Above maxReplicas (a lowered bound) a replica goes even if the need is then uncovered.
  ReplicaTarget lowered{0, 1, 1000};
  EXPECT_TRUE(MayRemove(lowered, 2, 200, 100));
}

TEST(PlacementTest, AnIdleGpuBeforeASharedOneAndSharingWhenNoneIsIdle) {
  // "cheap" has one GPU at $1/h, "dear" one at $4/h. The first replica takes the cheap GPU; the
  // second takes the idle dear GPU rather than a turn on the cheap one; with no idle GPU left, a
  // third takes a turn where it costs least per request: half the cheap GPU for $1/h.
  Cluster c = MakeCluster({{"cheap", 8, 8 * kGiB, {{"T4", 16 * kGiB, 75}}, 1.0},
                           {"dear", 8, 8 * kGiB, {{"T4", 16 * kGiB, 75}}, 4.0}});
  const Requirements r = Gpu(kGiB);
  Decision d = PlaceOne(c, r, {}, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "cheap");
  c.Assign(d.node, d.device_index, r);
  d = PlaceOne(c, r, {}, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "dear");
  c.Assign(d.node, d.device_index, r);
  d = PlaceOne(c, r, {}, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "cheap");
  c.Assign(d.node, d.device_index, r);
  // Two turns on the cheap GPU ($1/h at a third of it) against one more on the dear one ($4/h at
  // half of it): still the cheap one.
  d = PlaceOne(c, r, {}, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "cheap");
}

TEST(PlacementTest, AnIdleGpuOnANodeWithABusyFasterOneStillCountsAsIdle) {
  // "a" ($2/h, two GPUs: $1/h each) has a fast GPU that runs a replica and an idle slow one; "b"
  // has one idle slow GPU at $1.5/h. A turn on a's fast GPU scores cheaper than a's idle slow
  // GPU, but an idle GPU comes first: a's slow GPU, not b's dearer one.
  Cluster c =
      MakeCluster({{"a", 8, 8 * kGiB, {{"fast", 16 * kGiB, 90}, {"slow", 16 * kGiB, 75}}, 2.0},
                   {"b", 8, 8 * kGiB, {{"slow", 16 * kGiB, 75}}, 1.5}});
  FunctionProfiles p;
  p.Set(c.kinds().Find("fast"), {100, 0, true});
  p.Set(c.kinds().Find("slow"), {300, 0, true});
  const Requirements r = Gpu(kGiB);
  c.Assign(0, 0, r);
  const Decision d = PlaceOne(c, r, p, {});
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(NodeOf(c, d), "a");
  EXPECT_EQ(d.device_index, 1);
}

TEST(PlacementTest, MeasuredProfileThatMissesTheSloFilters) {
  Cluster c = MakeCluster({{"slow", 8, 8 * kGiB, {}}});
  Requirements r = Cpu();
  r.latency_target_us = 5'000;
  FunctionProfiles p;
  p.Set(kCpuKind, {1000, 9000, true});
  Decision d = PlaceOne(c, r, p, {});
  ASSERT_FALSE(d.placed);
  EXPECT_THAT(d.reason, HasSubstr("runs a 1-item batch in 10 ms (measured), over the 5 ms"));
}

TEST(PlacementTest, LostNodesAreNotReady) {
  Cluster c = MakeCluster({{"a", 8, 8 * kGiB, {}}});
  c.mutable_node(0).ready = false;
  Decision d = PlaceOne(c, Cpu(), {}, {});
  ASSERT_FALSE(d.placed);
  EXPECT_EQ(d.reason, "0/1 nodes fit: 1 is not ready (lease lost)");
}

TEST(PlacementTest, PicksTheGpuWithRoomOnAMultiGpuNode) {
  Cluster c = MakeCluster({{"n", 8, 64 * kGiB, {{"L4", 24 * kGiB, 89}, {"L4", 24 * kGiB, 89}}}});
  Requirements r = Gpu(20 * kGiB);
  Decision d1 = PlaceOne(c, r, {}, {});
  ASSERT_TRUE(d1.placed);
  c.Assign(d1.node, d1.device_index, r);
  Decision d2 = PlaceOne(c, r, {}, {});
  ASSERT_TRUE(d2.placed);
  EXPECT_NE(d1.device_index, d2.device_index);
  c.Assign(d2.node, d2.device_index, r);
  EXPECT_FALSE(PlaceOne(c, r, {}, {}).placed);
}

TEST(ProfileTest, FitRecoversLine) {
  auto m = FitLatency({{1, 1100}, {2, 1200}, {4, 1400}, {8, 1800}});
  ASSERT_TRUE(m.has_value());
  EXPECT_NEAR(m->a_us, 100, 1e-6);
  EXPECT_NEAR(m->b_us, 1000, 1e-6);
  EXPECT_TRUE(m->measured);
  EXPECT_FALSE(FitLatency({}).has_value());
  // Small batches slowed by batching delay: the largest batch decides.
  auto waited = FitLatency({{1, 280}, {2, 284}, {8, 330}, {16, 74}, {64, 173}});
  ASSERT_TRUE(waited.has_value());
  EXPECT_NEAR(waited->a_us, 173.0 / 64, 1e-9);
  EXPECT_EQ(waited->b_us, 0);
}

TEST(ProfileTest, CapacityWithinSloAndReplicaCount) {
  Requirements r = Cpu();
  r.max_batch_size = 64;
  r.latency_target_us = 10'000;  // budget 5 ms: n = (5000 - 1000) / 100 = 40
  const Capacity cap = CapacityOf({100, 1000, true}, r);
  EXPECT_EQ(cap.batch, 40);
  EXPECT_NEAR(cap.throughput_rps, 40 / 5000e-6, 1e-6);  // 8000 rps
  FunctionSpec spec;
  spec.scaling.min_replicas = 1;
  spec.scaling.max_replicas = 5;
  spec.slo.min_rps = 20'000;
  EXPECT_EQ(DesiredReplicaCount(spec, cap.throughput_rps), 3);  // ceil(20000 / 8000)
  spec.slo.min_rps = 1e9;
  EXPECT_EQ(DesiredReplicaCount(spec, cap.throughput_rps), 5);  // capped at maxReplicas
  spec.slo.min_rps = 0;
  EXPECT_EQ(DesiredReplicaCount(spec, cap.throughput_rps), 1);
}

TEST(ProfileTest, ComputeCapabilityParsing) {
  EXPECT_EQ(ParseComputeCapability("8.0"), 80);
  EXPECT_EQ(ParseComputeCapability("9.0"), 90);
  EXPECT_EQ(ParseComputeCapability("7.5"), 75);
  EXPECT_EQ(ParseComputeCapability(""), 0);
  EXPECT_EQ(ParseComputeCapability("x"), 0);
}

}  // namespace
}  // namespace ferry::control
