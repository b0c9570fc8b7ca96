// The agent's control-plane client against a real ferry-control service over gRPC on loopback
// (in-process): register, receive a placement, load, report ready, profile, unload on delete,
// keep serving while the control plane is down and re-register (adopted) when it is back.
#include "node-agent/control_client.h"

#include <filesystem>
#include <memory>
#include <string>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "control-plane/controller.h"
#include "control-plane/service.h"
#include "control-plane/sqlite_state_store.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

namespace cp = ferry::control;

constexpr char kEcho[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 1, memoryMiB: 128}
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 0, policy: off}
  scaling: {minReplicas: 1, maxReplicas: 1}
  config: {datatype: BYTES, shape: [], inputName: INPUT0, outputName: OUTPUT0}
)";

// ferry-control in-process: store, controller, gRPC server, ticker.
class ControlPlane {
 public:
  ControlPlane(const std::string& dir, int port) {
    auto store = cp::SqliteStateStore::Create({.path = dir + "/ferry.db"});
    EXPECT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    cp::ControllerOptions o;
    o.store = store_.get();
    o.heartbeat_ms = 50;
    o.lease_ms = 300;
    auto c = cp::Controller::Create(o);
    EXPECT_TRUE(c.ok()) << c.status();
    controller_ = *std::move(c);
    control_ = std::make_unique<cp::ControlPlaneService>(controller_.get(), "");
    agents_ = std::make_unique<cp::AgentServiceImpl>(controller_.get());
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                       &port_);
    b.RegisterService(control_.get());
    b.RegisterService(agents_.get());
    server_ = b.BuildAndStart();
    ticker_ = std::thread([this] {
      while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(20))) controller_->Tick();
    });
  }
  ~ControlPlane() {
    stop_.Notify();
    ticker_.join();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    server_->Wait();
  }
  int port() const { return port_; }
  cp::Controller& controller() { return *controller_; }

 private:
  std::unique_ptr<cp::SqliteStateStore> store_;
  std::unique_ptr<cp::Controller> controller_;
  std::unique_ptr<cp::ControlPlaneService> control_;
  std::unique_ptr<cp::AgentServiceImpl> agents_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Notification stop_;
  std::thread ticker_;
};

// Waits (bounded) for `cond`: the client works on its own threads over real sockets.
template <typename Cond>
bool Eventually(Cond cond, absl::Duration limit = absl::Seconds(10)) {
  const absl::Time end = absl::Now() + limit;
  while (absl::Now() < end) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return cond();
}

