#include "perf/sim/sim.h"

#include <random>

#include "control-plane/router.h"
#include "gtest/gtest.h"

namespace ferry::sim {
namespace {

SimConfig SmallStep() {
  GenerateOptions g;
  g.nodes = 12;
  g.functions = 6;
  g.utilization = 0.6;
  g.trace.kind = TraceKind::kStep;
  g.trace.step_at_s = 30;
  g.trace.step_factor = 4;
  g.seed = 3;
  SimConfig c = Generate(g);
  c.duration_s = 90;
  return c;
}

TEST(SimTest, StepTraceFerryBeatsFixedReplicasAndKeepsInvariants) {
  const SimConfig c = SmallStep();
  auto ferry = sim::Run(c, *PolicyByName("ferry"));
  auto fixed = sim::Run(c, *PolicyByName("fixed-replicas"));
  ASSERT_TRUE(ferry.ok() && fixed.ok());
  for (const RunResult* r : {&*ferry, &*fixed}) {
    EXPECT_GT(r->arrivals, 1000);
    EXPECT_EQ(r->lost, 0) << r->policy;
    EXPECT_EQ(r->placement_violations, 0) << r->policy;
    EXPECT_EQ(r->answered + r->rejected, r->arrivals) << r->policy;
  }
  EXPECT_GE(ferry->slo_attainment(), fixed->slo_attainment());
  // Past the agent's queue limit the fixed replicas answer 429, counted with its reason.
  EXPECT_GT(fixed->rejected_by_reason.at("replica queue full (429)"), 0);
  // Fixed replicas sized for the base rate cannot hold 4x; the autoscaler must have scaled up.
  EXPECT_LT(fixed->slo_attainment(), 0.9);
  EXPECT_GT(ferry->slo_attainment(), 0.9);
  int ups = 0;
  for (const Decision& d : ferry->decisions) ups += d.to > d.from;
  EXPECT_GT(ups, 0);
  // Functions that the fixed count could not serve after the step: the decision to scale up
  // comes within a few heartbeats (panic mode), not after a stable window.
  int checked = 0;
  for (size_t i = 0; i < ferry->functions.size(); ++i) {
    const FunctionResult& fx = fixed->functions[i];
    if (static_cast<double>(fx.within_slo) >= 0.95 * static_cast<double>(fx.arrivals)) continue;
    ++checked;
    EXPECT_GE(ferry->functions[i].step_decision_s, 0) << fx.name;
    EXPECT_LT(ferry->functions[i].step_decision_s, 10) << fx.name;
    EXPECT_GE(ferry->functions[i].step_ready_s, ferry->functions[i].step_placed_s) << fx.name;
  }
  EXPECT_GT(checked, 0);
}

TEST(SimTest, EveryBaselineKeepsInvariants) {
  const SimConfig c = SmallStep();
  for (const std::string& name : PolicyNames()) {
    auto r = sim::Run(c, *PolicyByName(name));
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->invariants_ok())
        << name << ": lost " << r->lost << ", violations " << r->placement_violations;
  }
}

TEST(SimTest, NodeFailuresRetryRequestsAndReplaceReplicas) {
  SimConfig c = SmallStep();
  c.fail_fraction = 0.25;
  c.fail_at_s = 50;
  auto r = sim::Run(c, *PolicyByName("ferry"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->failed_nodes, 3);
  EXPECT_TRUE(r->invariants_ok());
  EXPECT_GT(r->slo_attainment(), 0.8);
}

TEST(SimTest, FullClusterRejectsWithReasonsAndNeverOvercommits) {
  SimConfig c;
  c.node_types.push_back({.name = "tiny", .count = 1, .cpu_cores = 2, .price_per_hour = 1});
  FunctionConfig f;
  f.name = "hot";
  f.req.cpu_cores = 1;
  f.req.max_batch_size = 1;
  f.req.latency_target_us = 20'000;
  f.profiles.push_back({"cpu", {0, 10'000, true}});
  f.scaling.min_replicas = 0;
  f.scaling.max_replicas = 10;
  f.initial_replicas = 0;
  f.trace.kind = TraceKind::kPoisson;
  f.trace.rate_rps = 500;  // needs far more than two replicas
  c.functions.push_back(f);
  c.duration_s = 20;
  c.hold_queue = 50;
  auto r = sim::Run(c, *PolicyByName("ferry"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->placement_violations, 0);
  EXPECT_EQ(r->lost, 0);
  EXPECT_GT(r->functions[0].unplaced, 0);
  EXPECT_EQ(r->functions[0].max_replicas_seen, 2);
  EXPECT_GT(r->rejected_by_reason["hold queue full (no ready replica)"], 0);
  EXPECT_EQ(r->answered + r->rejected, r->arrivals);
}

TEST(SimTest, ConfigRoundTripsAndCsvArrivalsAreReplayed) {
  SimConfig c = SmallStep();
  auto back = ParseConfig(ToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->functions.size(), c.functions.size());
  EXPECT_EQ(back->node_types.size(), c.node_types.size());
  EXPECT_EQ(back->functions[2].profiles.size(), c.functions[2].profiles.size());
  ASSERT_TRUE(LoadArrivalsCsv("time_s,function\n0.5,fn-1\n1.0,fn-1\n2.5,fn-1\n", *back).ok());
  for (FunctionConfig& f : back->functions) {
    if (f.name != "fn-1") f.trace.rate_rps = 0;
  }
  auto r = sim::Run(*back, *PolicyByName("ferry"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->functions[1].arrivals, 3);
  EXPECT_EQ(r->functions[1].answered, 3);
  EXPECT_FALSE(LoadArrivalsCsv("1.0,nope\n", *back).ok());
}

TEST(RouterTest, PowerOfTwoChoicesPrefersTheLessLoaded) {
  std::mt19937_64 rng(1);
  EXPECT_EQ(control::PickReplica({}, rng), -1);
  const std::vector<int64_t> one = {7};
  EXPECT_EQ(control::PickReplica(one, rng), 0);
  const std::vector<int64_t> two = {100, 0};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(control::PickReplica(two, rng), 1);
  // With many replicas the most loaded one is never chosen (it loses every comparison).
  const std::vector<int64_t> many = {1, 2, 3, 99};
  for (int i = 0; i < 200; ++i) EXPECT_NE(control::PickReplica(many, rng), 3);
}

}  // namespace
}  // namespace ferry::sim
