#include "control-plane/usage.h"

#include <filesystem>
#include <memory>
#include <string>

#include "control-plane/controller.h"
#include "control-plane/sqlite_state_store.h"
#include "gtest/gtest.h"

namespace ferry::control {
namespace {

constexpr int64_t kMinuteUs = 60'000'000;
// 2026-11-29 12:00:00 UTC, a minute boundary.
constexpr int64_t kStartUs = int64_t{1'795'953'600} * 1'000'000;

google::protobuf::RepeatedPtrField<v1::FunctionUsage> Counters(const std::string& function,
                                                               int64_t requests, int64_t cpu_us,
                                                               int64_t gpu_us = 0,
                                                               int64_t load_us = 0) {
  google::protobuf::RepeatedPtrField<v1::FunctionUsage> out;
  v1::FunctionUsage* u = out.Add();
  u->set_function(function);
  u->set_requests(requests);
  u->set_cost_units(requests);
  u->set_cpu_us(cpu_us);
  u->set_gpu_us(gpu_us);
  u->set_load_us(load_us);
  // Every request took 100 us (bucket le 100).
  if (requests > 0) {
    v1::LatencyBucket* b = u->add_latency();
    b->set_le_us(100);
    b->set_count(requests);
  }
  return out;
}

// 3.6 $/h on 2 cores: a CPU-second costs 0.0005 $.
NodePricing CpuNode() { return {.price_per_hour = 3.6, .cpu_cores = 2, .gpus = 0}; }
// 7.2 $/h with 2 GPUs: a GPU-second costs 0.001 $.
NodePricing GpuNode() { return {.price_per_hour = 7.2, .cpu_cores = 8, .gpus = 2}; }

class UsageLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/ferry-usage-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    Open();
  }
  // (Re)opens store and ledger, like a control-plane start.
  void Open() {
    ledger_.reset();
    store_.reset();
    auto store = SqliteStateStore::Create({.path = dir_ + "/ferry.db"});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    UsageLedgerOptions o;
    o.store = store_.get();
    o.wall_clock = &wall_;
    auto ledger = UsageLedger::Create(o);
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = *std::move(ledger);
  }
  v1::UsageSummary Function(const std::string& name, int64_t since_seconds = 0) {
    auto q = ledger_->Query(since_seconds, "");
    EXPECT_TRUE(q.ok()) << q.status();
    for (const auto& f : q->functions()) {
      if (f.function() == name) return f;
    }
    return {};
  }

  std::string dir_;
  FakeClock wall_{kStartUs};
  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<UsageLedger> ledger_;
};

TEST_F(UsageLedgerTest, TakesDifferencesAndPricesPerNode) {
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 10, 1'000'000));
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 15, 1'600'000));
  ledger_->Ingest("g", GpuNode(), 7, Counters("echo", 5, 0, 2'000'000, 9'000'000));
  v1::UsageSummary echo = Function("echo");
  EXPECT_EQ(echo.requests(), 20);
  EXPECT_EQ(echo.cpu_us(), 1'600'000);
  EXPECT_EQ(echo.gpu_us(), 2'000'000);
  EXPECT_EQ(echo.load_us(), 9'000'000);
  // 1.6 CPU-s at 0.0005 $/s + 2 GPU-s at 0.001 $/s; load time is not charged.
  EXPECT_NEAR(echo.cost(), 0.0008 + 0.002, 1e-12);
  EXPECT_NEAR(echo.cost_per_million(), 0.0028 / 20 * 1e6, 1e-6);
  // All 20 in the bucket (0, 100] us: the estimate interpolates inside it.
  EXPECT_NEAR(echo.p50_ms(), 0.05, 1e-9);
  EXPECT_NEAR(echo.p99_ms(), 0.1, 1e-9);
  auto q = ledger_->Query(0, "");
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->nodes_size(), 2);
  EXPECT_EQ(q->nodes(0).node_id(), "a");
  EXPECT_EQ(q->nodes(0).requests(), 15);
  EXPECT_EQ(q->nodes(1).node_id(), "g");
  EXPECT_EQ(q->total().requests(), 20);
}

