#include "control-plane/controller.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "control-plane/sqlite_state_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::control {
namespace {

using ::testing::HasSubstr;

class RecordingChannel : public AgentChannel {
 public:
  void Send(const v1::ControlMessage& m) override {
    absl::MutexLock lock(&mu_);
    messages_.push_back(m);
  }
  // The replica ids of the last DesiredReplicas received.
  std::vector<std::string> Desired() {
    absl::MutexLock lock(&mu_);
    for (auto it = messages_.rbegin(); it != messages_.rend(); ++it) {
      if (it->has_desired_replicas()) {
        std::vector<std::string> ids;
        for (const auto& r : it->desired_replicas().replicas()) ids.push_back(r.replica_id());
        return ids;
      }
    }
    return {};
  }
  v1::DesiredReplicas LastDesired() {
    absl::MutexLock lock(&mu_);
    for (auto it = messages_.rbegin(); it != messages_.rend(); ++it) {
      if (it->has_desired_replicas()) return it->desired_replicas();
    }
    return {};
  }
  bool GotRegistered() {
    absl::MutexLock lock(&mu_);
    return !messages_.empty() && messages_.front().has_registered();
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::ControlMessage> messages_;
};

constexpr char kEcho[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 1, memoryMiB: 128}
  scaling: {minReplicas: 2, maxReplicas: 4}
  slo: {file: echo.slo.yaml}
)";
constexpr char kEchoSlo[] = R"(
apiVersion: ferry.dev/v1
kind: SLO
metadata: {name: echo}
spec:
  latency: {percentile: 99, targetMillis: 20}
)";
constexpr char kGpuFn[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: big}
spec:
  runtime: echo
  hardware: {accelerator: gpu, gpuMemoryMiB: 1024, cpuCores: 1, memoryMiB: 128}
)";

v1::Register Node(const std::string& name, double cores, bool gpu = false) {
  v1::Register r;
  r.set_node_name(name);
  r.mutable_inventory()->set_cpu_cores(cores);
  r.mutable_inventory()->set_memory_bytes(int64_t{8} << 30);
  if (gpu) {
    auto* g = r.mutable_inventory()->add_gpus();
    g->set_index(0);
    g->set_name("H200");
    g->set_memory_bytes(int64_t{141} << 30);
    g->set_compute_capability("9.0");
  }
  r.set_price_per_hour(1.0);
  r.set_http_address(name + ":8000");
  r.set_grpc_address(name + ":8001");
  return r;
}

v1::ApplyRequest Files(std::vector<std::pair<std::string, std::string>> files) {
  v1::ApplyRequest req;
  for (auto& [path, content] : files) {
    auto* f = req.add_files();
    f->set_path(path);
    f->set_content(content);
  }
  return req;
}

v1::AgentMessage ReadyAll(const std::vector<std::string>& ids, const std::string& function) {
  v1::AgentMessage m;
  for (const auto& id : ids) {
    auto* rs = m.mutable_heartbeat()->add_replicas();
    rs->set_replica_id(id);
    rs->set_function(function);
    rs->set_state(v1::REPLICA_STATE_READY);
  }
  return m;
}

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/ferry-controller-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    Open();
  }
  void Open() {
    controller_.reset();
    store_.reset();
    auto store = SqliteStateStore::Create({.path = dir_ + "/ferry.db"});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    ControllerOptions o;
    o.store = store_.get();
    o.clock = &clock_;
    auto c = Controller::Create(o);
    ASSERT_TRUE(c.ok()) << c.status();
    controller_ = *std::move(c);
  }
  void ApplyEcho() {
    auto resp =
        controller_->Apply(Files({{"/m/echo.yaml", kEcho}, {"/m/echo.slo.yaml", kEchoSlo}}));
    ASSERT_TRUE(resp.ok()) << resp.status();
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<Controller> controller_;
};