absl::StatusOr<InferenceResponse> Echo(AgentCore& core) {
  auto req = std::make_unique<InferenceRequest>();
  req->model_name = "echo";
  Tensor t;
  t.name = "INPUT0";
  t.dtype = DataType::kBytes;
  t.shape = {1};
  t.bytes.push_back("hi");
  req->inputs.push_back(std::move(t));
  absl::Notification done;
  absl::StatusOr<InferenceResponse> out = absl::UnknownError("not answered");
  core.Infer(std::move(req), [&](absl::StatusOr<InferenceResponse> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

TEST(ControlClientTest, PlacedLoadedProfiledUnloadedAndSurvivesControlPlaneRestart) {
  const std::string dir = ::testing::TempDir() + "/ferry-control-client-test";
  std::filesystem::remove_all(dir);
  auto plane = std::make_unique<ControlPlane>(dir, 0);
  const int port = plane->port();
  ASSERT_GT(port, 0);

  AgentCoreOptions core_options;
  auto core = AgentCore::Create(core_options);
  ASSERT_TRUE(core.ok());
  ControlClientOptions o;
  o.control_address = "127.0.0.1:" + std::to_string(port);
  o.node_name = "node-a";
  o.http_address = "127.0.0.1:1";
  o.inventory.cpu_cores = 4;
  o.inventory.memory_bytes = int64_t{8} << 30;
  o.core = core->get();
  o.max_backoff_ms = 100;
  auto client = ControlClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();

  ASSERT_TRUE(Eventually([&] { return plane->controller().ListNodes().nodes_size() == 1; }));
  cp::v1::ApplyRequest apply;
  apply.add_files()->set_path("/m/echo.yaml");
  apply.mutable_files(0)->set_content(kEcho);
  ASSERT_TRUE(plane->controller().Apply(apply).ok());

  // Ready route, function loaded and serving, profile measured.
  ASSERT_TRUE(Eventually([&] {
    auto r = plane->controller().GetRoutes("echo");
    return r.routes_size() == 1 && r.routes(0).ready();
  }));
  EXPECT_EQ((*core)->LoadedFunctions(), std::vector<std::string>{"echo"});
  EXPECT_TRUE(Echo(**core).ok());
  ASSERT_TRUE(Eventually([&] {
    auto st = plane->controller().GetFunction("echo");
    return st.ok() && st->profiles_size() == 1 && st->profiles(0).measured();
  }));
  const auto profile = plane->controller().GetFunction("echo")->profiles(0);
  EXPECT_EQ(profile.hardware_kind(), "cpu");
  EXPECT_EQ(profile.points_size(), 4);  // 1, 2, 4, 8
  const std::string replica = plane->controller().GetRoutes("echo").routes(0).replica_id();
  // Heartbeats carry the agent's load.
  ASSERT_TRUE(Eventually(
      [&] { return plane->controller().ListNodes().nodes(0).load().memory_used_bytes() > 0; }));

  // The control plane goes away: the agent keeps serving.
  plane.reset();
  EXPECT_TRUE(Echo(**core).ok());
  EXPECT_EQ((*core)->LoadedFunctions(), std::vector<std::string>{"echo"});

  // Back on the same port and state: the agent re-registers and its replica is adopted.
  plane = std::make_unique<ControlPlane>(dir, port);
  ASSERT_EQ(plane->port(), port);
  ASSERT_TRUE(Eventually([&] {
    auto r = plane->controller().GetRoutes("echo");
    return r.routes_size() == 1 && r.routes(0).ready();
  }));
  EXPECT_EQ(plane->controller().GetRoutes("echo").routes(0).replica_id(), replica);

  // Delete: the agent unloads it; a client that still calls this node directly is told the
  // function is no longer served here (503), not that it never existed (404).
  ASSERT_TRUE(plane->controller().DeleteFunction("echo").ok());
  ASSERT_TRUE(Eventually([&] { return (*core)->LoadedFunctions().empty(); }));
  EXPECT_EQ(Echo(**core).status().code(), absl::StatusCode::kUnavailable);
  (*client)->Stop();
}

TEST(InventoryTest, FakeGpuNeedsTestOnlyEnvironment) {
  unsetenv("FERRY_TESTONLY");
  auto refused = DiscoverInventory("H200:141GiB:9.0");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  setenv("FERRY_TESTONLY", "1", 1);
  auto inv = DiscoverInventory("H200:141GiB:9.0,L4:24GiB:8.9");
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_EQ(inv->gpus.size(), 2u);
  EXPECT_EQ(inv->gpus[0].name, "H200");
  EXPECT_EQ(inv->gpus[0].memory_bytes, int64_t{141} << 30);
  EXPECT_EQ(inv->gpus[0].cc_major, 9);
  EXPECT_EQ(inv->gpus[1].cc_minor, 9);
  EXPECT_TRUE(inv->gpus[1].fake);
  EXPECT_GE(inv->cpu_cores, 1);
  EXPECT_GT(inv->memory_bytes, 0);
  EXPECT_FALSE(ParseFakeGpus("H200:141:9.0").ok());
  EXPECT_FALSE(ParseFakeGpus("H200:141GiB").ok());
  unsetenv("FERRY_TESTONLY");
}

}  // namespace
}  // namespace ferry::agent