TEST_F(UsageLedgerTest, AgentRestartIsACounterReset) {
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 10, 1000));
  // The agent restarted: a new epoch, counting from zero again.
  ledger_->Ingest("a", CpuNode(), 2, Counters("echo", 3, 300));
  EXPECT_EQ(Function("echo").requests(), 13);
  EXPECT_EQ(Function("echo").cpu_us(), 1300);
  ledger_->Ingest("a", CpuNode(), 2, Counters("echo", 4, 450));
  EXPECT_EQ(Function("echo").requests(), 14);
  // Same epoch but the counters went down (a reset we were not told about): all of it is new.
  ledger_->Ingest("a", CpuNode(), 2, Counters("echo", 2, 100));
  EXPECT_EQ(Function("echo").requests(), 16);
  EXPECT_EQ(Function("echo").cpu_us(), 1550);
  // A heartbeat that changed nothing adds nothing.
  ledger_->Ingest("a", CpuNode(), 2, Counters("echo", 2, 100));
  EXPECT_EQ(Function("echo").requests(), 16);
}

TEST_F(UsageLedgerTest, SurvivesAControlPlaneRestart) {
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 10, 1000));
  ASSERT_TRUE(ledger_->Flush(/*force=*/true).ok());
  Open();  // graceful restart: everything was flushed
  EXPECT_EQ(Function("echo").requests(), 10);
  // The agent kept counting while the control plane was away; its next heartbeat is taken
  // against the stored baseline, not counted again from zero.
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 12, 1200));
  EXPECT_EQ(Function("echo").requests(), 12);
  EXPECT_EQ(Function("echo").cpu_us(), 1200);
}

TEST_F(UsageLedgerTest, CrashLosesNothingTheAgentStillCounts) {
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 10, 1000));
  ASSERT_TRUE(ledger_->Flush(true).ok());
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 25, 2500));
  EXPECT_EQ(Function("echo").requests(), 25);  // pending rows are visible before a flush
  Open();  // kill -9: the last 15 requests were never flushed, nor was their baseline
  EXPECT_EQ(Function("echo").requests(), 10);
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 30, 3000));
  EXPECT_EQ(Function("echo").requests(), 30);  // exactly once
  EXPECT_EQ(Function("echo").cpu_us(), 3000);
  ASSERT_TRUE(ledger_->Flush(true).ok());
  Open();
  EXPECT_EQ(Function("echo").requests(), 30);
  // A restarted agent after the control-plane restart: new epoch, from zero.
  ledger_->Ingest("a", CpuNode(), 99, Counters("echo", 1, 10));
  EXPECT_EQ(Function("echo").requests(), 31);
}

TEST_F(UsageLedgerTest, SinceSelectsWholeMinutes) {
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 10, 1000));
  ASSERT_TRUE(ledger_->Flush(true).ok());
  wall_.AdvanceMicros(10 * kMinuteUs);
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 14, 1400));
  ledger_->Ingest("a", CpuNode(), 1, Counters("other", 1, 5));
  EXPECT_EQ(Function("echo").requests(), 14);
  EXPECT_EQ(Function("echo", 120).requests(), 4);  // the last 2 minutes
  EXPECT_EQ(Function("echo", 11 * 60).requests(), 14);
  auto only = ledger_->Query(0, "other");
  ASSERT_TRUE(only.ok());
  ASSERT_EQ(only->functions_size(), 1);
  EXPECT_EQ(only->functions(0).requests(), 1);
  EXPECT_EQ(only->since_unix_ms(), 0);
  auto recent = ledger_->Query(120, "");
  ASSERT_TRUE(recent.ok());
  EXPECT_EQ(recent->since_unix_ms(), (kStartUs + 8 * kMinuteUs) / 1000);
}

TEST_F(UsageLedgerTest, FlushWaitsForTheInterval) {
  ledger_->Ingest("a", CpuNode(), 1, Counters("echo", 10, 1000));
  ASSERT_TRUE(ledger_->Flush(/*force=*/false).ok());  // under a second since the last: no write
  auto stored = store_->ListUsage(0, "");
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(stored->empty());
  wall_.AdvanceMicros(1'000'000);
  ASSERT_TRUE(ledger_->Flush(false).ok());
  stored = store_->ListUsage(0, "");
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ((*stored)[0].requests, 10);
  EXPECT_EQ((*stored)[0].latency.at(100), 10);
  EXPECT_EQ(Function("echo").requests(), 10);  // not counted twice (store + memory)
}