TEST_F(ControllerTest, ApplyPlacesSpreadsAndRoutesWhenReady) {
  RecordingChannel a, b;
  auto sa = controller_->RegisterAgent(Node("a", 4), &a);
  auto sb = controller_->RegisterAgent(Node("b", 4), &b);
  ASSERT_TRUE(sa.ok() && sb.ok());
  EXPECT_TRUE(a.GotRegistered());
  ApplyEcho();
  ASSERT_EQ(a.Desired().size(), 1u);  // two replicas, spread over two nodes
  ASSERT_EQ(b.Desired().size(), 1u);
  const v1::DesiredReplicas d = a.LastDesired();
  EXPECT_THAT(d.replicas(0).manifest(), HasSubstr("\"targetMillis\":20"));  // SLO inlined
  EXPECT_EQ(d.replicas(0).base_dir(), "/m");

  auto st = controller_->GetFunction("echo");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->desired_replicas(), 2);
  EXPECT_EQ(st->ready_replicas(), 0);
  auto routes = controller_->GetRoutes("echo");
  ASSERT_EQ(routes.routes_size(), 2);
  EXPECT_FALSE(routes.routes(0).ready());

  const int64_t before = routes.revision();
  ASSERT_TRUE(controller_->HandleAgentMessage(*sa, ReadyAll(a.Desired(), "echo")).ok());
  EXPECT_EQ(controller_->GetFunction("echo")->ready_replicas(), 1);
  v1::RouteUpdate update = controller_->RouteChangesSince(before, "");
  ASSERT_EQ(update.functions_size(), 1);
  int ready = 0;
  for (const auto& r : update.functions(0).routes()) ready += r.ready();
  EXPECT_EQ(ready, 1);
  EXPECT_GT(update.revision(), before);
}

TEST_F(ControllerTest, BadManifestChangesNothing) {
  ApplyEcho();
  const std::string bad =
      std::string(kEcho).replace(std::string(kEcho).find("minReplicas: 2"), 14, "minReplicas: -1");
  auto resp = controller_->Apply(
      Files({{"/m/echo.yaml", bad}, {"/m/echo.slo.yaml", kEchoSlo}, {"/m/big.yaml", kGpuFn}}));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(resp.status().message(), HasSubstr("/m/echo.yaml"));
  EXPECT_THAT(resp.status().message(), HasSubstr("spec.scaling.minReplicas"));
  EXPECT_EQ(controller_->ListFunctions().functions_size(), 1);  // big.yaml not applied either
  EXPECT_EQ(controller_->GetFunction("echo")->min_replicas(), 2);
  // A missing SLO file is named too.
  resp = controller_->Apply(Files({{"/m/echo.yaml", kEcho}}));
  ASSERT_FALSE(resp.ok());
  EXPECT_THAT(resp.status().message(), HasSubstr("spec.slo.file"));
  EXPECT_THAT(resp.status().message(), HasSubstr("/m/echo.slo.yaml does not exist"));
}

TEST_F(ControllerTest, ApplyReportsCreatedUnchangedConfigured) {
  auto r1 = controller_->Apply(Files({{"/m/echo.yaml", kEcho}, {"/m/echo.slo.yaml", kEchoSlo}}));
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->changes(0).action(), "created");
  auto r2 = controller_->Apply(Files({{"/m/echo.yaml", kEcho}, {"/m/echo.slo.yaml", kEchoSlo}}));
  EXPECT_EQ(r2->changes(0).action(), "unchanged");
  std::string three = kEcho;
  three.replace(three.find("minReplicas: 2"), 14, "minReplicas: 3");
  auto r3 = controller_->Apply(Files({{"/m/echo.yaml", three}, {"/m/echo.slo.yaml", kEchoSlo}}));
  EXPECT_EQ(r3->changes(0).action(), "configured");
  EXPECT_EQ(controller_->GetFunction("echo")->generation(), 2);
}

TEST_F(ControllerTest, LostNodeReplicasMoveAndRoutesAreWithdrawn) {
  RecordingChannel a, b;
  auto sa = controller_->RegisterAgent(Node("a", 4), &a);
  auto sb = controller_->RegisterAgent(Node("b", 4), &b);
  ApplyEcho();
  ASSERT_EQ(a.Desired().size(), 1u);
  ASSERT_EQ(b.Desired().size(), 1u);
  // Both heartbeat for 1.5 s; then a goes silent.
  for (int i = 0; i < 3; ++i) {
    clock_.AdvanceMicros(500'000);
    ASSERT_TRUE(controller_->HandleAgentMessage(*sa, ReadyAll(a.Desired(), "echo")).ok());
    ASSERT_TRUE(controller_->HandleAgentMessage(*sb, ReadyAll(b.Desired(), "echo")).ok());
    controller_->Tick();
  }
  for (int i = 0; i < 4; ++i) {
    clock_.AdvanceMicros(500'000);
    ASSERT_TRUE(controller_->HandleAgentMessage(*sb, ReadyAll(b.Desired(), "echo")).ok());
    controller_->Tick();
    ASSERT_EQ(controller_->ListNodes().nodes_size(), 2);
  }
  // 2 s of silence is not yet more than the lease.
  auto nodes = controller_->ListNodes();
  EXPECT_EQ(nodes.nodes(0).lease_state(), v1::LEASE_STATE_ACTIVE);
  clock_.AdvanceMicros(1000);
  controller_->Tick();
  nodes = controller_->ListNodes();
  EXPECT_EQ(nodes.nodes(0).name(), "a");
  EXPECT_EQ(nodes.nodes(0).lease_state(), v1::LEASE_STATE_LOST);
  EXPECT_EQ(b.Desired().size(), 2u);  // re-placed on b
  const v1::GetRoutesResponse routes = controller_->GetRoutes("echo");
  EXPECT_EQ(routes.routes_size(), 2);
  for (const auto& r : routes.routes()) EXPECT_EQ(r.node_id(), "b");
  // The lost node's session is over.
  EXPECT_EQ(controller_->HandleAgentMessage(*sa, ReadyAll({}, "echo")).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ControllerTest, DisconnectLosesNodeAtOnce) {
  RecordingChannel a, b;
  auto sa = controller_->RegisterAgent(Node("a", 4), &a);
  auto sb = controller_->RegisterAgent(Node("b", 4), &b);
  ApplyEcho();
  controller_->AgentDisconnected(*sa);
  EXPECT_EQ(b.Desired().size(), 2u);
  (void)sb;
}

TEST_F(ControllerTest, UnplaceableGpuFunctionIsPendingWithReason) {
  RecordingChannel a;
  ASSERT_TRUE(controller_->RegisterAgent(Node("a", 4), &a).ok());
  ASSERT_TRUE(controller_->Apply(Files({{"/m/big.yaml", kGpuFn}})).ok());
  auto st = controller_->GetFunction("big");
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->pending_reasons_size(), 1);
  EXPECT_EQ(st->pending_reasons(0), "0/1 nodes fit: 1 has no GPU");
  ASSERT_EQ(st->replicas_size(), 1);
  EXPECT_EQ(st->replicas(0).state(), v1::REPLICA_STATE_PENDING);
  // A GPU node arrives: the replica is placed on its GPU.
  RecordingChannel g;
  ASSERT_TRUE(controller_->RegisterAgent(Node("g", 4, /*gpu=*/true), &g).ok());
  ASSERT_EQ(g.LastDesired().replicas_size(), 1);
  EXPECT_EQ(g.LastDesired().replicas(0).device_index(), 0);
  EXPECT_EQ(g.LastDesired().replicas(0).hardware_kind(), "H200");
  EXPECT_EQ(controller_->GetFunction("big")->pending_reasons_size(), 0);
}

TEST_F(ControllerTest, ProfilesDriveReplicaCount) {
  RecordingChannel a;
  auto sa = controller_->RegisterAgent(Node("a", 16), &a);
  std::string fn = kEcho;
  fn.replace(fn.find("slo: {file: echo.slo.yaml}"), 26,
             "slo: {latency: {targetMillis: 10}, throughput: {minRps: 20000}}\n  "
             "batching: {maxBatchSize: 64}");
  fn.replace(fn.find("maxReplicas: 4"), 14, "maxReplicas: 8");
  ASSERT_TRUE(controller_->Apply(Files({{"/m/echo.yaml", fn}})).ok());
  // Default CPU model: budget 5 ms -> batch 3 in 5 ms = 600 rps -> capped at 8 replicas; only
  // 16 cores / 1 core each, all fit.
  EXPECT_EQ(controller_->GetFunction("echo")->desired_replicas(), 8);
  // Measured: 100 us/item + 1 ms -> batch 40 in 5 ms = 8000 rps -> ceil(20000/8000) = 3.
  v1::AgentMessage m;
  m.mutable_profile()->set_function("echo");
  m.mutable_profile()->set_hardware_kind("cpu");
  for (int n : {1, 2, 4, 8, 16, 32, 64}) {
    auto* p = m.mutable_profile()->add_points();
    p->set_batch_size(n);
    p->set_latency_us(1000 + 100 * n);
  }
  ASSERT_TRUE(controller_->HandleAgentMessage(*sa, m).ok());
  auto st = controller_->GetFunction("echo");
  EXPECT_EQ(st->desired_replicas(), 3);
  EXPECT_EQ(a.Desired().size(), 3u);
  ASSERT_EQ(st->profiles_size(), 1);
  EXPECT_TRUE(st->profiles(0).measured());
  EXPECT_NEAR(st->profiles(0).throughput_rps(), 8000, 1);
}

TEST_F(ControllerTest, RestartReloadsFunctionsAndAdoptsReplicas) {
  RecordingChannel a;
  auto sa = controller_->RegisterAgent(Node("a", 4), &a);
  ApplyEcho();
  const std::vector<std::string> before = a.Desired();
  ASSERT_EQ(before.size(), 2u);
  // Restart (the store is reopened from disk).
  Open();
  ASSERT_EQ(controller_->ListFunctions().functions_size(), 1);
  EXPECT_THAT(controller_->GetFunction("echo")->pending_reasons(0), HasSubstr("re-register"));
  // The agent re-registers with what it still serves: the same replicas stay.
  v1::Register reg = Node("a", 4);
  for (const auto& id : before) {
    auto* rs = reg.add_replicas();
    rs->set_replica_id(id);
    rs->set_function("echo");
    rs->set_state(v1::REPLICA_STATE_READY);
    rs->set_device_index(-1);
  }
  RecordingChannel a2;
  ASSERT_TRUE(controller_->RegisterAgent(reg, &a2).ok());
  EXPECT_EQ(a2.Desired(), before);
  EXPECT_EQ(controller_->GetFunction("echo")->ready_replicas(), 2);
  EXPECT_EQ(controller_->GetRoutes("echo").routes_size(), 2);
}

TEST_F(ControllerTest, DeleteWithdrawsRoutesAndPersists) {
  RecordingChannel a;
  ASSERT_TRUE(controller_->RegisterAgent(Node("a", 4), &a).ok());
  ApplyEcho();
  const int64_t rev = controller_->GetRoutes("").revision();
  ASSERT_TRUE(controller_->DeleteFunction("echo").ok());
  EXPECT_TRUE(a.Desired().empty());
  v1::RouteUpdate u = controller_->RouteChangesSince(rev, "");
  ASSERT_EQ(u.functions_size(), 1);
  EXPECT_EQ(u.functions(0).routes_size(), 0);  // withdrawn
  EXPECT_EQ(controller_->DeleteFunction("echo").status().code(), absl::StatusCode::kNotFound);
  Open();
  EXPECT_EQ(controller_->ListFunctions().functions_size(), 0);
}

}  // namespace
}  // namespace ferry::control