TEST(HistogramQuantileTest, Interpolates) {
  EXPECT_EQ(HistogramQuantileMs({}, 0.5), 0);
  // 100 requests: 50 in (0, 100] us, 49 in (100, 200], 1 above every bound.
  const std::map<int64_t, int64_t> h = {{100, 50}, {200, 49}, {0, 1}};
  EXPECT_NEAR(HistogramQuantileMs(h, 0.50), 0.100, 1e-9);
  EXPECT_NEAR(HistogramQuantileMs(h, 0.25), 0.050, 1e-9);
  EXPECT_NEAR(HistogramQuantileMs(h, 0.99), 0.200, 1e-9);
  EXPECT_NEAR(HistogramQuantileMs(h, 1.0), 0.200, 1e-9);  // unbounded: the largest bound
}

constexpr char kPriced[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 1, memoryMiB: 128}
  slo:
    latency: {percentile: 99, targetMillis: 20}
    maxCostPerMillion: 0.5
)";

TEST(ControllerUsageTest, HeartbeatsToGetUsageWithBudget) {
  const std::string dir = ::testing::TempDir() + "/ferry-controller-usage";
  std::filesystem::remove_all(dir);
  FakeClock clock;
  FakeClock wall(kStartUs);
  struct NullChannel : AgentChannel {
    void Send(const v1::ControlMessage&) override {}
  } channel;
  auto run = [&](int64_t requests, int64_t cpu_us) -> v1::GetUsageResponse {
    auto store = SqliteStateStore::Create({.path = dir + "/ferry.db"});
    EXPECT_TRUE(store.ok());
    ControllerOptions o;
    o.store = store->get();
    o.clock = &clock;
    o.wall_clock = &wall;
    auto c = Controller::Create(o);
    EXPECT_TRUE(c.ok()) << c.status();
    v1::ApplyRequest apply;
    auto* f = apply.add_files();
    f->set_path("/m/echo.yaml");
    f->set_content(kPriced);
    EXPECT_TRUE((*c)->Apply(apply).ok());
    v1::Register reg;
    reg.set_node_name("n1");
    reg.mutable_inventory()->set_cpu_cores(2);
    reg.mutable_inventory()->set_memory_bytes(int64_t{8} << 30);
    reg.set_price_per_hour(3.6);
    reg.set_http_address("n1:8000");
    auto session = (*c)->RegisterAgent(reg, &channel);
    EXPECT_TRUE(session.ok());
    v1::AgentMessage hb;
    hb.mutable_heartbeat()->set_usage_epoch(5);
    *hb.mutable_heartbeat()->mutable_usage() = Counters("echo", requests, cpu_us);
    EXPECT_TRUE((*c)->HandleAgentMessage(*session, hb).ok());
    wall.AdvanceMicros(2'000'000);
    (*c)->Tick();  // flushes (the interval passed)
    v1::GetUsageRequest req;
    auto usage = (*c)->GetUsage(req);
    EXPECT_TRUE(usage.ok()) << usage.status();
    req.set_since_seconds(-1);
    EXPECT_FALSE((*c)->GetUsage(req).ok());
    return *usage;
  };
  // 1000 requests, 1 CPU-second at 0.0005 $/s: 0.50 $ per million, at the budget.
  v1::GetUsageResponse u = run(1000, 1'000'000);
  ASSERT_EQ(u.functions_size(), 1);
  EXPECT_EQ(u.functions(0).requests(), 1000);
  EXPECT_TRUE(u.functions(0).has_max_cost_per_million());
  EXPECT_DOUBLE_EQ(u.functions(0).max_cost_per_million(), 0.5);
  EXPECT_NEAR(u.functions(0).cost_per_million(), 0.5, 1e-9);
  EXPECT_FALSE(u.functions(0).over_budget());
  ASSERT_EQ(u.nodes_size(), 1);
  EXPECT_EQ(u.nodes(0).node_id(), "n1");
  // The control plane restarts (a fresh Controller on the same file); the same agent process
  // reports 1000 more requests with 3 more CPU-seconds: now over budget, nothing double-counted.
  u = run(2000, 4'000'000);
  EXPECT_EQ(u.functions(0).requests(), 2000);
  EXPECT_EQ(u.functions(0).cpu_us(), 4'000'000);
  EXPECT_NEAR(u.functions(0).cost_per_million(), 1.0, 1e-9);
  EXPECT_TRUE(u.functions(0).over_budget());
}

}  // namespace
}  // namespace ferry::control
